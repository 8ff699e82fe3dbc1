"""The Redis sink's destination: a stream of its own (stream mode) on a redis-server.

Read back with XRANGE, 5,000 entries a call; an entry whose id is not the position of the
event it holds, or whose ``key`` field is not its key, is a flaw. Its tail is the last entry
(XREVRANGE). A benchmark counts it with XLEN and its last entry, or follows it with XREAD
BLOCK.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import redis

from bridge.events import Event
from tests.fixtures.redis import RedisServer
from tests.sinks.base import Destination, Flaw, Progress, RawRecord, Seen, SinkServer

PAGE = 5000


@dataclass
class RedisDestination(Destination):
    name = "redis"
    restartable = True
    impatient = {"timeout": "3"}

    url: str
    stream: str

    @classmethod
    def server(cls, workdir: Path, *, persistent: bool) -> RedisServer:
        return RedisServer(workdir=workdir, persistent=persistent)

    @classmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        assert isinstance(server, RedisServer)
        return cls(url=server.url, stream=f"{tag}:events")

    def settings(self) -> dict[str, Any]:
        return {"url": self.url, "stream": self.stream}

    def client(self, *, timeout: float = 10) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=timeout)

    def entries(self) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        """Every entry of the stream: (id, fields), read with XRANGE a page at a time."""
        with self.client() as client:
            start = "-"
            while True:
                entries = client.xrange(self.stream, min=start, max="+", count=PAGE)
                yield from entries
                if len(entries) < PAGE:
                    break
                start = "(" + entries[-1][0].decode()

    def records(self, *, pipeline: str) -> dict[str, list[RawRecord]]:
        return {
            "redis": [
                RawRecord(fields[b"event"], key=fields[b"key"], headers={"id": entry_id})
                for entry_id, fields in self.entries()
            ]
        }

    def streams(self, *, pipeline: str, flaw: Flaw) -> dict[str, list[Event]]:
        events = []
        for entry_id, fields in self.entries():
            event = Event.from_json(fields[b"event"])
            if entry_id.decode() != str(event.position) or fields[b"key"] != event.key:
                flaw(f"entry {entry_id!r} holds {event.position} {event.key!r}")
            events.append(event)
        return {"redis": events}

    def tail(self, *, pipeline: str, prefix: bytes) -> Event | None:
        with self.client() as client:
            entries = client.xrevrange(self.stream, count=1)
        return Event.from_json(entries[0][1][b"event"]) if entries else None

    def reader(self) -> "RedisReader":
        return RedisReader(self.client(timeout=60), stream=self.stream)


class RedisReader:
    """The stream: XLEN and its last entry, or followed with XREAD BLOCK."""

    def __init__(self, client: redis.Redis, *, stream: str) -> None:
        self._client = client
        self._stream = stream.encode()
        self._last_id: bytes = b"0-0"

    def progress(self) -> Progress:
        records = int(self._client.xlen(self._stream))
        if not records:
            return Progress()
        [(entry_id, fields)] = self._client.xrevrange(self._stream, count=1)
        revision = int(entry_id.split(b"-", 1)[0])
        return Progress(records=records, last_revision=revision, last_op=fields[b"op"].decode())

    def follow(self, *, timeout: float) -> list[Seen]:
        block = max(1, round(timeout * 1000))
        reply = self._client.xread({self._stream: self._last_id}, count=20_000, block=block)
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        seen: list[Seen] = []
        for _name, entries in streams:
            for entry_id, fields in entries:
                seen.append((int(entry_id.split(b"-", 1)[0]), fields[b"op"].decode()))
                self._last_id = entry_id
        return seen

    def close(self) -> None:
        self._client.close()
