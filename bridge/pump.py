"""The pump: moves one sink's events from etcd into the sink, exactly once.

Each sink gets its own pipeline: its own position, its own etcd watch, its own threads. A
slow or broken sink therefore only ever slows its own watch, and fan-out needs no shared
buffer that could grow while one sink is down.

Within a pipeline a reader thread iterates the change source the pipeline was given (a
``bridge.source.ChangeSourceFactory``: etcd in production, a script in unit tests, opened
anew from the sink's tail each time the sink is opened) and puts chunks into a queue
bounded by events and by bytes (a chunk may be a piece of one huge revision); the
pipeline's thread takes them, drops anything at or below the last position handed to the
sink, groups chunks into batches, and writes then flushes each batch. A batch ends between
chunks, so possibly inside a revision: positions are per event, and a sink that must apply a
revision whole reads ``Event.more``.

When the queue is full the reader blocks, the gRPC stream stops being read, and etcd's flow
control slows the watch: nothing is ever dropped to relieve pressure.

Positions only move forward, and the sink's durable tail is the last event of a flushed
batch. On stop, the batch in hand is written and flushed and whatever is still queued is
left: it is past the durable tail, so the next start reads it again from etcd. A
``SinkUnavailableError`` (any retryable error: ``bridge.retry.Retry`` decides) closes
everything, reopens the sink (which reports its durable tail anew) and starts over from there,
with backoff; a fatal error stops the pipeline with nothing written after the failing event.

A refusal of one event (``SinkRejectedError`` naming its position) goes to the pipeline's
``bridge.refusal.Refusals``: under ``stop`` it is fatal like the rest; otherwise the sink is
closed and reopened, and delivery starts again from its tail with that event replaced or
diverted (the steps are in ``bridge.refusal``). Only batches delivered while such an event is
pending pay for it: the common path asks one attribute per batch.

The pipeline remembers the last positions it flushed. A reopened sink whose tail is behind
them (further than the sink's ``flushes_behind`` allows) lost data it had acknowledged: a
server restarted empty, a stream deleted, a file truncated. That is logged as an error with
both positions and counted, and the source is opened with a snapshot (reason ``lost``) first:
consumers get the prefix's whole state again, never a silent resume in the middle.
"""

import collections
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bridge import metrics
from bridge.errors import BridgeError, NotLeaderError, SinkError, SinkRejectedError
from bridge.etcd import Chunk
from bridge.events import Event, Position, SnapshotReason, past
from bridge.health import Phase, PipelineHealth
from bridge.logs import error_fields
from bridge.refusal import Refusals
from bridge.retry import Backoff, Retry
from bridge.sink import Sink
from bridge.source import ChangeSourceFactory, ChunkStream
from config.pump import PumpSettings

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class _Failure:
    """The reader thread died with this error; the pipeline's thread raises it."""

    error: BaseException


_Item = Chunk | _Failure


