"""Pure helpers of the pump: page sizing, chunking watch responses, the position filter,
the queue bound, backoff."""

import queue
import threading

import pytest
from pyetcd.etcdrpc.kv_pb2 import Event as RawEvent
from pyetcd.etcdrpc.kv_pb2 import KeyValue

from bridge.errors import PreviousValueCompactedError
from bridge.etcd import Chunk, EventChunker
from bridge.events import Event, EventType, Op, Position, past
from bridge.pump import _ChunkQueue
from bridge.retry import Backoff
from bridge.snapshot import _next_page_keys
from config.keyspace import KeySpace


def test_pages_are_sized_by_bytes() -> None:
    full = 100_000
    assert _next_page_keys(keys=1000, size=100_000, page_bytes=1_000_000, limit=full) == 10_000
    assert _next_page_keys(keys=10, size=10_000_000, page_bytes=1_000_000, limit=full) == 1
    assert _next_page_keys(keys=1000, size=1000, page_bytes=8_000_000, limit=full) == full
    assert _next_page_keys(keys=0, size=0, page_bytes=1, limit=full) == full


def test_pages_start_at_one_key_and_grow_from_what_was_measured() -> None:
    """Small keys reach full pages in three requests; a 1 MiB value keeps pages small."""
    limits = [1]
    for _ in range(4):
        keys = limits[-1]
        limits.append(_next_page_keys(keys=keys, size=keys * 120, page_bytes=4 << 20, limit=keys))
    assert limits == [1, 64, 4096, 34_952, 34_952]
    assert _next_page_keys(keys=1, size=1 << 20, page_bytes=4 << 20, limit=1) == 4
    assert _next_page_keys(keys=4, size=6 << 20, page_bytes=4 << 20, limit=4) == 2


def event(revision: int, index: int) -> Event:
    return Event(revision=revision, index=index, type=EventType.PUT, op=Op.UPDATE, key=b"k")


def test_filter_drops_what_the_sink_holds() -> None:
    events = [event(5, 0), event(5, 1), event(6, 0)]
    assert past(events, None) == events
    assert past(events, Position(4, 9)) == events
    assert past(events, Position(5, 0)) == events[1:]
    assert past(events, Position(6, 0)) == []


