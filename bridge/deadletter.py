"""The dead-letter file: where a pipeline puts the events its sink refused for good
(``BRIDGE_<NAME>__ON_REFUSED=dead_letter``), each exactly once.

JSON lines of native events (docs/events.md) with their values whole, as etcd sent them,
appended and fsynced one at a time: refusals are rare, and each must be durable before the
pipeline moves past it. The last complete line is the file's tail, read back on every open
after cutting a torn last line (a crash in the middle of an append); the pump never diverts an
event at or below it, which makes the file exactly once across ``kill -9``
(``bridge.refusal``). Its own lines are the whole state: nothing else records what was diverted.

The tail is read backwards from the end, in blocks, since a refused event is typically a
large one and the file may hold many.
"""

import os
from pathlib import Path

from bridge.closing import Closing
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event
from bridge.lines import last_complete_line


class DeadLetterFile(Closing):
    """One sink's dead-letter file; ``setting`` names the variable that chose ``path``."""

    def __init__(self, path: Path, *, setting: str) -> None:
        self.path = path
        self._setting = setting
        self._descriptor: int | None = None

    def open(self) -> Event | None:
        """(Re)open the file, creating it, and return the last event it holds, or None;
        a torn last line is cut first. SinkUnavailableError if the file system fails us,
        SinkRejectedError if the last line is not a native event (another file)."""
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            descriptor = self._descriptor = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644
            )
            if created:  # the new name must survive a power loss, as its lines will
                _fsync_directory(self.path.parent)
        except OSError as error:
            raise SinkUnavailableError(
                f"dead-letter file {self.path}: cannot open it: {error.strerror}"
            ) from error
        try:
            line = last_complete_line(descriptor, cut=True)
            os.fsync(descriptor)  # a cut torn line stays cut
        except OSError as error:
            raise SinkUnavailableError(
                f"dead-letter file {self.path}: cannot read its tail: {error.strerror}"
            ) from error
        if line is None:
            return None
        try:
            return Event.from_json(line)
        except (ValueError, KeyError, TypeError) as error:
            raise SinkRejectedError(
                f"dead-letter file {self.path}: the last line is not an etcd-bridge event "
                f"({error}); point {self._setting} at a file of this sink's own"
            ) from error

    def append(self, event: Event) -> None:
        """Append ``event`` as one line and fsync: durable when this returns."""
        descriptor = self._descriptor
        if descriptor is None:
            raise SinkUnavailableError(f"dead-letter file {self.path} is not open")
        payload = memoryview(event.to_json() + b"\n")
        try:
            while payload:
                payload = payload[os.write(descriptor, payload) :]
            os.fsync(descriptor)
        except OSError as error:
            # A part written stays as a torn line, which the next open cuts.
            raise SinkUnavailableError(
                f"dead-letter file {self.path}: appending failed: {error.strerror}"
            ) from error

    def close(self) -> None:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
