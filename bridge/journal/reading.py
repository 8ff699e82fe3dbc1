"""One sink's reading of the log: its chunks from where the sink stands, then new ones as
the log's reader appends them, like a watch that never has to ask etcd again.

The reader keeps its segment file open and reads frames in order; a frame among the latest
ones is taken decoded from memory (``Journal.recent``), so sinks that keep up share one
decoding of each event. At the end of the log it waits for the next frame, and passes on
etcd's progress answers (a chunk with ``synced``) so that an idle prefix shows no lag.

The sink's health follows what it reads, as if it watched etcd itself: ``snapshot`` while
it reads a snapshot, ``watching`` after, ``etcd_down`` while the log's reader cannot reach
etcd, and its heartbeat and etcd timestamps are the log reader's, so liveness still means
"hears from etcd".
"""

import dataclasses
import threading
from collections.abc import Iterator
from typing import BinaryIO

from bridge import metrics
from bridge.etcd import Chunk
from bridge.events import Event, Op, SnapshotReason, past
from bridge.health import Phase, PipelineHealth
from bridge.journal.segments import SEGMENT_HEADER_BYTES, Journal, Start, read_frame

_WAIT_SECONDS = 0.2
_IN_SNAPSHOT = frozenset({Op.SNAPSHOT_BEGIN, Op.SNAPSHOT})


class JournalReader:
    """The log's chunks from ``start`` on, until closed: a ``bridge.source.ChunkStream``."""

    def __init__(
        self, journal: Journal, start: Start, *, health: PipelineHealth, recorder: PipelineHealth
    ) -> None:
        """``recorder``: the health of the log's own reader, whose phase and heartbeat this
        sink's health follows (see the module docstring)."""
        self._journal = journal
        self._start = start
        self._health = health
        self._recorder = recorder
        self._closed = threading.Event()
        self._file: BinaryIO | None = None
        self._file_base = 0
        self._file_end = 0
        self._file_offset = -1
        self._in_snapshot = False
        self._phase: Phase | None = None
        """The phase this reading last entered."""
        self._behind = metrics.JOURNAL_BEHIND_BYTES.labels(health.sink)

    def close(self) -> None:
        """End the iteration within a moment, from any thread."""
        self._closed.set()

    def __iter__(self) -> Iterator[Chunk]:
        journal, start = self._journal, self._start
        offset, after = start.offset, start.after
        initial = start.initial
        synced_seen = 0
        try:
            while not self._closed.is_set():
                end, synced = journal.progress()
                self._behind.set(max(0, end - offset))
                if offset < end:
                    chunk, offset = self._frame(offset)
                    events = past(chunk.events, after)
                    if not events:
                        continue
                    after = events[-1].position
                    if initial:
                        events, initial = _as_initial(events)
                    self._follow(events[-1])
                    yield Chunk(events, chunk.revision, _share(chunk, len(events)))
                    continue
                if synced > synced_seen:
                    synced_seen = synced
                    yield Chunk([], synced, synced=True)
                self._follow(None)
                journal.wait(
                    offset,
                    generation=start.generation,
                    synced=synced_seen,
                    timeout=_WAIT_SECONDS,
                )
        finally:
            if self._file is not None:
                self._file.close()

    def _frame(self, offset: int) -> tuple[Chunk, int]:
        """The chunk of the frame at ``offset`` and the next frame's offset."""
        recent = self._journal.recent(offset)
        if recent is not None:
            return recent
        if self._file is None or not self._file_base <= offset < self._file_end:
            path, base, end = self._journal.segment_at(offset, generation=self._start.generation)
            if self._file is None or base != self._file_base:
                if self._file is not None:
                    self._file.close()
                self._file = open(path, "rb", buffering=1024 * 1024)  # noqa: SIM115 - kept open
                self._file_offset = -1
            self._file_base, self._file_end = base, end
        else:
            self._journal.segment_at(offset, generation=self._start.generation)  # not trimmed
        if self._file_offset != offset:
            self._file.seek(SEGMENT_HEADER_BYTES + offset - self._file_base)
        chunk, size = read_frame(self._file)
        self._file_offset = offset + size
        return chunk, offset + size

    def _follow(self, last: Event | None) -> None:
        """The sink's phase, heartbeat and etcd timestamps after reading up to ``last`` (None:
        it is at the end of the log, as far as the log's reader: in its phase, or inside the
        snapshot it read the start of). The phase is entered when it changes only, as a
        watch enters it once: the pump's own (``sink_down``) stands meanwhile."""
        health, recorder = self._health, self._recorder
        stats, heard = health.stats, recorder.stats
        stats.etcd_heard_at = heard.etcd_heard_at
        stats.etcd_endpoint = heard.etcd_endpoint
        if last is not None:
            stats.last_event_at = heard.last_event_at
            self._in_snapshot = last.op in _IN_SNAPSHOT
            phase = Phase.SNAPSHOT if self._in_snapshot else Phase.WATCHING
        else:
            health.heartbeat = max(health.heartbeat, recorder.heartbeat)
            if recorder.phase is Phase.ETCD_DOWN:
                phase = Phase.ETCD_DOWN
            elif self._in_snapshot or recorder.phase is Phase.SNAPSHOT:
                phase = Phase.SNAPSHOT
            else:
                phase = Phase.WATCHING
        if phase is not self._phase:
            self._phase = phase
            health.enter(phase)


def _share(chunk: Chunk, count: int) -> int:
    """The bytes of ``count`` of ``chunk``'s events, in proportion (a chunk is cut only where
    a sink resumes inside it)."""
    whole = len(chunk.events)
    return chunk.size if count == whole else chunk.size * count // whole


def _as_initial(events: list[Event]) -> tuple[list[Event], bool]:
    """``events`` with the markers of the log's first snapshot given reason ``initial`` (for
    a sink that holds nothing, it is its first, whatever the log took it for), and whether
    that snapshot goes on after them."""
    renamed: list[Event] = []
    for index, event in enumerate(events):
        if event.op is Op.SNAPSHOT_BEGIN or event.op is Op.SNAPSHOT_END:
            event = dataclasses.replace(event, reason=SnapshotReason.INITIAL)
        renamed.append(event)
        if event.op is Op.SNAPSHOT_END:
            return renamed + events[index + 1 :], False
    return renamed, True