def test_backoff_grows_caps_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, factor=2.0)
    delays = [backoff.next_delay() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1.0 and 2.0 <= delays[4] <= 4.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    stop = threading.Event()
    stop.set()
    assert Backoff(initial=10).wait(stop) is False


def raw(
    revision: int, key: bytes, *, delete: bool = False, previous: bool = True, version: int = 2
) -> RawEvent:
    """A watch event as etcd sends it, with its previous value unless not ``previous`` (as etcd
    sends a create, ``version`` 1, or a change whose previous revision it compacted)."""
    event = RawEvent(
        type=RawEvent.DELETE if delete else RawEvent.PUT,
        kv=KeyValue(
            key=key, value=b"" if delete else b"new", mod_revision=revision, version=version
        ),
    )
    if previous:
        event.prev_kv.CopyFrom(KeyValue(key=key, value=b"old", mod_revision=1, version=1))
    return event


def chunk(chunker: EventChunker, raws: list[RawEvent], *, ends: bool = True) -> Chunk:
    return chunker.chunk(raws, ends_revision=ends, header=99)


def positions(events: list[Event]) -> list[tuple[int, int, bool]]:
    return [(event.revision, event.index, event.more) for event in events]


def test_more_marks_all_but_the_last_change_of_each_revision() -> None:
    chunker = EventChunker(keep=None)
    first = chunk(chunker, [raw(5, b"/a"), raw(6, b"/a"), raw(6, b"/b"), raw(7, b"/c")])
    assert positions(first.events) == [(5, 0, False), (6, 0, True), (6, 1, False), (7, 0, False)]
    assert first.revision == 99
    assert first.size == 4 * (2 + 3 + 3)


def test_a_revision_continues_across_chunks_and_fragments() -> None:
    chunker = EventChunker(keep=None)
    pieces = [[raw(8, b"/k%d" % n, delete=True) for n in range(m, m + 3)] for m in (0, 3, 6)]
    first = chunk(chunker, pieces[0], ends=False)
    second = chunk(chunker, pieces[1], ends=False)
    last = chunk(chunker, pieces[2], ends=True)
    events = first.events + second.events + last.events
    assert [event.index for event in events] == list(range(9)), "numbered across pieces"
    assert [event.more for event in events] == [True] * 8 + [False]
    assert len(first.events) == 2, "the last event is held until more of its revision comes"
    assert first.size == 2 * (3 + 3) and last.size == 4 * (3 + 3)
    assert events[0].type is EventType.DELETE and events[0].prev_value == b"old"


def test_filtered_keys_are_dropped_before_numbering() -> None:
    """Excluded keys take no index: positions are the same whatever etcd interleaves."""
    chunker = EventChunker(keep=KeySpace.of([b"/a/"], exclude=["*.lock"]))
    chunked = chunk(
        chunker, [raw(4, b"/a/x.lock"), raw(4, b"/a/1"), raw(4, b"/a/y.lock"), raw(4, b"/a/2")]
    )
    assert [(event.key, event.index) for event in chunked.events] == [(b"/a/1", 0), (b"/a/2", 1)]
    assert [event.more for event in chunked.events] == [True, False]


def test_more_is_unset_when_the_rest_of_a_revision_is_dropped_keys() -> None:
    """With several prefixes, a revision whose last changes are between them still ends."""
    chunker = EventChunker(keep=KeySpace.of([b"/a/", b"/c/"]))
    first = chunk(chunker, [raw(4, b"/a/1"), raw(4, b"/b/1")], ends=False)
    last = chunk(chunker, [raw(4, b"/b/2"), raw(4, b"/c/1"), raw(4, b"/b/3")], ends=True)
    assert positions(first.events + last.events) == [(4, 0, True), (4, 1, False)]
    tail = chunk(chunker, [raw(5, b"/a/2"), raw(5, b"/b/4")], ends=False)
    assert tail.events == []
    assert positions(chunk(chunker, [raw(6, b"/a/3")]).events) == [(5, 0, False), (6, 0, False)]


@pytest.mark.parametrize("delete", [False, True], ids=["update", "delete"])
def test_a_change_without_its_previous_value_is_history_lost(delete: bool) -> None:
    chunker = EventChunker(keep=KeySpace.of([b"/a/"]), endpoint="http://e:2379")
    created = chunk(chunker, [raw(4, b"/a/1", previous=False, version=1), raw(5, b"/a/1")])
    assert [event.op for event in created.events] == [Op.CREATE, Op.UPDATE]
    assert chunk(chunker, [raw(6, b"/b/1", delete=delete, previous=False)]).events == []
    with pytest.raises(PreviousValueCompactedError) as raised:
        chunk(chunker, [raw(7, b"/a/1"), raw(8, b"/a/2", delete=delete, previous=False)])
    assert raised.value.key == b"/a/2" and raised.value.revision == 8
    assert str(raised.value) == (
        "etcd http://e:2379 sent the change of key '/a/2' at revision 8 without its previous "
        "value: it compacted revision 7 while the watch lagged"
    )


def test_the_queue_is_bounded_by_bytes_too() -> None:
    big = Chunk(events=[Event(1, 0, EventType.PUT, Op.CREATE, b"k")], revision=1, size=600)
    chunks = _ChunkQueue(max_events=1000, max_bytes=1000)
    chunks.put(big, timeout=0)
    chunks.put(big, timeout=0)
    with pytest.raises(queue.Full):
        chunks.put(big, timeout=0)
    assert chunks.get(timeout=0) is big
    chunks.put(big, timeout=0)
    huge = Chunk(events=[], revision=1, size=10_000)
    drained = _ChunkQueue(max_events=1000, max_bytes=1000)
    drained.put(huge, timeout=0)  # an empty queue takes any chunk
    assert drained.get(timeout=0) is huge
