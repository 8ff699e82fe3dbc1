"""A consistent snapshot of the watched prefixes, read page by page at one pinned revision.

The first page is read at etcd's current revision R and every later page at R too, so the
pages together are the prefix exactly as it was at R, however long the read takes. Pages are
sized by bytes, not by a fixed key count: etcd counts the whole remaining range on every
request, so small pages make a large snapshot quadratic, while the byte target keeps memory
flat whatever the values' size.

etcd cannot cap a range by bytes, only by keys, so the key count is learned: the first page
is one key (a value may be as large as etcd's request limit, 1.5 MiB by default, or more
where etcd allows it), and each next page holds as many keys as the target fits at the
last page's average size, at most ``_GROWTH`` times the last page's count (a few requests
to reach full pages on small keys), down to one key per page. A prefix whose values jump
from tiny to huge within one page's worth of keys can still make that page larger than the
target: etcd gives no way to know a value's size before reading it.

The ``SnapshotCursor`` is updated as pages are produced, so a reconnect (or a restart from a
sink's last snapshot event) continues after the last key emitted, at the same R, with the
next index. If R is compacted meanwhile, the range fails with RevisionCompactedError and the
caller starts a new snapshot.
"""

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.etcd import CHUNK_EVENTS, Chunk, RangePage, snapshot_event
from bridge.events import Event, Op, SnapshotReason, snapshot_marker
from config.keyspace import KeySpace

_GROWTH = 64
_MAX_PAGE_KEYS = 100_000


class RangeReader(Protocol):
    """What a snapshot reads etcd with (``bridge.etcd.EtcdConnection.range_page``)."""

    def range_page(
        self, *, start: bytes, end: bytes, revision: int, limit: int
    ) -> Callable[[], RangePage]:
        """Ask for up to ``limit`` keys of ``[start, end)`` at ``revision`` (0: now); the
        returned call waits for the page."""
        ...

    def count_keys(self, *, start: bytes, end: bytes, revision: int) -> tuple[int, int]:
        """How many keys ``[start, end)`` holds at ``revision`` (0: now), and etcd's current
        revision (the one counted at, for 0); etcd counts without sending a key."""
        ...


@dataclass
class SnapshotCursor:
    """How far a snapshot got: its revision (0 until pinned), last key, next index."""

    reason: SnapshotReason
    revision: int = 0
    after_key: bytes | None = None
    next_index: int = 0
    begun: bool = False
    """Its ``snapshot_begin`` marker is out. Not ``next_index > 0``: a snapshot requested at
    a revision whose changes the sink already holds numbers on after them."""
    first_key_pending: bool = True
    """The next key read is the snapshot's first (``Event.opens_snapshot``)."""
    scanned: int = 0
    """Keys read from etcd so far, those the key filters leave out included: the progress
    against a count-only range."""

    @classmethod
    def resuming(cls, tail: Event) -> "SnapshotCursor":
        """The rest of the snapshot whose ``snapshot_begin`` or key ``tail`` is."""
        return cls(
            reason=tail.reason or SnapshotReason.INITIAL,
            revision=tail.revision,
            after_key=tail.key if tail.op is Op.SNAPSHOT else None,
            next_index=tail.index + 1,
            begun=True,
            first_key_pending=tail.op is Op.SNAPSHOT_BEGIN,
        )


def count_snapshot(connection: RangeReader, *, keyspace: KeySpace, cursor: SnapshotCursor) -> int:
    """Count the keys the cursor's snapshot holds and set ``cursor.scanned`` to those already
    read; pin the revision of a snapshot not yet begun (``cursor.revision`` 0) to etcd's
    current one. The total is the keys before the key filters."""
    total = 0
    for start, end in keyspace.ranges:
        keys, current = connection.count_keys(start=start, end=end, revision=cursor.revision)
        cursor.revision = cursor.revision or current
        total += keys
    if cursor.after_key is None:
        cursor.scanned = 0
        return total
    left = 0
    for start, end in _ranges_after(keyspace, cursor.after_key):
        keys, _ = connection.count_keys(start=start, end=end, revision=cursor.revision)
        left += keys
    cursor.scanned = total - left
    return total


