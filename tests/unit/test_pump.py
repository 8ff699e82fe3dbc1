"""The pump in-process: an in-memory sink and a scripted source (``tests.unit.doubles``) stand
in for the servers, so that batching, backpressure, reopening, leadership and stopping are
checked in milliseconds. The subprocess suite in tests/integration remains the final proof."""

import itertools
import queue
import threading
from collections.abc import Callable, Sequence

import pytest

from bridge.errors import (
    EtcdRejectedError,
    NotLeaderError,
    SinkRejectedError,
    SinkUnavailableError,
)
from bridge.etcd import Chunk
from bridge.events import Event, Position, SnapshotReason
from bridge.health import Phase, PipelineHealth
from bridge.metrics import REGISTRY
from bridge.pump import Pipeline, _ChunkQueue, _Failure
from bridge.refusal import Refusals
from bridge.retry import Backoff
from config.pump import PumpSettings
from tests.fixtures.processes import wait_for
from tests.unit.doubles import (
    FlushFailure,
    HistorySource,
    MemorySink,
    PhaseLog,
    events_of,
    history,
)

_TIMEOUT = 5.0
"""Seconds any one condition may take; the tests themselves run in milliseconds."""


def pipeline(
    sink: MemorySink,
    source: HistorySource,
    *,
    stop: threading.Event,
    health: PhaseLog | None = None,
    may_write: Callable[[], bool] = lambda: True,
    refusals: Refusals | None = None,
    **limits: int,
) -> Pipeline:
    """A pipeline with the given pump limits and a backoff of a millisecond."""
    return Pipeline(
        sink,
        source=source,
        limits=PumpSettings(**limits),  # type: ignore[arg-type]
        stop=stop,
        health=health or PhaseLog(sink=sink.name),
        may_write=may_write,
        backoff=Backoff(initial=0.001, maximum=0.001),
        refusals=refusals,
    )


