"""A stand-in for the pump: hands a sink events the way ``bridge.pump`` does, in-process.

What the pump promises a sink, and this stand-in keeps: it opens the sink and takes the tail
it returns as the durable position; every batch holds events past that tail, positions
strictly increasing; a batch may end anywhere, inside a revision (a revision handed over in
pieces) or inside a snapshot, so the stand-in cuts batches by a cycle of sizes that falls
everywhere rather than at revision boundaries; each batch is written, then flushed; on
``SinkUnavailableError`` the sink is closed, reopened and fed again from its new tail, after
a backoff, through ``bridge.retry.Retry`` like the pump (``deliver_with_retries``; ``pump`` is
its form for the checks: the same instance, no delay, a few reopens). It never retries a
``SinkRejectedError``.
"""

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from bridge.errors import BridgeError
from bridge.events import Event, past
from bridge.retry import Backoff, Retry
from bridge.sink import Sink

SIZES = (7, 1, 30, 3, 12)
"""Batch sizes the stand-in cycles through: small and uneven, so that batches end inside
transactions and snapshots as well as between revisions."""


def after(events: Sequence[Event], tail: Event | None) -> list[Event]:
    """The events past ``tail``'s position: what the pump hands a sink that returned ``tail``
    (``bridge.events.past``, the pump's own rule)."""
    return past(list(events), None if tail is None else tail.position)


def batches(events: Sequence[Event], *, sizes: Sequence[int] = SIZES) -> Iterator[list[Event]]:
    """``events`` cut into consecutive batches of the cycled ``sizes``, wherever they fall."""
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(events):
            return
        yield list(events[start : start + size])
        start += size


def feed(sink: Sink, events: Sequence[Event], *, sizes: Sequence[int] = SIZES) -> None:
    """Write and flush ``events`` batch by batch on an open ``sink``, as they are: nothing the
    sink holds is skipped, so a test can replay on purpose. Errors are the sink's."""
    for batch in batches(events, sizes=sizes):
        sink.write(batch)
        sink.flush()


def deliver(sink: Sink, events: Sequence[Event], *, sizes: Sequence[int] = SIZES) -> Event | None:
    """Open ``sink``, then ``feed`` it the events past the tail it returned; that tail is
    returned. Errors are the sink's (nothing is retried)."""
    tail = sink.open()
    feed(sink, after(events, tail), sizes=sizes)
    return tail


def deliver_with_retries(
    make: Callable[[], Sink],
    events: Sequence[Event],
    *,
    sizes: Sequence[int] = SIZES,
    backoff: Backoff | None = None,
    reopens: int | None = None,
    patience: float = 60.0,
    pace: float = 0.0,
    on_error: Callable[[BridgeError], None] | None = None,
) -> int:
    """Deliver what ``events`` holds past the durable tail as the bridge does across failures;
    returns how many times the sink was reopened.

    A sink from ``make`` is opened and fed the events past the tail it returns, batch by batch;
    after ``SinkUnavailableError`` it is closed, ``on_error`` is told, ``backoff`` (by default
    0.05 s doubling up to 0.5 s, reset by every batch flushed) is waited, and a sink from
    ``make()`` starts over from the tail it reads back: the same instance, as the pump reopens
    one, or a new one, as a restarted process would. The error is raised after ``reopens``
    reopens (None: no bound), or once the sink has kept failing for ``patience`` seconds.
    ``pace`` seconds are slept after each batch: a writer slowed down on purpose, so that a
    test's kill lands in the middle of the stream (never to wait for a condition).
    """
    failures = 0
    failing_since: float | None = None

    def delivered() -> Iterator[Event]:
        nonlocal failing_since
        with make() as sink:
            for batch in batches(after(events, sink.open()), sizes=sizes):
                sink.write(batch)
                sink.flush()
                failing_since = None
                yield batch[-1]
                if pace:
                    time.sleep(pace)

    def failed(error: BridgeError) -> None:
        nonlocal failures, failing_since
        failures += 1
        now = time.monotonic()
        failing_since = now if failing_since is None else failing_since
        if (reopens is not None and failures > reopens) or now - failing_since > patience:
            raise error
        if on_error is not None:
            on_error(error)

    retry = Retry(backoff or Backoff(initial=0.05, maximum=0.5), stop=threading.Event())
    for _ in retry.iterate(delivered, on_error=failed):
        pass
    return failures


def pump(
    sink: Sink, events: Sequence[Event], *, sizes: Sequence[int] = SIZES, reopens: int = 5
) -> int:
    """``deliver_with_retries`` on one instance, reopened at once after
    ``SinkUnavailableError`` (the checks inject their failures, or end an outage before they
    call it), at most ``reopens`` times; returns how many reopens it took. The sink is closed
    when it returns."""
    return deliver_with_retries(
        lambda: sink,
        events,
        sizes=sizes,
        backoff=Backoff(initial=0.0, maximum=0.0),
        reopens=reopens,
    )