class Pipeline:
    """etcd -> one sink; ``run`` returns when ``stop`` is set, or raises a fatal error."""

    def __init__(
        self,
        sink: Sink,
        *,
        source: ChangeSourceFactory,
        limits: PumpSettings,
        stop: threading.Event,
        health: PipelineHealth,
        may_write: Callable[[], bool],
        backoff: Backoff | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        """``source`` opens the changes after a tail; ``may_write`` is asked before every write
        and flush (False: leadership is lost); ``backoff``: the delays between reopenings
        (default: 0.2 s doubling to 10 s); ``refusals``: what to do with an event the sink
        refuses for good (default: stop)."""
        self.sink = sink
        self._refusals = refusals if refusals is not None else Refusals(sink=sink.name)
        self._open_source = source
        self._limits = limits
        self._stop = stop
        self._may_write = may_write
        self._retry = Retry(backoff or Backoff(initial=0.2, maximum=10.0), stop=stop)
        self.health = health
        self.stats = health.stats
        health.guarantee = sink.guarantee
        self._flushed: collections.deque[Position] = collections.deque(
            maxlen=sink.flushes_behind + 1
        )
        """The last positions flushed in this process, oldest first: the sink must hold at
        least the oldest of them when it is reopened."""

    def run(self) -> None:
        """Deliver until stopped, reopening the sink after a retryable error (with backoff);
        raise a fatal one, having written nothing after the event it concerns."""
        try:
            for _delivered in self._retry.iterate(
                self._deliver_past_refusals, on_error=self._reopening
            ):
                pass  # each delivered batch is progress: the retry resets its backoff
        except BaseException as error:
            self.health.enter(Phase.FAILED)
            if isinstance(error, BridgeError) and error.sink is None:
                error.sink = self.sink.name  # the one place that knows which sink it was
            metrics.count_error(error, sink=self.sink.name)
            raise
        else:
            self.health.enter(Phase.STOPPED)
        finally:
            self.sink.close()
            self._refusals.close()
            log.info(
                "pipeline stopped",
                extra={
                    "sink": self.sink.name,
                    "delivered": self.stats.delivered,
                    "position": str(self.stats.position),
                },
            )

    def _reopening(self, error: BridgeError) -> None:
        """Before the retry's wait: report the failure and close the sink; the next delivery
        reopens it and starts over from the tail it reports then."""
        self.health.enter(Phase.SINK_DOWN if isinstance(error, SinkError) else Phase.ETCD_DOWN)
        metrics.count_error(error, sink=self.sink.name)
        log.warning(
            "reopening after a retryable error",
            extra={"sink": self.sink.name, **error_fields(error)},
        )
        self.sink.close()

    def _deliver_past_refusals(self) -> Iterator[list[Event]]:
        """``_deliver``, started again from the reopened sink after each refusal the policy
        goes on past (``bridge.refusal``, step 2); raises the others."""
        while True:
            try:
                yield from self._deliver()
                return
            except SinkRejectedError as error:
                if not self._refusals.take(error):
                    raise
                self.sink.close()

    def _deliver(self) -> Iterator[list[Event]]:
        """Open the sink and deliver from the stream's tail until stopped, yielding each
        batch once flushed; raises what the sink or the source raised."""
        tail = self._refusals.open(self.sink.open())
        log.info(
            "sink opened",
            extra={
                "sink": self.sink.name,
                "position": _describe(tail),
                "guarantee": self.sink.guarantee,
            },
        )
        halt = threading.Event()
        source = self._open_source(
            tail, stop=halt, health=self.health, resync=self._lost_since_flushed(tail)
        )
        chunks = _ChunkQueue(
            max_events=self._limits.queue_depth * self._limits.batch_events,
            max_bytes=self._limits.queue_bytes,
        )
        reader = threading.Thread(
            target=_read, args=(source, chunks, halt), name=f"etcd-{self.sink.name}", daemon=True
        )
        reader.start()
        self.stats.position = tail.position if tail is not None else None
        try:
            for batch in self._batches(chunks, last=self.stats.position):
                if self._refusals.pending:
                    yield from self._deliver_around_refused(batch)
                    continue
                self._write(batch)
                yield batch
        finally:
            halt.set()
            source.close()
            reader.join(self._limits.shutdown_timeout)

    def _write(self, batch: list[Event]) -> None:
        """Write and flush ``batch``: durable in the sink on return."""
        started = time.perf_counter()
        self._check_leadership()
        self.sink.write(batch)
        self._check_leadership()
        self.sink.flush()
        self._delivered(batch, seconds=time.perf_counter() - started)

    def _deliver_around_refused(self, batch: list[Event]) -> Iterator[list[Event]]:
        """Deliver ``batch`` with the refused events it holds replaced, or diverted once what
        came before them is flushed (``bridge.refusal``, step 2)."""
        refusals = self._refusals
        for events, diverted in refusals.pieces(batch):
            if events:
                self._write(events)
                refusals.passed(events[-1].position)
                yield events
            if diverted is not None:
                self._check_leadership()
                refusals.divert(diverted)
                self.stats.position = diverted.position
                self.stats.observe()

    def _lost_since_flushed(self, tail: Event | None) -> SnapshotReason | None:
        """``LOST`` when the sink's reopened ``tail`` is behind what this process knows it
        flushed (logged and counted), else None."""
        if not self._flushed:
            return None
        flushed = self._flushed[0]
        if tail is not None and tail.position >= flushed:
            return None
        metrics.SINK_DATA_LOST.labels(self.sink.name).inc()
        log.error(
            "sink lost data it had acknowledged; taking a new snapshot (reason lost)",
            extra={"sink": self.sink.name, "holds": _describe(tail), "flushed": str(flushed)},
        )
        self._flushed.clear()
        return SnapshotReason.LOST

    def _check_leadership(self) -> None:
        if not self._may_write():
            raise NotLeaderError(
                f"sink {self.sink.name}: leadership lost; not writing", sink=self.sink.name
            )

    def _delivered(self, batch: list[Event], *, seconds: float) -> None:
        sink = self.sink.name
        metrics.WRITE_SECONDS.labels(sink).observe(seconds)
        metrics.BATCH_EVENTS.labels(sink).observe(len(batch))
        for event_type, count in Counter(event.type for event in batch).items():
            metrics.EVENTS_DELIVERED.labels(sink, event_type.value).inc(count)
        self.stats.position = batch[-1].position
        self._flushed.append(batch[-1].position)
        self.stats.delivered += len(batch)
        self.stats.observe()
        self.health.sink_accepted()  # and a slow one shows life while its reader waits

    def _batches(self, chunks: "_ChunkQueue", *, last: Position | None) -> Iterator[list[Event]]:
        """Batches of events past ``last``, until ``stop``; raises the reader's failure."""
        limits = self._limits
        while not self._stop.is_set():
            try:
                item: _Item = chunks.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                self.stats.observe()
                continue
            batch: list[Event] = []
            size = 0
            synced = 0
            while True:
                if isinstance(item, _Failure):
                    raise item.error
                self.stats.etcd_revision = max(self.stats.etcd_revision, item.revision)
                if item.synced:
                    synced = item.revision
                batch.extend(past(item.events, last))
                size += item.size
                if len(batch) >= limits.batch_events or size >= limits.batch_bytes:
                    break
                try:
                    item = chunks.get_nowait()
                except queue.Empty:
                    break
            if batch:
                last = batch[-1].position
                yield batch
            if synced:  # the sink now holds every change up to it: flushed, or none came
                self.stats.caught_up_to(synced)
                self.health.sink_accepted()


class _ChunkQueue:
    """A FIFO of chunks bounded by the events and the bytes it holds, not by the chunks: in
    live mode each watch response carries about one event, so a bound in responses would cap
    every batch at queue_depth events, however far behind the sink is; and a chunk of large
    values (deletes carry the previous value) weighs by its bytes. An empty queue always
    takes a chunk, whatever its size (a snapshot page, a piece of a watch response)."""

    def __init__(self, *, max_events: int, max_bytes: int) -> None:
        self._items: collections.deque[_Item] = collections.deque()
        self._events = 0
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._changed = threading.Condition()

    def _full(self) -> bool:
        return bool(self._items) and (
            self._events >= self._max_events or self._bytes >= self._max_bytes
        )

    def put(self, item: _Item, *, timeout: float) -> None:
        with self._changed:
            if self._full():
                self._changed.wait(timeout)
                if self._full():
                    raise queue.Full
            self._items.append(item)
            if isinstance(item, Chunk):
                self._events += len(item.events)
                self._bytes += item.size
            self._changed.notify_all()

    def get(self, timeout: float) -> _Item:
        with self._changed:
            if not self._items:
                self._changed.wait(timeout)
                if not self._items:
                    raise queue.Empty
            return self._pop()

    def get_nowait(self) -> _Item:
        with self._changed:
            if not self._items:
                raise queue.Empty
            return self._pop()

    def _pop(self) -> _Item:
        item = self._items.popleft()
        if isinstance(item, Chunk):
            self._events -= len(item.events)
            self._bytes -= item.size
        self._changed.notify_all()
        return item


def _read(source: ChunkStream, chunks: "_ChunkQueue", halt: threading.Event) -> None:
    """Reader thread: source -> queue, blocking while the queue is full (backpressure)."""
    try:
        for chunk in source:
            _put(chunks, chunk, halt)
    except BaseException as error:  # noqa: BLE001 - handed over; the pipeline's thread raises
        _put(chunks, _Failure(error), halt)


def _put(chunks: "_ChunkQueue", item: _Item, halt: threading.Event) -> None:
    """Enqueue, waiting for room; give up once halted (nobody reads the queue any more)."""
    while not halt.is_set():
        try:
            chunks.put(item, timeout=_POLL_SECONDS)
            return
        except queue.Full:
            continue


def _describe(tail: Event | None) -> str:
    return "empty" if tail is None else f"{tail.position} ({tail.op.value})"