def run(
    pipeline: Pipeline, *, stop: threading.Event, until: Callable[[], object] | None = None
) -> None:
    """Run ``pipeline`` in a thread until it ends by itself, or, given ``until``, until that
    holds (then stop it); fail if it does not end in time; raise whatever it raised."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            pipeline.run()
        except BaseException as error:  # noqa: BLE001 - raised again in the test's thread
            failures.append(error)

    thread = threading.Thread(target=target, name="pipeline-under-test")
    thread.start()
    try:
        if until is None:
            thread.join(_TIMEOUT)
        else:
            wait_for(
                lambda: until() or failures, timeout=_TIMEOUT, what="the pipeline", interval=0.001
            )
    finally:
        stop.set()
        thread.join(_TIMEOUT)
    assert not thread.is_alive(), "the pipeline did not stop"
    if failures:
        raise failures[0]


class _End(Exception):  # noqa: N818 - a marker, not an error
    """Queued after the chunks of a batching test: ends the batching there."""


def errors_counted(sink: str, kind: str) -> float:
    return REGISTRY.get_sample_value("etcd_bridge_errors_total", {"sink": sink, "kind": kind}) or 0


def filled(chunks: Sequence[Chunk | _Failure]) -> _ChunkQueue:
    buffer = _ChunkQueue(max_events=10_000, max_bytes=1 << 30)
    for chunk in chunks:
        buffer.put(chunk, timeout=0)
    return buffer


def batch_sizes(pipeline: Pipeline, chunks: Sequence[Chunk]) -> list[int]:
    """The sizes of the batches cut from ``chunks``, all queued before the first is cut."""
    sizes: list[int] = []
    with pytest.raises(_End):
        for batch in pipeline._batches(filled([*chunks, _Failure(_End())]), last=None):
            sizes.append(len(batch))
    return sizes


def test_a_progress_answer_catches_an_idle_sink_up_once_what_came_before_is_held() -> None:
    """etcd moved on elsewhere (revision 50) while the prefix's last change was 3: after a
    progress answer at 50 the sink lags by nothing, though its last event is at 3."""
    sink = MemorySink()
    progress = Chunk(events=[], revision=50, synced=True)
    source = HistorySource([*history(range(1, 4)), Chunk(events=[], revision=40), progress])
    stop = threading.Event()
    health = PhaseLog(sink="progress-lag")
    piped = pipeline(sink, source, stop=stop, health=health)
    run(piped, stop=stop, until=lambda: health.stats.synced_revision == 50)
    assert sink.durable[-1].revision == 3
    assert health.stats.etcd_revision == 50
    assert health.stats.lag_revisions == 0
    assert REGISTRY.get_sample_value("etcd_bridge_lag_revisions", {"sink": "progress-lag"}) == 0


def test_without_a_progress_answer_a_higher_revision_is_lag() -> None:
    sink = MemorySink()
    source = HistorySource([*history(range(1, 4)), Chunk(events=[], revision=40)])
    stop = threading.Event()
    health = PhaseLog(sink="no-progress-lag")
    piped = pipeline(sink, source, stop=stop, health=health)
    stats = health.stats
    run(piped, stop=stop, until=lambda: stats.etcd_revision == 40 and stats.held_revision == 3)
    assert stats.lag_revisions == 37


def test_a_batch_ends_at_the_event_limit_between_chunks() -> None:
    """batch_events is soft: a batch takes whole chunks, and ends at the first chunk that
    reaches the limit, so possibly inside a revision (chunks of 3 changes of one revision)."""
    chunks = history(range(1, 7), per_revision=3)
    under_test = pipeline(MemorySink(), HistorySource([]), stop=threading.Event(), batch_events=5)
    assert batch_sizes(under_test, chunks) == [6, 6, 6]


def test_a_batch_ends_at_the_byte_limit() -> None:
    """Chunks of 600 bytes against batch_bytes of 1,024: two per batch, whatever the events."""
    chunks = [
        Chunk(events=chunk.events, revision=chunk.revision, size=600)
        for chunk in history(range(1, 7))
    ]
    under_test = pipeline(MemorySink(), HistorySource([]), stop=threading.Event(), batch_bytes=1024)
    assert batch_sizes(under_test, chunks) == [2, 2, 2]


def test_a_batch_gathered_when_stop_comes_is_still_handed_on() -> None:
    """Stop arrives once the first chunk of a batch is taken: that batch is still handed on
    (to be written and flushed), and no other after it."""
    stop = threading.Event()

    class StoppingQueue(_ChunkQueue):
        def get(self, timeout: float) -> Chunk | _Failure:
            item = super().get(timeout)
            stop.set()
            return item

    buffer = StoppingQueue(max_events=100, max_bytes=1 << 20)
    for chunk in history(range(1, 6)):
        buffer.put(chunk, timeout=0)
    under_test = pipeline(MemorySink(), HistorySource([]), stop=stop, batch_events=2)
    assert [len(batch) for batch in under_test._batches(buffer, last=None)] == [2]


def test_batches_skip_what_the_sink_holds_and_raise_the_readers_failure() -> None:
    """Events at or below ``last`` (the start of a revision read again) are dropped; the
    reader's failure is raised in the pipeline's thread."""
    chunks = history(range(1, 4), per_revision=2)
    failure = EtcdRejectedError("etcd refused us")
    under_test = pipeline(MemorySink(), HistorySource([]), stop=threading.Event())
    buffer = filled(chunks)
    batches = under_test._batches(buffer, last=Position(2, 0))
    first = next(batches)
    assert [event.position for event in first] == [Position(2, 1), Position(3, 0), Position(3, 1)]
    buffer.put(_Failure(failure), timeout=0)
    with pytest.raises(EtcdRejectedError) as raised:
        next(batches)
    assert raised.value is failure


def test_the_queue_is_bounded_by_events_and_loses_nothing() -> None:
    """Full at ``max_events``: a put is refused (the reader waits and tries again) until a get
    makes room; every chunk comes out once, in order."""
    chunks = history(range(1, 4))
    buffer = _ChunkQueue(max_events=2, max_bytes=1 << 20)
    for chunk in chunks[:2]:
        buffer.put(chunk, timeout=0)
    with pytest.raises(queue.Full):
        buffer.put(chunks[2], timeout=0)
    assert buffer.get(timeout=0) is chunks[0]
    buffer.put(chunks[2], timeout=0)
    assert [buffer.get(timeout=0) for _ in range(2)] == chunks[1:]
    with pytest.raises(queue.Empty):
        buffer.get_nowait()


@pytest.mark.parametrize(
    ("limits", "size", "capacity"),
    [
        ({"batch_events": 2, "queue_depth": 2}, 10, 4),
        ({"queue_bytes": 1024}, 600, 2),
    ],
    ids=["events", "bytes"],
)
def test_a_slow_sink_holds_the_reader_back(
    limits: dict[str, int], size: int, capacity: int
) -> None:
    """While the sink is stuck in a write, the reader takes from the source only what the
    queue holds (``capacity`` chunks) plus the one it is trying to put; once the sink goes
    on, everything arrives exactly once, in order."""
    chunks = [
        Chunk(events=chunk.events, revision=chunk.revision, size=size)
        for chunk in history(range(1, 31))
    ]
    source = HistorySource(chunks)
    release = threading.Event()
    sink = MemorySink(on_write=lambda _batch: release.wait(_TIMEOUT))
    stop = threading.Event()
    under_test = pipeline(sink, source, stop=stop, **limits)

    ahead_when_released: list[int] = []

    def held_back_then_released() -> bool:
        ahead = source.handed - len(sink.received)
        if not release.is_set() and sink.received and ahead >= capacity + 1:
            ahead_when_released.append(ahead)
            release.set()
        return len(sink.durable) == len(chunks)

    run(under_test, stop=stop, until=held_back_then_released)
    assert ahead_when_released == [capacity + 1], "the reader ran ahead of the queue's bound"
    assert sink.durable == events_of(chunks)


def test_reopening_resumes_from_the_durable_tail() -> None:
    """The second flush fails after one of its events became durable: the sink is closed,
    reopened, and the source opened again from that event; nothing twice, nothing lost."""
    chunks = history(range(1, 11), per_revision=2)
    source = HistorySource(chunks)
    sink = MemorySink(failures={2: FlushFailure(SinkUnavailableError("memory: down"), durable=1)})
    health = PhaseLog(sink="memory-reopen")
    stop = threading.Event()
    before = errors_counted("memory", "SinkUnavailableError")
    under_test = pipeline(sink, source, stop=stop, health=health, batch_events=4)
    events = events_of(chunks)

    run(under_test, stop=stop, until=lambda: len(sink.durable) == len(events))
    assert sink.durable == events
    assert sink.opened == 2
    assert source.tails == [None, events[sink.batches[0]]], "reopened from the durable tail"
    assert Phase.SINK_DOWN in health.phases and health.phases[-1] is Phase.STOPPED
    assert errors_counted("memory", "SinkUnavailableError") == before + 1


def test_a_reopened_sink_is_down_until_it_accepts_a_batch() -> None:
    """Flushes 2 and 3 fail: the source opened for the retry enters ``watching``, yet the
    pipeline shows ``sink_down`` until a flush succeeds, then ``watching`` again."""
    chunks = history(range(1, 9), per_revision=1)
    down = FlushFailure(SinkUnavailableError("memory: down"))
    health = PhaseLog(sink="memory-down-until-accepted")
    shown_at_writes: list[Phase] = []
    sink = MemorySink(
        failures={2: down, 3: down}, on_write=lambda _: shown_at_writes.append(health.phase)
    )
    stop = threading.Event()
    source = HistorySource(chunks, enters=Phase.WATCHING)
    under_test = pipeline(sink, source, stop=stop, health=health, batch_events=2)

    run(under_test, stop=stop, until=lambda: len(sink.durable) == len(events_of(chunks)))
    assert shown_at_writes[:5] == [Phase.WATCHING, Phase.WATCHING] + [Phase.SINK_DOWN] * 2 + [
        Phase.WATCHING
    ]
    assert health.phases.count(Phase.WATCHING) == 3, "each opening entered watching"


class SlowToShow(PipelineHealth):
    """A pipeline's health whose ``accepting`` thread, once the sink accepted, takes a while
    to show the phase it read: long enough for another thread to enter one meanwhile."""

    def __init__(self, sink: str) -> None:
        super().__init__(sink=sink)
        self.accepting: threading.Thread | None = None
        self.entered = threading.Event()

    def _show(self, phase: Phase) -> None:
        if threading.current_thread() is self.accepting:
            self.entered.wait(0.3)  # the other thread's enter, unless it must wait for us
        super()._show(phase)


def test_a_phase_entered_while_the_sink_is_accepted_again_stands() -> None:
    """The pump's thread reports the first accepted batch (showing the phase the source
    entered while the sink was down, ``snapshot``) while the source's thread enters
    ``watching``: ``watching`` must be what stays, whatever the order."""
    health = SlowToShow(sink="memory-accepted-while-entering")
    health.enter(Phase.SINK_DOWN)
    health.enter(Phase.SNAPSHOT)
    health.accepting = threading.Thread(target=health.sink_accepted)
    health.accepting.start()

    def enter_watching() -> None:
        health.enter(Phase.WATCHING)
        health.entered.set()

    entering = threading.Thread(target=enter_watching)
    entering.start()
    health.accepting.join()
    entering.join()
    assert health.phase is Phase.WATCHING


def test_a_sink_down_being_fed_is_judged_by_its_silence() -> None:
    """Shown ``sink_down`` while it waits for its sink, a pipeline is alive however long it
    is silent; once a retry's source feeds the reopened sink, silence counts again, as it did
    when that source's phase was shown."""
    health = PipelineHealth(sink="memory-fed-while-down")
    health.enter(Phase.WATCHING)
    health.enter(Phase.SINK_DOWN)
    health.heartbeat -= 100
    assert health.alive(silence_limit=10)
    health.enter(Phase.WATCHING)
    assert health.phase is Phase.SINK_DOWN
    health.heartbeat -= 100
    assert not health.alive(silence_limit=10)
    health.sink_accepted()
    assert health.phase is Phase.WATCHING and health.alive(silence_limit=10)


