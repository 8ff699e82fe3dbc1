"""The log's reader: one thread per process follows etcd (snapshot, then watch) into the log.

It is a pipeline whose sink is the log: it resumes from the log's last event through the
same change source a sink's pipeline uses (``bridge.source``), so the snapshot, fragment,
failover and compaction rules are the same, at etcd's pace since appending to a local file
never waits on a network. A log that holds nothing starts with a snapshot (reason
``initial``): sinks that hold nothing read it from the log, so the revision it pins only
has to survive reading it from etcd, never the sinks' delivery.

A full disk (``JournalUnavailableError``) is retried with backoff, the sinks reading the log
waiting meanwhile; a log that holds revisions etcd never reached (etcd restored from a
backup) is dropped and started afresh, and the sinks catch up from etcd (each of them then
meets the same check against its own position). So is a log whose end etcd compacted before
the reader could resume there (a standby's log after a takeover, a disk full for longer than
the compaction window): the resync snapshot the reader then takes begins the new log, since
a log holds every change after its start, never a gap. A sink that is past the log's old end
(it followed another instance's log meanwhile) thus catches up from etcd, from its own
position, rather than taking a snapshot it does not need. Any other failure is handed to the
sinks reading the log, which stop with it, as they would have met it watching etcd
themselves.
"""

import logging
import threading
from collections.abc import Iterator

from bridge import metrics
from bridge.errors import BridgeError, PositionAheadError
from bridge.etcd import Chunk
from bridge.events import Op, past
from bridge.health import Phase, PipelineHealth
from bridge.journal.segments import Journal
from bridge.logs import error_fields
from bridge.retry import Backoff, Retry
from bridge.source import ChangeSourceFactory, ChunkStream

log = logging.getLogger(__name__)

RECORDER = "journal"
"""The name the log's reader goes by in logs, metrics and ``/healthz``."""


class Recorder:
    """etcd -> the log until ``stop``; ``run`` is the thread's target."""

    def __init__(
        self,
        journal: Journal,
        *,
        source: ChangeSourceFactory,
        stop: threading.Event,
        health: PipelineHealth,
        backoff: Backoff | None = None,
    ) -> None:
        self._journal = journal
        self._open_source = source
        self._stop = stop
        self._health = health
        self._retry = Retry(backoff or Backoff(initial=0.2, maximum=10.0), stop=stop)
        self._lock = threading.Lock()
        self._source: ChunkStream | None = None

    def run(self) -> None:
        """Record until stopped; a fatal error is handed to the log's readers."""
        try:
            for _recorded in self._retry.iterate(self._record, on_error=self._waiting):
                pass
        except BaseException as error:  # noqa: BLE001 - handed to the sinks, which report it
            self._health.enter(Phase.FAILED)
            metrics.count_error(error, sink=RECORDER)
            self._journal.fail(error)
        else:
            self._health.enter(Phase.STOPPED)

    def close(self) -> None:
        """End the recording from another thread (``stop`` must be set)."""
        with self._lock:
            if self._source is not None:
                self._source.close()

    def _waiting(self, error: BridgeError) -> None:
        self._health.enter(Phase.SINK_DOWN)
        metrics.count_error(error, sink=RECORDER)
        log.warning("journal cannot be written, retrying", extra=error_fields(error))

    def _record(self) -> Iterator[int]:
        """Append etcd's changes after the log's tail until stopped, yielding each count."""
        journal, stats = self._journal, self._health.stats
        while not self._stop.is_set():
            tail = journal.tail
            stats.position = None if tail is None else tail.position
            halt = threading.Event()
            source = self._open_source(tail, stop=halt, health=self._health)
            with self._lock:
                self._source = source
            if self._stop.is_set():
                source.close()
            try:
                for chunk in source:
                    stats.etcd_revision = max(stats.etcd_revision, chunk.revision)
                    events = past(chunk.events, stats.position)
                    if events and events[0].op is Op.SNAPSHOT_BEGIN and journal.tail is not None:
                        log.warning(
                            "etcd compacted the journal's end: starting it afresh",
                            extra={
                                "position": str(journal.tail.position),
                                "snapshot": str(events[0].position),
                            },
                        )
                        journal.discard()
                    if events:
                        journal.append(Chunk(events, chunk.revision, chunk.size))
                        stats.position = events[-1].position
                        stats.delivered += len(events)
                        self._health.sink_accepted()
                        yield len(events)
                    if chunk.synced:
                        journal.publish_synced(chunk.revision)
                        stats.caught_up_to(chunk.revision)
                        self._health.sink_accepted()
                    stats.observe()
                return
            except PositionAheadError as error:
                log.error(
                    "journal holds revisions etcd never reached: starting it afresh",
                    extra=error_fields(error),
                )
                journal.discard()
            finally:
                source.close()
