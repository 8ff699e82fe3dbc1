"""A sink's changes with the log on: from the log where it holds what follows the sink's
tail, else from etcd until it does.

This is the ``ChangeSourceFactory`` the pump is given when ``BRIDGE_JOURNAL__PATH`` is set;
the pump, its positions and its exactly-once rules do not change. For a sink whose durable
tail the log continues (``Journal.start_for``) the changes are the log's. Otherwise the sink
catches up from etcd as it would without a log (``bridge.source``: a watch from its tail, or
a snapshot), and moves to the log after the first whole revision the log continues:
after a snapshot's end, or once its watch reaches the log's history. That is the case of a
fresh log (a new machine, an HA takeover without shared storage) for sinks that already hold
something, of a sink that fell behind the log's start (trimmed past the disk budget:
``JournalOverrunError``, counted), and of the snapshots only that sink needs: one it lost
data for (reason ``lost``) or one an operator asked for (``POST /resnapshot``, which ends
its reading of the log at once).
"""

import logging
import threading
from collections.abc import Iterator

from bridge import metrics
from bridge.errors import JournalOverrunError
from bridge.etcd import Chunk
from bridge.events import Event, SnapshotReason
from bridge.health import PipelineHealth
from bridge.journal.reading import JournalReader
from bridge.journal.segments import Journal, Start
from bridge.source import ChangeSourceFactory, ChunkStream

log = logging.getLogger(__name__)


def journal_changes(
    journal: Journal, *, etcd: ChangeSourceFactory, recorder: PipelineHealth
) -> ChangeSourceFactory:
    """The factory of sinks' change sources reading ``journal`` (``recorder``: the health of
    the log's own reader), and ``etcd`` to catch up from."""

    def open_changes(
        tail: Event | None,
        *,
        stop: threading.Event,
        health: PipelineHealth,
        resync: SnapshotReason | None = None,
    ) -> "JournalChanges":
        return JournalChanges(
            journal,
            etcd=etcd,
            recorder=recorder,
            tail=tail,
            stop=stop,
            health=health,
            resync=resync,
        )

    return open_changes


class JournalChanges:
    """One opening of a sink's changes; see the module docstring."""

    def __init__(
        self,
        journal: Journal,
        *,
        etcd: ChangeSourceFactory,
        recorder: PipelineHealth,
        tail: Event | None,
        stop: threading.Event,
        health: PipelineHealth,
        resync: SnapshotReason | None,
    ) -> None:
        self._journal = journal
        self._etcd = etcd
        self._recorder = recorder
        self._last = tail
        self._stop = stop
        self._health = health
        self._resync = resync
        self._lock = threading.Lock()
        self._current: ChunkStream | None = None

    def close(self) -> None:
        """End the iteration from another thread."""
        self._stop.set()
        self._end_current()

    def _end_current(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.close()

    def __iter__(self) -> Iterator[Chunk]:
        from_etcd = self._resync is not None
        while not self._stop.is_set():
            start = None
            if not from_etcd and not self._health.snapshot_request.pending:
                start = self._journal.start_for(self._last)
            if start is None:
                if not from_etcd and self._journal.trimmed_past(self._last):
                    self._overrun("the journal was trimmed past it")
                yield from self._from_etcd()
                from_etcd = False
                continue
            try:
                yield from self._from_journal(start)
            except JournalOverrunError as error:
                self._overrun(str(error))
                from_etcd = True

    def _overrun(self, why: str) -> None:
        """Count and log that the log no longer holds what the sink needs next."""
        metrics.JOURNAL_OVERRUNS.labels(self._health.sink).inc()
        log.warning(
            "sink is behind the journal's start; catching up from etcd",
            extra={
                "sink": self._health.sink,
                "position": "empty" if self._last is None else str(self._last.position),
                "reason": why,
            },
        )

    def _track(self, chunk: Chunk) -> None:
        if chunk.events:
            last = chunk.events[-1]
            if self._last is None or last.position > self._last.position:
                self._last = last

    def _from_journal(self, start: Start) -> Iterator[Chunk]:
        """The log's chunks from ``start`` until closed or a snapshot is asked for."""
        reader = JournalReader(self._journal, start, health=self._health, recorder=self._recorder)
        with self._lock:
            self._current = reader
        request = self._health.snapshot_request
        request.listen(reader.close)
        log.info(
            "reading the journal",
            extra={
                "sink": self._health.sink,
                "after": "start" if start.after is None else str(start.after),
                "offset": start.offset,
            },
        )
        try:
            if self._stop.is_set() or request.pending:
                return
            for chunk in reader:
                self._track(chunk)
                yield chunk
        finally:
            request.forget(reader.close)
            reader.close()
            metrics.JOURNAL_BEHIND_BYTES.labels(self._health.sink).set(0)

    def _from_etcd(self) -> Iterator[Chunk]:
        """etcd's changes after the last event, until the log continues them (or closed)."""
        resync, self._resync = self._resync, None
        halt = threading.Event()
        source = self._etcd(self._last, stop=halt, health=self._health, resync=resync)
        with self._lock:
            self._current = source
        if self._stop.is_set():
            source.close()
        journal = self._journal
        try:
            for chunk in source:
                self._track(chunk)
                yield chunk
                last = self._last
                if last is not None and journal.continues(last):
                    if not self._health.snapshot_request.pending:
                        log.info(
                            "sink caught up with the journal; reading it",
                            extra={"sink": self._health.sink, "position": str(last.position)},
                        )
                        return
        finally:
            source.close()