def lost_counted(sink: str) -> float:
    sample = REGISTRY.get_sample_value("etcd_bridge_sink_data_lost_total", {"sink": sink})
    return sample or 0


class ForgetfulSink(MemorySink):
    """When its ``forget``-th flush fails, loses everything it held (a server restarted
    empty), or with ``last_flush`` only what the flush before made durable (a checkpoint one
    flush behind); lags ``behind`` flushes by its contract."""

    def __init__(self, *, forget: int, last_flush: bool = False, behind: int = 0) -> None:
        super().__init__(failures={forget: FlushFailure(SinkUnavailableError("memory: gone"))})
        self._forget, self._last_flush = forget, last_flush
        self.flushes_behind = behind  # type: ignore[misc]

    def flush(self) -> None:
        if self.flushes + 1 == self._forget:
            kept = len(self.durable) - self.batches[-2] if self._last_flush else 0
            del self.durable[kept:]
        super().flush()


@pytest.mark.parametrize("last_flush", [False, True])
def test_a_sink_found_behind_what_was_flushed_gets_a_lost_snapshot(last_flush: bool) -> None:
    """The sink forgets everything, or its last flush: the source is reopened from what it
    still holds with a snapshot of reason lost first, counted."""
    chunks = history(range(1, 11))
    source = HistorySource(chunks)
    sink = ForgetfulSink(forget=3, last_flush=last_flush)
    stop = threading.Event()
    before = lost_counted("memory")
    under_test = pipeline(sink, source, stop=stop, batch_events=4)
    run(under_test, stop=stop, until=lambda: len(source.resyncs) == 2)
    assert source.resyncs == [None, SnapshotReason.LOST]
    assert (source.tails[1] is None) is not last_flush
    assert lost_counted("memory") == before + 1


