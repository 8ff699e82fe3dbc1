"""The contract checks: each one proves one promise of ``bridge.sink`` for one sink.

A check is a function of a fresh ``SinkHarness``. It delivers a ``History`` through the pump
stand-in, in stages that each end with the sink closed and a new instance opened (a restart),
and compares what the destination holds, read back by the harness, with what it must hold.
A violation raises ``ContractViolation`` (an ``AssertionError``, so any test runner reports
it as a failure with its message); a check the harness cannot support raises
``NotApplicable``. No check imports a test framework.

What "must hold" means depends on the sink's ``guarantee``: an ``exactly-once`` sink holds
every delivered event once, in order; any other may hold a replayed stretch twice, but loses
nothing and reorders nothing.
"""

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Self

from bridge.contract.harness import PREFIX, SinkHarness
from bridge.contract.history import History
from bridge.contract.pump import after, batches, deliver, pump
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, SnapshotReason, values_omitted
from bridge.sink import Sink

EXACTLY_ONCE = "exactly-once"

Check = Callable[[SinkHarness], None]


class ContractViolation(AssertionError):  # noqa: N818 - reads as what it is, like AssertionError
    """The sink broke the contract; the message says how."""


class NotApplicable(Exception):  # noqa: N818 - a verdict, not an error
    """The harness cannot run this check (no outage, nothing the sink refuses)."""


def check_id(check: Check) -> str:
    """A check's name, for test ids: ``reopen_returns_the_last_event``."""
    return check.__name__


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


def _at(event: Event | None) -> str:
    return "nothing" if event is None else f"{event.position} ({event.op.value})"


def _assert_holds(harness: SinkHarness, events: Sequence[Event], *, when: str) -> None:
    """The destination holds exactly ``events`` (see the module docstring for other
    guarantees)."""
    got, wanted = harness.delivered(), harness.expected(events)
    if got == wanted:
        return
    guarantee = harness.make_sink().guarantee
    if guarantee != EXACTLY_ONCE and isinstance(got, list) and _first_seen(got) == wanted:
        return
    raise ContractViolation(f"{when}: the destination holds {_difference(got, wanted)}")


def _first_seen(events: list[Any]) -> list[Any]:
    """``events`` without repeats of a position already seen: what an at-least-once
    consumer keeps."""
    seen: set[object] = set()
    kept = []
    for event in events:
        position = event.position if isinstance(event, Event) else event
        if position not in seen:
            seen.add(position)
            kept.append(event)
    return kept


def _difference(got: object, wanted: object) -> str:
    if isinstance(got, list) and isinstance(wanted, list):
        for number, (one, other) in enumerate(zip(got, wanted, strict=False)):
            if one != other:
                return f"{len(got)} items, expected {len(wanted)}; #{number} is {one}, not {other}"
        return f"{len(got)} items, expected {len(wanted)}"
    if isinstance(got, dict) and isinstance(wanted, dict):
        missing = sorted(set(wanted) - set(got))[:3]
        extra = sorted(set(got) - set(wanted))[:3]
        changed = sorted(k for k in set(got) & set(wanted) if got[k] != wanted[k])[:3]
        return f"{len(got)} keys, expected {len(wanted)}: missing {missing}, extra {extra}, " + (
            f"different {changed}"
        )
    return f"{got!r}, expected {wanted!r}"


def _restarts(harness: SinkHarness, events: Sequence[Event], *, stops: Sequence[int]) -> None:
    """Deliver ``events`` in stages, each by a new sink instance (a restart) that must open
    at the last event of the previous stage and end after ``events[:stop]``; then a last new
    instance must open at the last event. What the destination holds is checked after each
    stage."""
    previous: Event | None = None
    for stop in [*stops, len(events)]:
        with harness.make_sink() as sink:
            tail = deliver(sink, events[:stop])
        _expect(tail == previous, f"open() after a restart returned {tail}, not {previous}")
        previous = events[stop - 1] if stop else None
        _assert_holds(harness, events[:stop], when=f"after a stage ending at {_at(previous)}")
    with harness.make_sink() as sink:
        tail = sink.open()
    _expect(tail == events[-1], f"open() after the last stage returned {tail}, not {events[-1]}")


