"""The pump's refusal policies (``bridge.refusal``) in-process: ``MemorySink`` refuses the events
whose value is over 50 bytes, naming their positions, and the pipeline stops, delivers them
without their values, or diverts them to a dead-letter file, each exactly once, also across a
restart between the diversion and the next event."""

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.deadletter import DeadLetterFile
from bridge.errors import SinkRejectedError
from bridge.etcd import Chunk
from bridge.events import Event, EventType, OmittedBytes, Op, Position, values_omitted
from bridge.health import Phase
from bridge.metrics import REGISTRY
from bridge.refusal import Refusals
from config.refusal import RefusalPolicy
from tests.unit.doubles import FlushFailure, HistorySource, MemorySink, PhaseLog, events_of, history
from tests.unit.test_pump import pipeline, run

LARGE = b"x" * 100


def too_large(event: Event) -> bool:
    return len(event.value or b"") > 50


def changes(count: int, *, large: set[int]) -> list[Chunk]:
    """One update per revision 1..``count``; those of ``large`` revisions too large."""
    return [
        chunk
        for revision in range(1, count + 1)
        for chunk in history(
            range(revision, revision + 1), value=LARGE if revision in large else b"v"
        )
    ]


def refused_count(policy: RefusalPolicy) -> float:
    labels = {"sink": MemorySink.name, "policy": policy.value}
    return REGISTRY.get_sample_value("etcd_bridge_refused_events_total", labels) or 0


def dead_letters(path: Path) -> list[Event]:
    return [Event.from_json(line) for line in path.read_bytes().splitlines()]


def diverting(path: Path) -> Refusals:
    return Refusals(
        RefusalPolicy.DEAD_LETTER,
        sink=MemorySink.name,
        dead_letters=DeadLetterFile(path, setting="BRIDGE_MEMORY__DEAD_LETTER_PATH"),
    )


def omitting() -> Refusals:
    return Refusals(RefusalPolicy.OMIT_VALUE, sink=MemorySink.name)


def deliver(
    sink: MemorySink,
    chunks: list[Chunk],
    *,
    refusals: Refusals | None,
    until: Callable[[], object] | None = None,
    health: PhaseLog | None = None,
    batch_events: int = 2000,
) -> HistorySource:
    """Run a pipeline over ``chunks`` until ``until`` holds (or it ends by itself)."""
    source, stop = HistorySource(chunks), threading.Event()
    run(
        pipeline(
            sink,
            source,
            stop=stop,
            refusals=refusals,
            health=health,
            batch_events=batch_events,
        ),
        stop=stop,
        until=until,
    )
    return source


@pytest.mark.parametrize("keep", [False, True], ids=["batch dropped", "batch head kept"])
@pytest.mark.parametrize("batch_events", [1, 4, 2000])
def test_omit_value_delivers_the_refused_event_marked_in_its_place(
    keep: bool, batch_events: int
) -> None:
    """The sink refuses revision 5; reopened, it gets the same position without the value, its
    size said, between exactly the events around it, whatever the sink held of the batch."""
    chunks = changes(10, large={5})
    sink = MemorySink(refuse=too_large, keep_before_refused=keep)
    omitted_before = refused_count(RefusalPolicy.OMIT_VALUE)
    deliver(
        sink,
        chunks,
        refusals=omitting(),
        until=lambda: len(sink.durable) == 10,
        batch_events=batch_events,
    )
    events = events_of(chunks)
    assert sink.durable == [values_omitted(e) if e.revision == 5 else e for e in events]
    assert sink.durable[4].omitted_bytes == OmittedBytes(value=len(LARGE), prev_value=None)
    assert sink.durable[4].value is None
    assert [event.position for event in sink.refused] == [Position(5, 0)]
    assert sink.opened == 2, "reopened once, after the refusal"
    assert refused_count(RefusalPolicy.OMIT_VALUE) == omitted_before + 1


def test_dead_letter_diverts_each_refused_event_once_and_goes_on(tmp_path: Path) -> None:
    """Two refused in a row and one later: each in the file with its value whole, the sink
    holding all the others, in order."""
    chunks = changes(10, large={3, 4, 7})
    path = tmp_path / "refused.jsonl"
    sink = MemorySink(refuse=too_large)
    diverted_before = refused_count(RefusalPolicy.DEAD_LETTER)
    deliver(sink, chunks, refusals=diverting(path), until=lambda: len(sink.durable) == 7)
    events = events_of(chunks)
    assert sink.durable == [e for e in events if e.revision not in (3, 4, 7)]
    assert dead_letters(path) == [e for e in events if e.revision in (3, 4, 7)]
    assert all(event.value == LARGE for event in dead_letters(path))
    assert refused_count(RefusalPolicy.DEAD_LETTER) == diverted_before + 3