def test_a_tail_within_the_sinks_allowed_lag_is_not_a_loss() -> None:
    """A sink whose tail may lag one flush (Kafka's checkpoint) reopens one flush behind:
    a plain resume, not a loss."""
    chunks = history(range(1, 11))
    source = HistorySource(chunks)
    sink = ForgetfulSink(forget=3, last_flush=True, behind=1)
    stop = threading.Event()
    before = lost_counted("memory")
    under_test = pipeline(sink, source, stop=stop, batch_events=4)
    run(under_test, stop=stop, until=lambda: len(sink.durable) == len(chunks))
    assert source.resyncs == [None, None]
    assert sink.durable == events_of(chunks)
    assert lost_counted("memory") == before


def test_a_sink_that_fails_on_open_is_retried() -> None:
    """open() is part of the retried delivery: the pipeline waits for the sink to answer."""
    refusals = [SinkUnavailableError("memory: not yet")]

    class LateSink(MemorySink):
        def open(self) -> Event | None:
            if refusals:
                raise refusals.pop()
            return super().open()

    chunks = history(range(1, 4))
    sink = LateSink()
    stop = threading.Event()
    under_test = pipeline(sink, HistorySource(chunks), stop=stop)
    run(under_test, stop=stop, until=lambda: len(sink.durable) == len(chunks))
    assert not refusals and sink.opened == 1
    assert sink.durable == events_of(chunks)