def _mixed_events() -> list[Event]:
    """A snapshot of a few keys, then puts, updates, deletes and transactions."""
    history = History(prefix=PREFIX)
    for number in range(10):
        history.put(PREFIX + b"seed/%02d" % number, b"s%d" % number)
    events = history.snapshot()
    events += history.put(PREFIX + b"a", b"1")
    events += history.txn([(PREFIX + b"t1", b"x"), (PREFIX + b"t2", b"y"), (PREFIX + b"a", None)])
    events += history.random_changes(count=50, seed=3, keys=24)
    return events


# --- the checks ------------------------------------------------------------------------------


def empty_sink_has_no_tail(harness: SinkHarness) -> None:
    """``open()`` on a destination that holds nothing returns None, and opening writes
    nothing a consumer would see."""
    with harness.make_sink() as sink:
        tail = sink.open()
    _expect(tail is None, f"open() of an empty destination returned {tail}")
    _assert_holds(harness, [], when="after open() of an empty destination")


def reopen_returns_the_last_event(harness: SinkHarness) -> None:
    """Write, flush, restart: ``open()`` returns the last event flushed, bytes exact, and the
    destination holds every event once, in order."""
    events = _mixed_events()
    _restarts(harness, events, stops=[len(events) // 3, 2 * len(events) // 3])


def replay_overlapping_the_tail_adds_nothing(harness: SinkHarness) -> None:
    """A restart after events were written but never flushed: the new instance may open at
    any of them (or at the last flushed one, if it then skips what it holds past that); the
    pump replays from there, and nothing is held twice or lost."""
    events = _mixed_events()
    flushed, written = len(events) // 3, 2 * len(events) // 3
    with harness.make_sink() as sink:
        deliver(sink, events[:flushed])
        for batch in batches(events[flushed:written]):
            sink.write(batch)  # never flushed: the crash takes all, some or none of them
    with harness.make_sink() as sink:
        tail = sink.open()
        _expect(
            tail in events[:written],
            f"open() after a crash returned {_at(tail)}, which was not written",
        )
        for batch in batches(after(events, tail)):
            sink.write(batch)
            sink.flush()
    _assert_holds(harness, events, when=f"after a replay from {_at(tail)}")


class _FailingFlushes(Sink):
    """Wraps a sink; its flushes numbered in ``before`` raise ``SinkUnavailableError`` without
    flushing (the connection dropped with the batch on its way), those in ``later`` flush and
    then raise (the reply lost once the server had applied it)."""

    def __init__(self, inner: Sink, *, before: set[int], later: set[int]) -> None:
        self.inner = inner
        self.before = before
        self.later = later
        self.flushes = 0
        self.failures: list[str] = []

    @classmethod
    def from_settings(cls, settings: Any, *, context: Any) -> Self:
        raise TypeError("a wrapper is built around a sink, not from settings")

    def open(self) -> Event | None:
        return self.inner.open()

    def write(self, batch: Sequence[Event]) -> None:
        self.inner.write(batch)

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes in self.before:
            self.failures.append("before")
            raise SinkUnavailableError("contract: connection lost before the flush")
        self.inner.flush()
        if self.flushes in self.later:
            self.failures.append("after")
            raise SinkUnavailableError("contract: reply lost after the flush")

    def close(self) -> None:
        self.inner.close()


def unavailable_mid_flush_resumes_from_the_tail(harness: SinkHarness) -> None:
    """``SinkUnavailableError`` from a flush, with the batch not sent or sent and applied: the
    pump closes and reopens the same instance, which must return its true tail; resuming
    from there duplicates and loses nothing."""
    events = _mixed_events()
    with harness.make_sink() as inner:
        flaky = _FailingFlushes(inner, before={3}, later={6})
        reopens = pump(flaky, events)
    _expect(
        reopens == 2 and flaky.failures == ["before", "after"],
        "the failures were not injected as planned",
    )
    with harness.make_sink() as sink:
        tail = sink.open()
    _expect(tail == events[-1], f"open() after the reopens returned {tail}, not {events[-1]}")
    _assert_holds(harness, events, when="after two flushes failed")


def server_outage_resumes_from_the_tail(harness: SinkHarness) -> None:
    """The server becomes unavailable, then a batch is written and flushed: ``write`` or
    ``flush`` raises ``SinkUnavailableError`` (neither returns as if the batch were durable,
    hangs, or calls it permanent); once the server is back, the pump's close and reopen of the
    same instance resumes from the tail, exactly once. The batch is written inside the outage
    so that this holds for a sink that sends on ``write`` as for one that buffers until
    ``flush``."""
    outage = harness.outage()
    if outage is None:
        raise NotApplicable("the harness cannot make the server unavailable")
    events = _mixed_events()
    flushed = len(events) // 2
    with harness.make_sink() as sink:
        deliver(sink, events[:flushed])
        with outage:
            try:
                sink.write(events[flushed : flushed + 20])
                sink.flush()
            except SinkUnavailableError:
                pass
            else:
                raise ContractViolation(
                    "write() and flush() returned while the server was unavailable"
                )
        sink.close()
        pump(sink, events)
    with harness.make_sink() as sink:
        tail = sink.open()
    _expect(tail == events[-1], f"open() after the outage returned {tail}, not {events[-1]}")
    _assert_holds(harness, events, when="after the outage")


def rejected_stops_before_it(harness: SinkHarness) -> None:
    """An event the sink refuses for good: ``SinkRejectedError`` naming its revision and
    carrying its position (for the pipeline's refusal policy), and nothing at or after it is
    durable (the tail and the destination stop before it), while every batch flushed before
    it stays."""
    events, number, poison = _poisoned(harness)
    poisoned = [*events[:number], poison, *events[number + 1 :]]
    flushed = 0
    with harness.make_sink() as sink, contextlib.suppress(SinkRejectedError):
        sink.open()
        for batch in batches(poisoned):
            try:
                sink.write(batch)
                sink.flush()
            except SinkRejectedError as error:
                _expect(
                    str(poison.revision) in str(error),
                    f"{error!r} does not name revision {poison.revision}",
                )
                _expect(
                    error.position == poison.position,
                    f"{error!r} gives the position {error.position}, not {poison.position}: "
                    "an event refused for itself names its position, so that "
                    "ON_REFUSED can go past it",
                )
                raise
            flushed += len(batch)
    _expect(flushed <= number, "nothing was refused: every batch was flushed")
    with harness.make_sink() as sink:
        tail = sink.open()
    _expect(
        tail is None or tail.position < poison.position,
        f"open() after the refusal returned {_at(tail)}, at or after {_at(poison)}",
    )
    got = harness.delivered()
    _expect(
        any(got == harness.expected(events[:end]) for end in range(flushed, number + 1)),
        f"the destination holds more than what came before {_at(poison)}, or lost a flushed "
        f"batch: {_difference(got, harness.expected(events[:number]))}",
    )


def _poisoned(harness: SinkHarness) -> tuple[list[Event], int, Event]:
    """Mixed events, the number of a put among their last third, and the version of it the
    sink refuses for good; NotApplicable if it refuses nothing."""
    events = _mixed_events()
    number = next(
        n for n in range(2 * len(events) // 3, len(events)) if events[n].type is EventType.PUT
    )
    poison = harness.poison(events[number])
    if poison is None:
        raise NotApplicable("the sink refuses nothing the pump can hand it")
    return events, number, poison


def reopened_after_a_refusal_takes_the_replacement(harness: SinkHarness) -> None:
    """What ``ON_REFUSED=omit_value`` relies on (``bridge.refusal``): after
    ``SinkRejectedError`` naming an event, the pump closes and reopens the same instance and
    delivers from the tail it reports, the refused event replaced by itself without its values
    (``values_omitted``). The sink takes the replacement and everything after it, exactly
    once: nothing of the refusal lingers in the reopened instance."""
    events, number, poison = _poisoned(harness)
    poisoned = [*events[:number], poison, *events[number + 1 :]]
    replaced = [*events[:number], values_omitted(poison), *events[number + 1 :]]
    with harness.make_sink() as sink:
        sink.open()
        try:
            for batch in batches(poisoned):
                sink.write(batch)
                sink.flush()
        except SinkRejectedError as error:
            _expect(error.position == poison.position, f"{error!r} names no position")
        else:
            raise ContractViolation("nothing was refused: every batch was flushed")
        sink.close()
        tail = sink.open()
        for batch in batches(after(replaced, tail)):
            sink.write(batch)
            sink.flush()
    _assert_holds(harness, replaced, when=f"after {_at(poison)} was replaced")


def binary_keys_and_values_round_trip(harness: SinkHarness) -> None:
    """Keys and values that are not UTF-8, empty values, a NUL, a newline, JSON look-alikes:
    held bytes exact, and the tail read back bytes exact (the last event is binary)."""
    history = History(prefix=PREFIX)
    events = history.snapshot()
    events += history.put(PREFIX + b"\xff\xfe\x00key", b"\x80\x81 not utf-8 \x00")
    events += history.put(PREFIX + "ключ/ünï".encode(), "значение".encode())
    events += history.put(PREFIX + b"empty", b"")
    events += history.put(PREFIX + b"line\nbreak", b'{"revision": 1}\n')
    events += history.txn([(PREFIX + b"\xc3\x28", b"\xff" * 300), (PREFIX + b"empty", None)])
    events += history.put(PREFIX + b"\xfe last", b"\x00\xff")
    _restarts(harness, events, stops=[len(events) - 1])


def markers_frame_snapshots_and_resyncs(harness: SinkHarness) -> None:
    """The initial snapshot and a resync after compaction (``snapshot_begin``, entries,
    ``snapshot_end``, all at one revision) are held as sent; a restart at a marker or in
    the middle of a snapshot resumes exactly there."""
    history = History(prefix=PREFIX)
    for number in range(8):
        history.put(PREFIX + b"k%02d" % number, b"initial")
    events = history.snapshot()
    initial_end = len(events)
    events += history.random_changes(count=15, seed=5, keys=12)
    history.random_changes(count=10, seed=6, keys=12)  # compacted away: never delivered
    resync = len(events)
    events += history.snapshot(reason=SnapshotReason.COMPACTED)
    events += history.put(PREFIX + b"after", b"resync")
    _restarts(harness, events, stops=[initial_end, resync + 1, resync + 4])


def revision_split_across_batches(harness: SinkHarness) -> None:
    """One revision (a transaction of 20 changes) cut across batches and restarts: the tail
    may be any change inside it (``Event.more`` set), and the next instance resumes at the
    next index. A sink that applies revisions whole shows none of it until the last."""
    history = History(prefix=PREFIX)
    for number in range(6):
        history.put(PREFIX + b"old/%d" % number, b"old")
    events = history.snapshot()
    events += history.put(PREFIX + b"before", b"1")
    start = len(events)
    changes: list[tuple[bytes, bytes | None]] = [(PREFIX + b"old/%d" % n, None) for n in range(3)]
    changes += [(PREFIX + b"new/%02d" % n, b"txn") for n in range(17)]
    events += history.txn(changes)
    events += history.put(PREFIX + b"after", b"2")
    _restarts(harness, events, stops=[start + 1, start + 9, start + 19])


CHECKS: tuple[Check, ...] = (
    empty_sink_has_no_tail,
    reopen_returns_the_last_event,
    replay_overlapping_the_tail_adds_nothing,
    unavailable_mid_flush_resumes_from_the_tail,
    server_outage_resumes_from_the_tail,
    rejected_stops_before_it,
    reopened_after_a_refusal_takes_the_replacement,
    binary_keys_and_values_round_trip,
    markers_frame_snapshots_and_resyncs,
    revision_split_across_batches,
)
"""Every check, in the order a test should run them (the cheapest first)."""
