"""Pure helpers of the pump: page sizing, the position filter, backoff."""

import threading
from types import SimpleNamespace

from bridge.etcd import revision_cuts
from bridge.events import Event, EventType, Op, Position
from bridge.pump import _after
from bridge.retry import Backoff
from bridge.snapshot import _next_page_keys


def test_pages_are_sized_by_bytes() -> None:
    assert _next_page_keys(keys=1000, size=100_000, page_bytes=1_000_000) == 10_000
    assert _next_page_keys(keys=10, size=10_000_000, page_bytes=1_000_000) == 100
    assert _next_page_keys(keys=1000, size=1000, page_bytes=8_000_000) == 100_000
    assert _next_page_keys(keys=0, size=0, page_bytes=1) == 100_000


def event(revision: int, index: int) -> Event:
    return Event(revision=revision, index=index, type=EventType.PUT, op=Op.UPDATE, key=b"k")


def test_filter_drops_what_the_sink_holds() -> None:
    events = [event(5, 0), event(5, 1), event(6, 0)]
    assert _after(events, None) == events
    assert _after(events, Position(4, 9)) == events
    assert _after(events, Position(5, 0)) == events[1:]
    assert _after(events, Position(6, 0)) == []


def test_backoff_grows_caps_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, factor=2.0)
    delays = [backoff.next_delay() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1.0 and 2.0 <= delays[4] <= 4.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    stop = threading.Event()
    stop.set()
    assert Backoff(initial=10).wait(stop) is False


def test_watch_responses_are_cut_between_revisions() -> None:
    def raw(*revisions: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(kv=SimpleNamespace(mod_revision=r)) for r in revisions]

    assert list(revision_cuts(raw(1, 1, 2, 2, 2, 3, 4), size=3)) == [(0, 5), (5, 7)]
    assert list(revision_cuts(raw(1, 2, 3, 4), size=2)) == [(0, 2), (2, 4)]
    assert list(revision_cuts(raw(5, 5, 5), size=1)) == [(0, 3)], "one revision is never split"
    assert list(revision_cuts([], size=2)) == []
