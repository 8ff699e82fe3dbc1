"""One stream out of several, each already in position order: the k-way merge sink readers use.

A sink that spreads a pipeline over several ordered logs (Kafka partitions, Redis streams
routed by key, NATS subjects) keeps each log in position order, not the whole. Reading it back
as one stream is a k-way merge: hold the next event of every log, yield the smallest, refill
from its log. Memory is one event per log plus whatever page each log's iterator buffers,
whatever the logs hold.

Markers (``snapshot_begin``/``snapshot_end``) are written to every log, so that a consumer of
one log sees every resync: the same marker then comes out of the merge once per log, side by
side (equal positions), and only the first is kept. A change is never dropped, even one equal
to the one before it: a change in two logs is a fault of the sink, which whoever reads the
merge (``etcd-bridge verify``) must see.

The order is by position, with one refinement the sinks share (``sinks.kafka.records``): at
one revision, a snapshot's events sort after that revision's watched changes. Positions
alone cannot order a snapshot taken at a revision whose changes a log already holds (etcd
compacted the history past a restarting bridge's position): its indexes start again at 0.
Wherever positions differ, the two orders agree.
"""

import heapq
from collections.abc import Iterable, Iterator

from bridge.events import SNAPSHOT_OPS, Event, EventType

StreamRank = tuple[int, bool, int]
"""Where an event sorts among the merged logs: (revision, is-snapshot, index)."""


def stream_rank(event: Event) -> StreamRank:
    """The merge's sort key of ``event`` (see the module docstring)."""
    return (event.revision, event.op in SNAPSHOT_OPS, event.index)


def merge_by_position(logs: Iterable[Iterator[Event]]) -> Iterator[Event]:
    """The events of ``logs`` (each in position order) as one stream in position order, each
    repeated marker once. Lazy: an event is read from a log only when it is next to come."""
    previous: Event | None = None
    for event in heapq.merge(*logs, key=stream_rank):
        # A repeated marker is equal to the one just yielded: same position, op and prefix.
        if event.type is EventType.MARKER and event == previous:
            continue
        previous = event
        yield event
