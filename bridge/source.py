"""The change source: everything after a sink's position, as chunks, across any failure.

Given the last event a sink durably holds, the source decides where to pick up:

- nothing held: a snapshot (reason ``initial``), then a watch from its revision + 1;
- inside a snapshot (its last event is ``snapshot_begin`` or ``snapshot``): the rest of that
  snapshot at the same revision, after the last key, then the watch;
- after ``snapshot_end`` at R: the watch from R + 1;
- after the last change of revision R (``more`` unset): the watch from R + 1;
- after a change of R that more changes of R follow: the watch from R itself. Re-reading the
  start of R costs duplicates, which the pump drops by position as they stream through.

A watch response over the pipeline's byte limit is refused by gRPC before it is buffered;
the source then watches again from the same revision with etcd's ``fragment`` flag, and
returns to whole responses once the fragmented one has arrived (``bridge.etcd`` says why
fragments are not the default).

It then yields chunks forever. When the stream breaks, stalls or is cancelled it fails over
to the next endpoint with backoff and re-watches from the last revision it yielded. When
etcd has compacted the revision it needs, it logs an error, counts a resync, and starts a new
snapshot (reason ``compacted``): consumers see a ``snapshot_begin`` marker with that reason
and must treat the snapshot as the prefix's new state. An update or delete etcd sends
without its previous value is the same loss of history (``PreviousValueCompactedError``) and
takes the same resync. Nothing is skipped silently.

When the pump finds that its sink lost data (``bridge.pump``), it opens the source with
``resync``: a snapshot with that reason (``lost``) comes first, whatever the tail, numbered
after the tail like a requested one.

An operator may ask for a snapshot (``POST /resnapshot``, for a consumer that lost its
state): the watch ends, a snapshot (reason ``requested``) is taken at etcd's current revision,
and the watch goes on after it. Its positions follow everything already handed on: at a
revision the sink already holds changes of, its indexes continue after theirs.

A snapshot first counts its keys at its revision (a count-only range), which also pins that
revision, and reports its progress against the count (``bridge.progress``).

The pump does not build its source: the composition root hands it a ``ChangeSourceFactory``
(``etcd_changes``), and the source reaches etcd only through the narrow ``EtcdClient``
protocol. Both seams exist so that the pump and these resume rules run in unit tests against
scripts, in milliseconds; reconnecting is ``bridge.retry.Retry``'s loop, not one of its own.
"""

import logging
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from bridge import metrics
from bridge.errors import (
    BridgeError,
    EtcdRejectedError,
    PositionAheadError,
    RevisionCompactedError,
    WatchResponseTooLargeError,
)
from bridge.etcd import Chunk, EtcdConnection
from bridge.events import Event, Op, Position, SnapshotReason
from bridge.health import Phase, PipelineHealth
from bridge.logs import error_fields
from bridge.progress import SnapshotProgress
from bridge.retry import Backoff, Retry
from bridge.snapshot import RangeReader, SnapshotCursor, count_snapshot, read_snapshot
from config.etcd import EtcdSettings
from config.keyspace import KeySpace

log = logging.getLogger(__name__)


class ChunkStream(Protocol):
    """Chunks in order until the stream ends, fails or is closed (from any thread)."""

    def __iter__(self) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


class ChangeSourceFactory(Protocol):
    """Opens the changes after a sink's durable ``tail`` (None: it holds nothing yet).

    The pump calls it each time it (re)opens its sink, with the tail the sink reported, an
    event that ``close`` sets, the pipeline's health to report phases to, and ``resync``: the
    reason of a snapshot to take first whatever the tail (None: resume from the tail). The
    composition root passes ``etcd_changes``; unit tests pass a scripted source.
    """

    def __call__(
        self,
        tail: Event | None,
        *,
        stop: threading.Event,
        health: PipelineHealth,
        resync: SnapshotReason | None = None,
    ) -> ChunkStream: ...


class EtcdClient(RangeReader, Protocol):
    """What the source asks of etcd; ``bridge.etcd.EtcdConnection`` is the real one. Narrow,
    so that a scripted connection drives the resume rules in unit tests."""

    endpoint: str

    def connect(self) -> int:
        """Reach an endpoint; return etcd's current revision."""
        ...

    def failover(self) -> None:
        """Prefer the next endpoint on the next ``connect``."""
        ...

    def close(self) -> None: ...

    def watch(self, keyspace: KeySpace, *, start_revision: int, fragment: bool) -> ChunkStream:
        """Watch ``keyspace`` from ``start_revision``, in etcd fragments if ``fragment``."""
        ...