def test_leadership_lost_between_write_and_flush_flushes_nothing_more() -> None:
    """The lease is lost while the second batch is written: it is not flushed, and nothing
    is written after it."""
    leader = threading.Event()
    leader.set()
    writes = itertools.count(1)

    def lose_on_second_write(_batch: Sequence[Event]) -> None:
        if next(writes) == 2:
            leader.clear()

    sink = MemorySink(on_write=lose_on_second_write)
    chunks = history(range(1, 11))
    stop = threading.Event()
    under_test = pipeline(
        sink, HistorySource(chunks), stop=stop, may_write=leader.is_set, batch_events=3
    )
    with pytest.raises(NotLeaderError) as raised:
        run(under_test, stop=stop)
    assert raised.value.sink == "memory"
    assert len(sink.batches) == 2, "nothing written after the batch in hand"
    assert sink.flushes == 1
    assert sink.durable == events_of(chunks)[: sink.batches[0]]


def test_stop_mid_batch_delivers_the_batch_in_hand_and_leaves_the_rest() -> None:
    """Stop is asked while the second batch is being written: that batch is flushed, the
    pipeline returns, and what was still queued is left for the next start."""
    stop = threading.Event()
    writes = itertools.count(1)

    def stop_on_second_write(_batch: Sequence[Event]) -> None:
        if next(writes) == 2:
            stop.set()

    sink = MemorySink(on_write=stop_on_second_write)
    chunks = history(range(1, 31))
    health = PhaseLog(sink="memory-stop")
    run(pipeline(sink, HistorySource(chunks), stop=stop, health=health, batch_events=2), stop=stop)
    assert len(sink.batches) == sink.flushes == 2
    assert sink.durable == sink.received == events_of(chunks)[: sum(sink.batches)]
    assert len(sink.durable) < len(chunks)
    assert health.phases[-1] is Phase.STOPPED


def test_a_rejected_event_stops_the_pipeline_with_nothing_after_it() -> None:
    sink = MemorySink(failures={2: FlushFailure(SinkRejectedError("memory: too large"))})
    chunks = history(range(1, 11))
    health = PhaseLog(sink="memory-rejected")
    before = errors_counted("memory", "SinkRejectedError")
    stop = threading.Event()
    under_test = pipeline(sink, HistorySource(chunks), stop=stop, health=health, batch_events=2)
    with pytest.raises(SinkRejectedError):
        run(under_test, stop=stop)
    assert len(sink.batches) == sink.flushes == 2, "nothing written after the rejected batch"
    assert sink.opened == 1
    assert sink.durable == events_of(chunks)[: sink.batches[0]]
    assert health.phases[-1] is Phase.FAILED
    assert errors_counted("memory", "SinkRejectedError") == before + 1


def test_a_fatal_source_error_stops_the_pipeline_after_what_came_before() -> None:
    """The reader's failure stops the pipeline; what it had delivered is a prefix of what the
    source read before failing (a batch being gathered when the failure arrives is dropped:
    it is past the durable tail, so the next start reads it again)."""
    chunks = history(range(1, 6))
    source = HistorySource(chunks, failures={4: EtcdRejectedError("etcd: permission denied")})
    sink = MemorySink()
    stop = threading.Event()
    with pytest.raises(EtcdRejectedError):
        run(pipeline(sink, source, stop=stop), stop=stop)
    assert sink.durable == events_of(chunks)[: len(sink.durable)]
    assert len(sink.durable) <= 3
    assert len(source.tails) == 1, "a fatal error is not retried"
