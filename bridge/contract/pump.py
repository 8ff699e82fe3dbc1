"""A stand-in for the pump: hands a sink events the way ``bridge.pump`` does, in-process.

What the pump promises a sink, and this stand-in keeps: it opens the sink and takes the tail
it returns as the durable position; every batch holds events past that tail, positions
strictly increasing; a batch may end anywhere, inside a revision (a revision handed over in
pieces) or inside a snapshot, so the stand-in cuts batches by a cycle of sizes that falls
everywhere rather than at revision boundaries; each batch is written, then flushed; on
``SinkUnavailableError`` the same sink instance is closed, reopened and fed again from its new
tail. It never retries a ``SinkRejectedError``.
"""

import itertools
from collections.abc import Iterator, Sequence

from bridge.errors import SinkUnavailableError
from bridge.events import Event, past
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


def pump(
    sink: Sink, events: Sequence[Event], *, sizes: Sequence[int] = SIZES, reopens: int = 5
) -> int:
    """``deliver``, reopening the same instance after ``SinkUnavailableError`` as the pump does,
    at most ``reopens`` times (then the error is raised); returns how many reopens it took."""
    attempt = 0
    while True:
        try:
            deliver(sink, events, sizes=sizes)
        except SinkUnavailableError:
            if attempt >= reopens:
                raise
            attempt += 1
            sink.close()
        else:
            return attempt
