"""``bridge.wire.WatchResponse``: a watch response walked and parsed a run at a time reads
as the same response parsed whole."""

from typing import Any

import pytest

from bridge.etcd import _EVENTS_FIELD, _WatchResponse
from bridge.wire import WatchResponse


def response(events: int, *, value_bytes: int = 10, fragment: bool = False) -> Any:
    message = _WatchResponse(watch_id=7, fragment=fragment)
    message.header.revision = 5000
    for number in range(events):
        event = message.events.add()
        event.kv.key = b"/app/key-%06d" % number
        event.kv.value = b"v" * value_bytes
        event.kv.mod_revision = 1000 + number // 3
        event.prev_kv.value = b"p" * value_bytes
    return message


def walked(raw: bytes, *, chunk_events: int, whole_bytes: int = 0) -> WatchResponse:
    return WatchResponse(
        raw,
        parse=_WatchResponse.FromString,
        events_field=_EVENTS_FIELD,
        chunk_events=chunk_events,
        whole_bytes=whole_bytes,
    )


@pytest.mark.parametrize("whole_bytes", [0, 1 << 30], ids=["walked", "whole"])
@pytest.mark.parametrize(
    ("events", "value_bytes"),
    [(0, 10), (1, 10), (7, 10), (9, 10), (10, 200), (25, 20_000), (3, 3_000_000)],
)
def test_the_events_come_in_order_in_runs(events: int, value_bytes: int, whole_bytes: int) -> None:
    """Every event once, in order, at most ``chunk_events`` at a time; lengths of one, two
    and three varint bytes (short, 200-byte and multi-megabyte values)."""
    message = response(events, value_bytes=value_bytes, fragment=True)
    lazy = walked(message.SerializeToString(), chunk_events=3, whole_bytes=whole_bytes)
    runs = [list(run) for run in lazy.chunks()]
    assert [event for run in runs for event in run] == list(message.events)
    assert all(1 <= len(run) <= 3 for run in runs)
    assert len(runs) == lazy.chunk_count == -(-events // 3)
    assert lazy.total == events
    assert lazy.last_event == (message.events[-1] if events else None)
    assert lazy.head.header.revision == 5000
    assert lazy.head.watch_id == 7
    assert lazy.head.fragment


def test_fields_after_the_events_are_read_too() -> None:
    """Protobuf allows fields in any order (and merges a message's encodings): fields
    between two events end a run there."""
    first, second = response(2), _WatchResponse(fragment=True, compact_revision=12)
    raw = first.SerializeToString() + second.SerializeToString() + response(1).SerializeToString()
    lazy = walked(raw, chunk_events=100)
    assert lazy.chunk_count == 2
    assert [len(run) for run in lazy.chunks()] == [2, 1]
    assert lazy.total == 3
    assert lazy.head.fragment and lazy.head.compact_revision == 12
    assert lazy.head.header.revision == 5000


@pytest.mark.parametrize("cut", [1, 5, 100])
def test_a_cut_response_is_refused(cut: int) -> None:
    raw = response(3, value_bytes=50).SerializeToString()
    with pytest.raises((ValueError, IndexError)):
        walked(raw[:-cut], chunk_events=2)