def etcd_changes(settings: EtcdSettings, *, pipelines: int) -> ChangeSourceFactory:
    """The factory of real change sources: a fresh connection to etcd per opening, with its
    pipeline's part of the watch response limit (``pipelines`` share it)."""
    watch_response_bytes = settings.watch_response_bytes_per_pipeline(pipelines)

    def open_changes(
        tail: Event | None,
        *,
        stop: threading.Event,
        health: PipelineHealth,
        resync: SnapshotReason | None = None,
    ) -> "ChangeSource":
        return ChangeSource(
            EtcdConnection(settings, watch_response_bytes=watch_response_bytes),
            keyspace=settings.keyspace,
            page_bytes=settings.snapshot_page_bytes,
            tail=tail,
            stop=stop,
            health=health,
            resync=resync,
        )

    return open_changes


class ChangeSource:
    """Snapshot then watch, from a sink's durable tail; see the module docstring."""

    def __init__(
        self,
        connection: EtcdClient,
        *,
        keyspace: KeySpace,
        page_bytes: int,
        tail: Event | None,
        stop: threading.Event,
        health: PipelineHealth,
        backoff: Backoff | None = None,
        resync: SnapshotReason | None = None,
    ) -> None:
        """``page_bytes``: a snapshot page's target size; ``backoff``: the delays between
        reconnections (default: 0.1 s doubling to 5 s); ``resync``: take a snapshot with this
        reason first, whatever the tail."""
        self._connection = connection
        self._keyspace = keyspace
        self._page_bytes = page_bytes
        self._stop = stop
        self._health = health
        self._label = health.sink
        self._retry = Retry(backoff or Backoff(initial=0.1, maximum=5.0), stop=stop)
        self._stream: ChunkStream | None = None
        self._lock = threading.Lock()
        self._snapshot: SnapshotCursor | None = None
        self._fragment = False
        self._watch_from = 0
        self._tail_revision = 0 if tail is None else tail.revision
        self._last: Position | None = None if tail is None else tail.position
        """The last position handed on (or the tail's): a requested snapshot numbers after it."""
        if resync is not None:
            self._snapshot = SnapshotCursor(reason=resync)
        elif tail is None:
            self._snapshot = SnapshotCursor(reason=SnapshotReason.INITIAL)
        elif tail.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
            self._snapshot = SnapshotCursor.resuming(tail)
        else:
            self._watch_from = _resume_revision(tail)
        health.snapshot_request.listen(self._end_watch)

    def __iter__(self) -> Iterator[Chunk]:
        """Chunks from the tail on until closed; reconnects (with backoff) while etcd is
        unavailable, to the next endpoint, from the last revision yielded."""
        try:
            yield from self._retry.iterate(self._session, on_error=self._reconnecting)
        finally:
            self._health.snapshot_request.forget(self._end_watch)
            self._connection.close()

    def _session(self) -> Iterator[Chunk]:
        """Connect, then snapshot and watch until closed. A compacted position and a watch
        response over the limit are handled here, on the same connection."""
        self._connect()
        while not self._stop.is_set():
            try:
                yield from self._snapshot_then_watch()
            except WatchResponseTooLargeError as error:
                if error.fragmented:
                    raise EtcdRejectedError(str(error), endpoint=error.endpoint) from error
                metrics.WATCH_FRAGMENTED.labels(self._label).inc()
                log.warning(
                    "watch response too large, reading it in fragments",
                    extra={"sink": self._label, **error_fields(error)},
                )
                self._fragment = True
            except RevisionCompactedError as error:
                metrics.RESYNCS.labels(self._label).inc()
                log.error(
                    "position compacted, resyncing with a new snapshot",
                    extra={"sink": self._label, **error_fields(error)},
                )
                self._snapshot = SnapshotCursor(reason=SnapshotReason.COMPACTED)

    def _start_snapshot(self, cursor: SnapshotCursor) -> SnapshotProgress:
        """Count the snapshot's keys, pinning the revision (and first index) of a new one."""
        new = cursor.revision == 0
        expected = count_snapshot(self._connection, keyspace=self._keyspace, cursor=cursor)
        if new:
            cursor.next_index = _first_index(cursor.revision, after=self._last)
        return SnapshotProgress(self._health.stats, expected=expected, read=cursor.scanned)

    def _connect(self) -> None:
        """Reach etcd, refusing a sink that holds revisions etcd never reached."""
        revision = self._connection.connect()
        if self._tail_revision > revision:
            raise PositionAheadError(
                sink=self._label,
                position=self._tail_revision,
                current=revision,
                endpoint=self._connection.endpoint,
            )
        self._health.stats.etcd_endpoint = self._connection.endpoint
        log.info(
            "connected to etcd",
            extra={
                "sink": self._label,
                "endpoint": self._connection.endpoint,
                "revision": revision,
            },
        )

    def _reconnecting(self, error: BridgeError) -> None:
        """Before the retry's wait: say etcd is down and turn to the next endpoint."""
        self._health.enter(Phase.ETCD_DOWN)
        metrics.RECONNECTS.labels(self._label).inc()
        metrics.count_error(error, sink=self._label)
        log.warning(
            "etcd unavailable, reconnecting",
            extra={"sink": self._label, **error_fields(error), "attempt": self._retry.attempts + 1},
        )
        self._connection.failover()

    def close(self) -> None:
        """End the iteration from another thread (cancels a watch that is waiting)."""
        self._stop.set()
        self._end_watch()

    def _end_watch(self) -> None:
        """End the watch, if one is open, from another thread: on ``close``, or when a
        snapshot is asked for (the session then takes it, see ``_snapshot_then_watch``)."""
        with self._lock:
            if self._stream is not None:
                self._stream.close()

    def _snapshot_then_watch(self) -> Iterator[Chunk]:
        """The snapshot in progress, if any, then the watch from where it (or the tail) ends;
        returns when closed, or when a fragmented watch has delivered its large response."""
        keyspace = self._keyspace
        stats = self._health.stats
        if self._snapshot is None and self._health.snapshot_request.take():
            metrics.SNAPSHOTS_REQUESTED.labels(self._label).inc()
            self._snapshot = SnapshotCursor(reason=SnapshotReason.REQUESTED)
        if self._snapshot is not None:
            cursor = self._snapshot
            self._health.enter(Phase.SNAPSHOT)
            metrics.SNAPSHOT_IN_PROGRESS.labels(self._label).set(1)
            progress = self._start_snapshot(cursor)
            log.info(
                "snapshot starting",
                extra={
                    "sink": self._label,
                    "revision": cursor.revision,
                    "reason": cursor.reason.value,
                    "after_index": cursor.next_index,
                    "keys": stats.snapshot_keys_expected,
                },
            )
            for chunk in read_snapshot(
                self._connection,
                keyspace=keyspace,
                cursor=cursor,
                page_bytes=self._page_bytes,
            ):
                self._health.beat()
                stats.etcd_heard_at = time.time()  # noqa: TID251 - a Unix-time gauge
                metrics.SNAPSHOT_EVENTS.labels(self._label).inc(len(chunk.events))
                progress.advance_to(cursor.scanned)
                if chunk.events:
                    self._last = chunk.events[-1].position
                yield chunk
                if self._stop.is_set():
                    return
            metrics.SNAPSHOT_IN_PROGRESS.labels(self._label).set(0)
            log.info(
                "snapshot done",
                extra={
                    "sink": self._label,
                    "revision": cursor.revision,
                    "keys": cursor.scanned,
                },
            )
            self._snapshot = None
            self._watch_from = cursor.revision + 1
        with self._lock:
            if self._stop.is_set() or self._health.snapshot_request.pending:
                return
            self._stream = self._connection.watch(
                keyspace, start_revision=self._watch_from, fragment=self._fragment
            )
        log.info(
            "watching",
            extra={
                "sink": self._label,
                "from_revision": self._watch_from,
                "fragments": self._fragment,
            },
        )
        self._health.enter(Phase.WATCHING)
        try:
            for chunk in self._stream:
                self._health.beat()
                stats.etcd_heard_at = heard_at = time.time()  # noqa: TID251 - Unix-time gauges
                if chunk.events:
                    last = chunk.events[-1]
                    self._watch_from = _resume_revision(last)
                    self._last = last.position
                    stats.last_event_at = heard_at
                yield chunk
            self._fragment = False  # a fragmented watch ends once its big response is in
        finally:
            with self._lock:
                self._stream.close()
                self._stream = None


def _first_index(revision: int, *, after: Position | None) -> int:
    """The index a snapshot at ``revision`` starts at: 0, or after the changes of that
    revision already handed on (a requested snapshot while the watch was at it)."""
    if after is not None and after.revision == revision:
        return after.index + 1
    return 0


def _resume_revision(last: Event) -> int:
    """The revision to watch from after ``last`` (a watched change or ``snapshot_end``)."""
    return last.revision if last.more else last.revision + 1
