"""The file sink's destination: a JSON-lines file of its own, no server.

Read back line by line (a torn last line or an unreadable one is a flaw); its tail is the
last complete line (``tests.fixtures.bridge.last_event``). A benchmark counts its complete
lines, or follows them by polling every ``POLL_SECONDS``: the resolution of its latency.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from bridge.events import Event
from tests.fixtures.bridge import last_event
from tests.sinks.base import (
    Destination,
    Flaw,
    Progress,
    RawRecord,
    Seen,
    SinkServer,
    seen_in,
)

POLL_SECONDS = 0.0002


@dataclass
class FileDestination(Destination):
    name = "file"

    path: str

    @classmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        return cls(path=str(directory / f"{tag}.jsonl"))

    def settings(self) -> dict[str, Any]:
        return {"path": self.path}

    def records(self, *, pipeline: str) -> dict[str, list[RawRecord]]:
        path = Path(self.path)
        content = path.read_bytes() if path.exists() else b""
        assert not content or content.endswith(b"\n"), "the file ends with a torn line"
        return {"file": [RawRecord(line) for line in content.splitlines()]}

    def streams(self, *, pipeline: str, flaw: Flaw) -> dict[str, list[Event]]:
        path = Path(self.path)
        content = path.read_bytes() if path.exists() else b""
        if content and not content.endswith(b"\n"):
            flaw("the file ends with a torn line")
        events = []
        for line in content.splitlines():
            try:
                events.append(Event.from_json(line))
            except (ValueError, KeyError) as error:
                flaw(f"unreadable line {line[:80]!r}: {error}")
        return {"file": events}

    def tail(self, *, pipeline: str, prefix: bytes) -> Event | None:
        return last_event(Path(self.path))

    def reader(self) -> "FileReader":
        return FileReader(Path(self.path))


class FileReader:
    """The file's complete lines: counted, or followed by polling every ``POLL_SECONDS``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None
        self._partial = b""
        self._progress = Progress()

    def _complete_lines(self) -> bytes:
        if self._descriptor is None:
            try:
                self._descriptor = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return b""
        pieces = [self._partial]
        while piece := os.read(self._descriptor, 16 << 20):
            pieces.append(piece)
        data = b"".join(pieces)
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return data[:end]

    def progress(self) -> Progress:
        data = self._complete_lines()
        if data:
            self._progress.records += data.count(b"\n")
            start = data.rfind(b"\n", 0, len(data) - 1) + 1
            self._progress.last_revision, self._progress.last_op = seen_in(data[start:])
        return Progress(**vars(self._progress))

    def follow(self, *, timeout: float) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while True:
            data = self._complete_lines()
            if data:
                return [seen_in(line) for line in data.splitlines()]
            if time.monotonic() >= deadline:
                return []
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
