"""Our own contracts played in memory, so that the pump and the source run in unit tests.

These stand in for our interfaces, not for a server: ``MemorySink`` is a ``bridge.sink.Sink``
that keeps what it was written apart from what is durable, as a real sink does, and fails the
flushes it is told to; ``HistorySource`` is a ``bridge.source.ChangeSourceFactory`` that plays
a fixed history from a sink's tail on, re-sending the chunk that holds the tail as the real
source re-reads the start of a revision (so the pump's duplicate filter is at work), and fails
where it is told to; ``ScriptedEtcd`` is the ``bridge.source.EtcdClient`` of a ``ChangeSource``:
a key-value table read in pages at one revision, and scripted watch sessions. Each records
what it was asked, for the tests to check.
"""

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Self

from pyetcd.etcdrpc.kv_pb2 import KeyValue

from bridge.errors import BridgeError, RevisionCompactedError, SinkRejectedError
from bridge.etcd import Chunk, RangePage
from bridge.events import Event, EventType, Op, SnapshotReason
from bridge.health import Phase, PipelineHealth
from bridge.sink import Sink, SinkContext
from bridge.source import ChunkStream
from config.keyspace import KeySpace


def change(revision: int, index: int = 0, *, more: bool = False, value: bytes = b"v") -> Event:
    """A watched update of ``/p/<revision>-<index>``."""
    key = f"/p/{revision}-{index}".encode()
    return Event(revision, index, EventType.PUT, Op.UPDATE, key, value, more=more)


def history(revisions: range, *, per_revision: int = 1, value: bytes = b"v") -> list[Chunk]:
    """One chunk per revision, of ``per_revision`` changes (``more`` on all but the last)."""
    chunks = []
    for revision in revisions:
        events = [
            change(revision, index, more=index < per_revision - 1, value=value)
            for index in range(per_revision)
        ]
        size = sum(len(event.key) + len(value) for event in events)
        chunks.append(Chunk(events=events, revision=revision, size=size))
    return chunks


def events_of(chunks: Sequence[Chunk]) -> list[Event]:
    return [event for chunk in chunks for event in chunk.events]


@dataclass
class PhaseLog(PipelineHealth):
    """A pipeline's health that remembers every phase it entered, in order."""

    phases: list[Phase] = field(default_factory=list)

    def enter(self, phase: Phase) -> None:
        self.phases.append(phase)
        super().enter(phase)


@dataclass(frozen=True)
class FlushFailure:
    """Fail a flush with ``error``, having made the first ``durable`` pending events durable."""

    error: BridgeError
    durable: int = 0


class MemorySink(Sink):
    """A sink in memory: ``received`` is every event written (across reopenings), ``durable``
    what flushes made durable, which ``open`` reports the last of.

    ``write`` checks the contract the pump owes every sink (positions strictly increase and
    are past the durable tail) and fails the pipeline with an AssertionError if it is broken.
    It refuses for good, naming its position, the first event ``refuse`` picks, having
    made the events before it durable (as a sink that publishes one by one does) with
    ``keep_before_refused``, else dropped with the batch (as a sink that writes batches whole).
    """

    name = "memory"

    def __init__(
        self,
        *,
        failures: dict[int, FlushFailure] | None = None,
        on_write: Callable[[Sequence[Event]], None] | None = None,
        refuse: Callable[[Event], bool] = lambda event: False,
        keep_before_refused: bool = False,
    ) -> None:
        """``failures``: by flush number (from 1); ``on_write``: called after each write is
        recorded, in the pipeline's thread (it may block, drop leadership, set stop)."""
        self.refused: list[Event] = []
        """Every event refused, in order."""
        self._refuse = refuse
        self._keep_before_refused = keep_before_refused
        self.received: list[Event] = []
        self.durable: list[Event] = []
        self.pending: list[Event] = []
        self.batches: list[int] = []
        """The size of every batch written."""
        self.opened = 0
        self.flushes = 0
        self._failures = failures or {}
        self._on_write = on_write

    @classmethod
    def from_settings(cls, settings: object, *, context: SinkContext) -> Self:
        return cls()

    def open(self) -> Event | None:
        self.opened += 1
        self.pending.clear()
        return self.durable[-1] if self.durable else None

    def write(self, batch: Sequence[Event]) -> None:
        held = self.pending or self.durable
        positions = [event.position for event in [*held[-1:], *batch]]
        assert positions == sorted(set(positions)), f"out of order or twice: {positions}"
        refused = next((n for n, event in enumerate(batch) if self._refuse(event)), None)
        if refused is not None:
            self._refuse_at(batch, refused)
        self.received.extend(batch)
        self.batches.append(len(batch))
        self.pending.extend(batch)
        if self._on_write is not None:
            self._on_write(batch)

    def _refuse_at(self, batch: Sequence[Event], number: int) -> None:
        event = batch[number]
        self.refused.append(event)
        if self._keep_before_refused:
            self.durable.extend([*self.pending, *batch[:number]])
        self.pending.clear()
        raise SinkRejectedError(
            f"memory: refused {event.key!r} at {event.position}",
            key=event.key,
            revision=event.revision,
            position=event.position,
        )

    def flush(self) -> None:
        self.flushes += 1
        failure = self._failures.get(self.flushes)
        kept = self.pending if failure is None else self.pending[: failure.durable]
        self.durable.extend(kept)
        self.pending.clear()
        if failure is not None:
            raise failure.error

    def close(self) -> None:
        self.pending.clear()  # what was written but not flushed is lost, as with a crash


