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
and must treat the snapshot as the prefix's new state. Nothing is skipped silently.
"""

import logging
import threading
from collections.abc import Iterator

from bridge import metrics
from bridge.errors import (
    EtcdRejectedError,
    EtcdUnavailableError,
    PositionAheadError,
    RevisionCompactedError,
    WatchResponseTooLargeError,
)
from bridge.etcd import Chunk, EtcdConnection, WatchStream
from bridge.events import Event, Op, SnapshotReason
from bridge.health import Phase, PipelineHealth
from bridge.retry import Backoff
from bridge.snapshot import SnapshotCursor, read_snapshot
from config.etcd import EtcdSettings

log = logging.getLogger(__name__)


class ChangeSource:
    """Snapshot then watch, from a sink's durable tail; see the module docstring."""

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        tail: Event | None,
        stop: threading.Event,
        health: PipelineHealth,
        watch_response_bytes: int,
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._health = health
        self._label = health.sink
        self._connection = EtcdConnection(settings, watch_response_bytes=watch_response_bytes)
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._snapshot: SnapshotCursor | None = None
        self._fragment = False
        metrics.WATCH_FRAGMENTED.labels(self._label)  # shown as 0 until it happens
        self._watch_from = 0
        self._tail_revision = 0 if tail is None else tail.revision
        if tail is None:
            self._snapshot = SnapshotCursor(reason=SnapshotReason.INITIAL)
        elif tail.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
            self._snapshot = SnapshotCursor(
                reason=tail.reason or SnapshotReason.INITIAL,
                revision=tail.revision,
                after_key=tail.key if tail.op is Op.SNAPSHOT else None,
                next_index=tail.index + 1,
            )
        else:
            self._watch_from = _resume_revision(tail)

    def __iter__(self) -> Iterator[Chunk]:
        backoff = Backoff(initial=0.1, maximum=5.0)
        connected = False
        while not self._stop.is_set():
            try:
                if not connected:
                    revision = self._connection.connect()
                    connected = True
                    if self._tail_revision > revision:
                        raise PositionAheadError(
                            sink=self._label,
                            position=self._tail_revision,
                            current=revision,
                            endpoint=self._connection.endpoint,
                        )
                    log.info(
                        "connected to etcd",
                        extra={
                            "sink": self._label,
                            "endpoint": self._connection.endpoint,
                            "revision": revision,
                        },
                    )
                yield from self._snapshot_then_watch(backoff)
            except WatchResponseTooLargeError as error:
                if error.fragmented:
                    raise EtcdRejectedError(str(error)) from None
                metrics.WATCH_FRAGMENTED.labels(self._label).inc()
                log.warning(
                    "watch response too large, reading it in fragments",
                    extra={"sink": self._label, "detail": str(error)},
                )
                self._fragment = True
            except RevisionCompactedError as error:
                metrics.RESYNCS.labels(self._label).inc()
                log.error(
                    "position compacted, resyncing with a new snapshot",
                    extra={"sink": self._label, "detail": str(error)},
                )
                self._snapshot = SnapshotCursor(reason=SnapshotReason.COMPACTED)
            except EtcdUnavailableError as error:
                self._health.enter(Phase.ETCD_DOWN)
                metrics.RECONNECTS.labels(self._label).inc()
                metrics.ERRORS.labels(self._label, type(error).__name__).inc()
                log.warning(
                    "etcd unavailable, reconnecting",
                    extra={
                        "sink": self._label,
                        "detail": str(error),
                        "attempt": backoff.attempts + 1,
                    },
                )
                connected = False
                self._connection.failover()
                if not backoff.wait(self._stop):
                    break
        self._connection.close()

    def close(self) -> None:
        """End the iteration from another thread (cancels a watch that is waiting)."""
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.close()

    def _snapshot_then_watch(self, backoff: Backoff) -> Iterator[Chunk]:
        keyspace = self._settings.keyspace
        if self._snapshot is not None:
            cursor = self._snapshot
            self._health.enter(Phase.SNAPSHOT)
            metrics.SNAPSHOT_IN_PROGRESS.labels(self._label).set(1)
            log.info(
                "snapshot starting",
                extra={
                    "sink": self._label,
                    "revision": cursor.revision or "current",
                    "reason": cursor.reason.value,
                    "after_index": cursor.next_index,
                },
            )
            for chunk in read_snapshot(
                self._connection,
                keyspace=keyspace,
                cursor=cursor,
                page_bytes=self._settings.snapshot_page_bytes,
            ):
                backoff.reset()
                self._health.beat()
                metrics.SNAPSHOT_EVENTS.labels(self._label).inc(len(chunk.events))
                yield chunk
                if self._stop.is_set():
                    return
            metrics.SNAPSHOT_IN_PROGRESS.labels(self._label).set(0)
            log.info(
                "snapshot done",
                extra={
                    "sink": self._label,
                    "revision": cursor.revision,
                    "events": cursor.next_index,
                },
            )
            self._snapshot = None
            self._watch_from = cursor.revision + 1
        with self._lock:
            if self._stop.is_set():
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
                backoff.reset()
                self._health.beat()
                if chunk.events:
                    self._watch_from = _resume_revision(chunk.events[-1])
                yield chunk
            self._fragment = False  # a fragmented watch ends once its big response is in
        finally:
            with self._lock:
                self._stream.close()
                self._stream = None


def _resume_revision(last: Event) -> int:
    """The revision to watch from after ``last`` (a watched change or ``snapshot_end``)."""
    return last.revision if last.more else last.revision + 1