def read_snapshot(
    connection: RangeReader, *, keyspace: KeySpace, cursor: SnapshotCursor, page_bytes: int
) -> Iterator[Chunk]:
    """Yield the snapshot from ``cursor`` on, bracketed by its begin and end markers, in
    chunks of at most ``CHUNK_EVENTS`` keys, so that the pump's queue bounds the events built
    from a page of small keys as it does for a watch response.

    Each prefix's range is read in turn, in key order, so "after the last key" is a
    position across all of them.
    """
    label = keyspace.describe()
    filtered = keyspace.filtered
    limit = 1
    ranges = _ranges_after(keyspace, cursor.after_key)
    for number, (key, end) in enumerate(ranges, start=1):
        pending = connection.range_page(start=key, end=end, revision=cursor.revision, limit=limit)
        while True:
            page = pending()
            if cursor.revision == 0:
                cursor.revision = page.revision
            kvs = page.kvs
            # A page of many small keys takes a while to hand on: etcd reads the next one
            # meanwhile. A page of a few large values is not doubled up in memory that way.
            ahead = page.more and len(kvs) > CHUNK_EVENTS
            if page.more:
                limit = _next_page_keys(
                    keys=len(kvs), size=_bytes_of(kvs), page_bytes=page_bytes, limit=limit
                )
                key = kvs[-1].key + b"\0"
            if ahead:
                pending = connection.range_page(
                    start=key, end=end, revision=cursor.revision, limit=limit
                )
            last = not page.more and number == len(ranges)
            # One protobuf wrapper alive at a time: a slice of the page would hold a chunk's
            # worth of them beside its events, and the garbage collector, counting them,
            # would run twice as often (1M small keys into Redis: 10% more CPU).
            remaining = iter(kvs)
            for start in range(0, max(1, len(kvs)), CHUNK_EVENTS):
                events: list[Event] = []
                if not cursor.begun:
                    events.append(_marker(cursor, label=label, op=Op.SNAPSHOT_BEGIN))
                    cursor.begun = True
                size = 0
                for kv in itertools.islice(remaining, CHUNK_EVENTS):
                    # Keys left out by the key filters are read past, never numbered.
                    if filtered and kv.key not in keyspace:
                        continue
                    events.append(
                        snapshot_event(kv, revision=cursor.revision, index=cursor.next_index)
                    )
                    cursor.next_index += 1
                    size += len(kv.key) + len(kv.value)
                if cursor.first_key_pending:
                    _mark_first_key(events, cursor)
                if kvs:
                    end_of_chunk = min(len(kvs), start + CHUNK_EVENTS)
                    cursor.scanned += end_of_chunk - start
                    cursor.after_key = kvs[end_of_chunk - 1].key
                if last and start + CHUNK_EVENTS >= len(kvs):
                    if events and events[-1].op is Op.SNAPSHOT:
                        events[-1].closes_snapshot = True
                    events.append(_marker(cursor, label=label, op=Op.SNAPSHOT_END))
                yield Chunk(events=events, revision=page.revision, size=size)
            if not page.more:
                break
            if not ahead:
                pending = connection.range_page(
                    start=key, end=end, revision=cursor.revision, limit=limit
                )


def _mark_first_key(events: list[Event], cursor: SnapshotCursor) -> None:
    """Flag the snapshot's first key, if this chunk holds it."""
    first = next((event for event in events if event.op is Op.SNAPSHOT), None)
    if first is not None:
        first.opens_snapshot = True
        cursor.first_key_pending = False


def _bytes_of(kvs: Sequence[Any]) -> int:
    return sum(len(kv.key) + len(kv.value) for kv in kvs)


def _ranges_after(keyspace: KeySpace, after_key: bytes | None) -> list[tuple[bytes, bytes]]:
    """The watched ranges, or what is left of them after ``after_key``, in key order.

    The last range is always kept, even when nothing is left of it, so that the snapshot
    ends with its marker in every case.
    """
    ranges = keyspace.ranges
    if after_key is None:
        return ranges
    resume = after_key + b"\0"
    left = [(max(start, resume), end) for start, end in ranges[:-1] if resume < end]
    last_start, last_end = ranges[-1]
    return [*left, (max(last_start, resume), last_end)]


def _marker(cursor: SnapshotCursor, *, label: bytes, op: Op) -> Event:
    marker = snapshot_marker(
        revision=cursor.revision,
        index=cursor.next_index,
        op=op,
        prefix=label,
        reason=cursor.reason,
    )
    cursor.next_index += 1
    return marker


def _next_page_keys(*, keys: int, size: int, page_bytes: int, limit: int) -> int:
    """How many keys the next page may hold to come close to ``page_bytes``, given the last
    page held ``keys`` keys of ``size`` bytes and was asked for ``limit``."""
    most = min(_MAX_PAGE_KEYS, limit * _GROWTH)
    if keys == 0 or size == 0:
        return most
    return max(1, min(most, int(page_bytes * keys / size)))