def test_a_restart_after_a_diversion_neither_diverts_it_again_nor_hands_it_on(
    tmp_path: Path,
) -> None:
    """The last event is diverted, so the sink's tail stays before it; a new pipeline starts
    after it, from the dead-letter file's tail, and the file still holds it once."""
    path = tmp_path / "refused.jsonl"
    sink = MemorySink(refuse=too_large)
    first = changes(5, large={5})
    deliver(
        sink, first, refusals=diverting(path), until=lambda: path.exists() and path.read_bytes()
    )
    assert sink.durable == events_of(first)[:4], "the sink's tail stays before it"
    later = changes(8, large={5})
    source = deliver(sink, later, refusals=diverting(path), until=lambda: len(sink.durable) == 7)
    assert source.tails == [events_of(later)[4]], "the stream resumed after the diverted event"
    assert dead_letters(path) == [events_of(first)[4]]
    assert len(sink.refused) == 1, "the sink was never handed it again"
    assert sink.durable == [e for e in events_of(later) if e.revision != 5]


def test_a_replacement_refused_too_stops_the_pipeline() -> None:
    """The sink refuses the key whatever its value: the pipeline fails, nothing of revision 5
    or after is durable, and the stop is counted."""
    chunks = changes(8, large=set())
    sink = MemorySink(refuse=lambda event: event.key == b"/p/5-0")
    health = PhaseLog(sink=sink.name)
    stopped_before = refused_count(RefusalPolicy.STOP)
    with pytest.raises(SinkRejectedError) as refused:
        deliver(sink, chunks, refusals=omitting(), health=health, batch_events=1)
    assert refused.value.position == Position(5, 0)
    assert [event.omitted_bytes for event in sink.refused] == [None, OmittedBytes(1, None)]
    assert sink.durable == events_of(chunks)[:4]
    assert health.phases[-1] is Phase.FAILED
    assert refused_count(RefusalPolicy.STOP) == stopped_before + 1


def test_an_event_without_values_cannot_be_omitted_and_stops() -> None:
    delete = Event(3, 0, EventType.DELETE, Op.DELETE, b"/p/gone", mod_revision=3)
    chunks = [*changes(2, large=set()), Chunk(events=[delete], revision=3, size=7)]
    sink = MemorySink(refuse=lambda event: event.key == b"/p/gone")
    stopped_before = refused_count(RefusalPolicy.STOP)
    with pytest.raises(SinkRejectedError):
        deliver(sink, chunks, refusals=omitting(), batch_events=1)
    assert sink.durable == events_of(chunks)[:2]
    assert refused_count(RefusalPolicy.STOP) == stopped_before + 1


def test_a_refusal_of_no_one_event_stops_whatever_the_policy(tmp_path: Path) -> None:
    """A revoked permission names no position: no policy applies, nothing is counted."""
    chunks = changes(4, large=set())
    counts = [refused_count(policy) for policy in RefusalPolicy]
    for refusals in (omitting(), diverting(tmp_path / "refused.jsonl")):
        sink = MemorySink(failures={1: FlushFailure(SinkRejectedError("memory: ACL revoked"))})
        with pytest.raises(SinkRejectedError, match="ACL revoked"):
            deliver(sink, chunks, refusals=refusals)
        assert sink.opened == 1, "not reopened"
    assert [refused_count(policy) for policy in RefusalPolicy] == counts
    assert not (tmp_path / "refused.jsonl").read_bytes()


def test_stop_is_the_default_and_is_counted() -> None:
    chunks = changes(6, large={4})
    sink = MemorySink(refuse=too_large)
    stopped_before = refused_count(RefusalPolicy.STOP)
    with pytest.raises(SinkRejectedError):
        deliver(sink, chunks, refusals=None, batch_events=1)
    assert sink.durable == events_of(chunks)[:3]
    assert refused_count(RefusalPolicy.STOP) == stopped_before + 1