class HistorySource:
    """A change source factory playing ``chunks`` from each opening's tail on; after the last
    chunk it waits, like a quiet watch, until closed.

    ``failures`` maps the number of a chunk request (from 1, counted across openings) to the
    error raised instead of handing that chunk out.
    """

    def __init__(
        self,
        chunks: list[Chunk],
        *,
        failures: dict[int, BaseException] | None = None,
        enters: Phase | None = None,
    ):
        """``enters``: the phase each opening enters, as a watch enters ``watching``."""
        self.chunks = chunks
        self._enters = enters
        self.tails: list[Event | None] = []
        self.resyncs: list[SnapshotReason | None] = []
        """The ``resync`` of each opening (the history is played from the tail regardless)."""
        self.asked = 0
        self.handed = 0
        self._failures = failures or {}

    def __call__(
        self,
        tail: Event | None,
        *,
        stop: threading.Event,
        health: PipelineHealth,
        resync: SnapshotReason | None = None,
    ) -> ChunkStream:
        self.tails.append(tail)
        self.resyncs.append(resync)
        if self._enters is not None:
            health.enter(self._enters)
        after = [chunk.events[-1].position > tail.position for chunk in self.chunks] if tail else []
        start = after.index(True) if True in after else len(after)
        return _Playback(chunks=self._play(start, stop), stop=stop)

    def _play(self, start: int, stop: threading.Event) -> Iterator[Chunk]:
        for chunk in self.chunks[start:]:
            self.asked += 1
            failure = self._failures.get(self.asked)
            if failure is not None:
                raise failure
            self.handed += 1
            yield chunk
        stop.wait()


@dataclass
class _Playback:
    chunks: Iterator[Chunk]
    stop: threading.Event

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks

    def close(self) -> None:
        self.stop.set()


Session = Sequence[Chunk | BridgeError]
"""One scripted watch stream: its chunks, and maybe the error that ends it (else it ends, as
a fragmented watch does once its large response is in)."""


class ScriptedEtcd:
    """The etcd a ``ChangeSource`` talks to: ``keys`` at ``revision`` (history before
    ``compacted`` is gone), ``connects`` outcomes in order (then ``revision``), and one
    scripted ``Session`` per watch opened."""

    def __init__(
        self,
        *,
        revision: int,
        keys: Sequence[bytes] = (),
        compacted: int = 0,
        connects: Sequence[int | BridgeError] = (),
        sessions: Sequence[Session] = (),
    ) -> None:
        self.revision = revision
        self.compacted = compacted
        self._keys = sorted(keys)
        self._connects = list(connects)
        self._sessions = list(sessions)
        self.endpoints = ["http://etcd-a:2379", "http://etcd-b:2379"]
        self.endpoint = self.endpoints[0]
        self.connected = 0
        self.failovers = 0
        self.ranges: list[tuple[bytes, int, int]] = []
        """(start, revision, limit) of every page asked for."""
        self.watches: list[tuple[int, bool]] = []
        """(start_revision, fragment) of every watch opened."""
        self.counts: list[tuple[bytes, int]] = []
        """(start, revision) of every count asked for."""

    def connect(self) -> int:
        self.connected += 1
        outcome = self._connects.pop(0) if self._connects else self.revision
        if isinstance(outcome, BridgeError):
            raise outcome
        return outcome

    def failover(self) -> None:
        self.failovers += 1
        self.endpoint = self.endpoints[self.failovers % len(self.endpoints)]

    def close(self) -> None:
        """Nothing to release."""

    def range_page(
        self, *, start: bytes, end: bytes, revision: int, limit: int
    ) -> Callable[[], RangePage]:
        self.ranges.append((start, revision, limit))

        def page() -> RangePage:
            if 0 < revision < self.compacted:
                raise RevisionCompactedError(requested=revision, compacted=self.compacted)
            pinned = revision or self.revision
            keys = [key for key in self._keys if start <= key < end]
            kvs = [
                KeyValue(key=key, value=b"value", mod_revision=pinned, version=1)
                for key in keys[:limit]
            ]
            return RangePage(kvs=kvs, revision=pinned, more=len(keys) > limit)

        return page

    def count_keys(self, *, start: bytes, end: bytes, revision: int) -> tuple[int, int]:
        self.counts.append((start, revision))
        if 0 < revision < self.compacted:
            raise RevisionCompactedError(requested=revision, compacted=self.compacted)
        return sum(start <= key < end for key in self._keys), self.revision

    def watch(self, keyspace: KeySpace, *, start_revision: int, fragment: bool) -> ChunkStream:
        self.watches.append((start_revision, fragment))
        assert self._sessions, f"no watch session scripted for {start_revision}"
        return _Watch(self._sessions.pop(0))


@dataclass
class _Watch:
    session: Session

    def __iter__(self) -> Iterator[Chunk]:
        for item in self.session:
            if isinstance(item, BridgeError):
                raise item
            yield item

    def close(self) -> None:
        """Nothing to cancel: the script is played in the reader's own thread."""
