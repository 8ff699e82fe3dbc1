"""The ``file`` sink: JSON lines appended to a file, exactly once across crashes.

Each line is one record of the sink's format (``BRIDGE_FILE__FORMAT``, docs/formats.md).

The file is its own checkpoint: on open, the last complete line is read back (from the end,
so opening costs the same whatever the file's size) and is the durable position. A line is
complete when its newline is there; a crash in the middle of a write leaves a torn last line,
which open() cuts off (it was never acknowledged, and the pump rewrites it), so nothing is
duplicated and nothing half-written is ever followed by more data.

``FileSink.reader`` reads the complete lines back (``FileReader``), for ``etcd-bridge verify``
and consumers, without opening the file for writing: safe beside a running bridge.
"""

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Position
from bridge.formats import EventFormat
from bridge.reader import StreamReader
from bridge.sink import NATIVE, Sink, SinkContext
from config.output import FormatName

_READ_BACK_CHUNK = 64 * 1024
_READ_CHUNK = 1024 * 1024
"""Bytes read at a time by ``FileReader``: memory stays at this plus the longest line."""


class FileSettings(BaseModel):
    """Where the file sink appends its JSON lines, and how durably (``BRIDGE_FILE__*``)."""

    path: Path = Field(description="File the events are appended to.")
    fsync: bool = Field(
        default=True,
        description="fsync after every batch, so a power loss (not only a crash) keeps the "
        "position; turn off only for throwaway output.",
    )


class FileSink(Sink):
    """Append-only JSON lines whose last complete line is the durable position."""

    name = "file"
    settings_model = FileSettings
    formats = frozenset(FormatName)

    def __init__(
        self, *, path: Path, fsync: bool = True, record_format: EventFormat = NATIVE
    ) -> None:
        self.path = path
        self._fsync = fsync
        self._format = record_format
        self._descriptor: int | None = None

    @classmethod
    def from_settings(cls, settings: FileSettings, *, context: SinkContext) -> Self:
        return cls(path=settings.path, fsync=settings.fsync, record_format=context.format)

    def open(self) -> Event | None:
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            raise SinkUnavailableError(
                f"file: cannot open {self.path}: {error.strerror}"
            ) from error
        self._descriptor = descriptor
        return self._decode_tail(_last_complete_line(descriptor, cut=True))

    @classmethod
    def reader(cls, settings: FileSettings, *, context: SinkContext) -> "FileReader":
        return FileReader(path=settings.path, record_format=context.format)

    def peek(self) -> Event | None:
        """The last complete line, leaving a torn one for the running bridge to finish."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SinkUnavailableError(
                f"file: cannot read {self.path}: {error.strerror}"
            ) from error
        try:
            return self._decode_tail(_last_complete_line(descriptor, cut=False))
        finally:
            os.close(descriptor)

    def _decode_tail(self, last_line: bytes | None) -> Event | None:
        if last_line is None:
            return None
        return _decode(self._format, last_line, path=self.path, line_number=None)

    def write(self, batch: Sequence[Event]) -> None:
        descriptor = self._require_open()
        payload = memoryview(self._format.encode_lines(batch))
        try:
            while payload:
                written = os.write(descriptor, payload)
                payload = payload[written:]
        except OSError as error:
            raise SinkUnavailableError(
                f"file: writing {self.path} failed: {error.strerror}"
            ) from error

    def flush(self) -> None:
        if self._fsync:
            try:
                os.fsync(self._require_open())
            except OSError as error:
                raise SinkUnavailableError(
                    f"file: fsync of {self.path} failed: {error.strerror}"
                ) from error

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def _require_open(self) -> int:
        if self._descriptor is None:
            raise SinkUnavailableError(f"file: {self.path} is not open")
        return self._descriptor


class FileReader(StreamReader):
    """The events on the file's complete lines, decoded with the sink's format.

    Each call of ``events`` reads up to the size the file has when it starts, in chunks of
    ``_READ_CHUNK`` bytes, so a running bridge appending meanwhile neither stalls the read nor
    hands it a line being written: a torn last line has no newline yet and is left out."""

    def __init__(self, *, path: Path, record_format: EventFormat = NATIVE) -> None:
        self.path = path
        self._format = record_format

    def events(self, *, after: Position | None = None) -> Iterator[Event]:
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as error:
            raise SinkUnavailableError(
                f"file: cannot read {self.path}: {error.strerror}"
            ) from error
        try:
            yield from self._events(descriptor, after=after)
        finally:
            os.close(descriptor)

    def _events(self, descriptor: int, *, after: Position | None) -> Iterator[Event]:
        decode, path = functools.partial(_decode, self._format), self.path
        size = os.fstat(descriptor).st_size
        offset, line_number, pending = 0, 0, b""
        while offset < size:
            chunk = os.pread(descriptor, min(_READ_CHUNK, size - offset), offset)
            if not chunk:  # the file shrank under us (truncated): read what there was
                break
            offset += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()  # after the last newline: a line not complete yet
            for line in lines:
                line_number += 1
                event = decode(line, path=path, line_number=line_number)
                if after is None or event.position > after:
                    yield event


def _decode(
    record_format: EventFormat, line: bytes, *, path: Path, line_number: int | None
) -> Event:
    """One line as an event; SinkRejectedError naming the line (None: the last one) and the
    setting if it is not a record of the format."""
    try:
        return record_format.decode(line)
    except (ValueError, KeyError, TypeError) as error:
        where = "the last line" if line_number is None else f"line {line_number}"
        raise SinkRejectedError(
            f"file: {where} of {path} is not an etcd-bridge "
            f"{record_format.name.value} record ({error}); point BRIDGE_FILE__PATH at a "
            "file of this pipeline, or set BRIDGE_FILE__FORMAT to the format it holds"
        ) from error


def _last_complete_line(descriptor: int, *, cut: bool) -> bytes | None:
    """The last complete line, if any; with ``cut``, truncate anything after it first."""
    size = os.fstat(descriptor).st_size
    complete_end = _past_last_newline(descriptor, before=size)
    if cut and complete_end != size:
        os.ftruncate(descriptor, complete_end)
    if complete_end == 0:
        return None
    line_start = _past_last_newline(descriptor, before=complete_end - 1)
    return os.pread(descriptor, complete_end - 1 - line_start, line_start)


def _past_last_newline(descriptor: int, *, before: int) -> int:
    """The offset just past the last newline in ``[0, before)``, or 0 when there is none."""
    end = before
    while end > 0:
        start = max(0, end - _READ_BACK_CHUNK)
        found = os.pread(descriptor, end - start, start).rfind(b"\n")
        if found != -1:
            return start + found + 1
        end = start
    return 0
