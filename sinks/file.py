"""The ``file`` sink: JSON lines appended to a file, exactly once across crashes.

Each line is one record of the sink's format (``BRIDGE_FILE__FORMAT``, docs/formats.md).

The file is its own checkpoint: on open, the last complete line is read back (from the end,
so opening costs the same whatever the file's size) and is the durable position. A line is
complete when its newline is there; a crash in the middle of a write leaves a torn last line,
which open() cuts off (it was never acknowledged, and the pump rewrites it), so nothing is
duplicated and nothing half-written is ever followed by more data.

One file, one writer: while open, the sink holds an exclusive ``flock`` on ``<file>.lock``
beside it, which names the holder (``bridge.ownership``). A second bridge is refused with a
line naming the first, instead of interleaving its lines; the kernel drops the lock with the
process, so a restart after ``kill -9`` never waits. With HA an instance of the same pipeline
takes over from a paused former leader that still holds it (the election fences that one).

The file can change under the sink: a full disk fails a write part-way (the torn line is cut
by the next open, which the pump makes after ``SinkUnavailableError``), and an operator may
truncate, delete or replace it. Before each write the sink checks that the path still is the
file it opened and has the size it left it at; if not, it reports the sink unavailable, and the
reopen reads what is left, which the pump finds behind what it flushed (a snapshot, reason
``lost``, follows).

``FileSink.reader`` reads the complete lines back (``FileReader``), for ``etcd-bridge verify``
and consumers, without opening the file for writing: safe beside a running bridge.
"""

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Position
from bridge.formats import EventFormat
from bridge.lines import last_complete_line
from bridge.ownership import Owner, lock_file
from bridge.reader import StreamReader
from bridge.sink import NATIVE, Sink, SinkContext
from config.output import FormatName

log = logging.getLogger(__name__)

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
        self,
        *,
        path: Path,
        fsync: bool = True,
        record_format: EventFormat = NATIVE,
        owner: Owner | None = None,
        ha: bool = False,
    ) -> None:
        """``owner``: who this instance is, written in the lock file (default: this process
        of an unnamed pipeline); ``ha``: see ``bridge.ownership``."""
        self.path = path
        self._fsync = fsync
        self._format = record_format
        self._owner = owner or Owner.this_process("")
        self._ha = ha
        self._descriptor: int | None = None
        self._lock: int | None = None
        self._written_to: tuple[int, int] = (0, 0)
        """The inode and size the file has after the sink's last write."""

    @classmethod
    def from_settings(cls, settings: FileSettings, *, context: SinkContext) -> Self:
        return cls(
            path=settings.path,
            fsync=settings.fsync,
            record_format=context.format,
            owner=Owner.this_process(context.pipeline),
            ha=context.ha,
        )

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def open(self) -> Event | None:
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = self._claim()
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._descriptor = descriptor
            tail = last_complete_line(descriptor, cut=True)
            status = os.fstat(descriptor)
        except OSError as error:
            self.close()
            raise SinkUnavailableError(
                f"file: cannot open {self.path}: {error.strerror}"
            ) from error
        except SinkRejectedError:
            self.close()
            raise
        self._written_to = (status.st_ino, status.st_size)
        return self._decode_tail(tail)

    def _claim(self) -> int | None:
        """Lock ``<file>.lock`` and write this owner in it; SinkRejectedError naming the
        holder if another bridge has it (None: taking over under HA, without the lock)."""
        descriptor, holder = lock_file(self.lock_path, self._owner)
        if descriptor is None:
            if self._owner.may_take_over_from(holder, ha=self._ha):
                log.warning(
                    "file: taking over from a former leader that still holds the lock",
                    extra={"path": str(self.path), "holder": str(holder)},
                )
                return None
            raise SinkRejectedError(
                f"file: {self.path} is being written by another bridge "
                f"({holder or 'unknown: see ' + str(self.lock_path)}); one file takes one "
                "writer: stop that one, or set BRIDGE_FILE__PATH to another file (instances "
                "of one pipeline share a file only with BRIDGE_HA__ENABLED)"
            )
        return descriptor

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
            return self._decode_tail(last_complete_line(descriptor, cut=False))
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
            self._check_unchanged(descriptor)
            while payload:
                written = os.write(descriptor, payload)
                payload = payload[written:]
                inode, size = self._written_to
                self._written_to = (inode, size + written)
        except OSError as error:
            raise SinkUnavailableError(
                f"file: writing {self.path} failed: {error.strerror}"
            ) from error

    def _check_unchanged(self, descriptor: int) -> None:
        """SinkUnavailableError if the path no longer is the file as the sink left it: the
        reopen then finds what is left of it (or a new file)."""
        inode, size = self._written_to
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != inode:
            raise SinkUnavailableError(f"file: {self.path} was removed or replaced while open")
        found = os.fstat(descriptor).st_size
        if found != size:
            raise SinkUnavailableError(
                f"file: {self.path} changed size while open ({size} bytes written, {found} "
                "found): truncated, or written by something else"
            )

    def flush(self) -> None:
        if self._fsync:
            try:
                os.fsync(self._require_open())
            except OSError as error:
                raise SinkUnavailableError(
                    f"file: fsync of {self.path} failed: {error.strerror}"
                ) from error

    def close(self) -> None:
        """Close the file, then release the lock (closing its descriptor unlocks it)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

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
