"""A consistent snapshot of the prefix, read page by page at one pinned revision.

The first page is read at etcd's current revision R and every later page at R too, so the
pages together are the prefix exactly as it was at R, however long the read takes. Pages are
sized by bytes, not by a fixed key count: etcd counts the whole remaining range on every
request, so small pages make a large snapshot quadratic, while the byte target keeps memory
flat whatever the values' size.

The ``SnapshotCursor`` is updated as pages are produced, so a reconnect (or a restart from a
sink's last snapshot event) continues after the last key emitted, at the same R, with the
next index. If R is compacted meanwhile, the range fails with RevisionCompactedError and the
caller starts a new snapshot.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from bridge.etcd import Chunk, EtcdConnection, prefix_range, snapshot_event
from bridge.events import Event, Op, SnapshotReason, snapshot_marker

_FIRST_PAGE_KEYS = 1000
_MIN_PAGE_KEYS = 100
_MAX_PAGE_KEYS = 100_000


@dataclass
class SnapshotCursor:
    """How far a snapshot got: its revision (0 until pinned), last key, next index."""

    reason: SnapshotReason
    revision: int = 0
    after_key: bytes | None = None
    next_index: int = 0


def read_snapshot(
    connection: EtcdConnection, *, prefix: bytes, cursor: SnapshotCursor, page_bytes: int
) -> Iterator[Chunk]:
    """Yield the snapshot from ``cursor`` on, bracketed by its begin and end markers."""
    start, end = prefix_range(prefix)
    key = start if cursor.after_key is None else cursor.after_key + b"\0"
    limit = _FIRST_PAGE_KEYS
    while True:
        page = connection.range_page(start=key, end=end, revision=cursor.revision, limit=limit)
        if cursor.revision == 0:
            cursor.revision = page.revision
        events: list[Event] = []
        if cursor.next_index == 0:
            events.append(_marker(cursor, prefix=prefix, op=Op.SNAPSHOT_BEGIN))
        page_size = 0
        for kv in page.kvs:
            events.append(snapshot_event(kv, revision=cursor.revision, index=cursor.next_index))
            cursor.next_index += 1
            page_size += len(kv.key) + len(kv.value)
        if page.kvs:
            cursor.after_key = page.kvs[-1].key
        if not page.more:
            events.append(_marker(cursor, prefix=prefix, op=Op.SNAPSHOT_END))
        yield Chunk(events=events, revision=page.revision)
        if not page.more:
            return
        key = cursor.after_key + b"\0" if cursor.after_key is not None else start
        limit = _next_page_keys(keys=len(page.kvs), size=page_size, page_bytes=page_bytes)


def _marker(cursor: SnapshotCursor, *, prefix: bytes, op: Op) -> Event:
    marker = snapshot_marker(
        revision=cursor.revision,
        index=cursor.next_index,
        op=op,
        prefix=prefix,
        reason=cursor.reason,
    )
    cursor.next_index += 1
    return marker


def _next_page_keys(*, keys: int, size: int, page_bytes: int) -> int:
    """How many keys the next page may hold to come close to ``page_bytes``."""
    if keys == 0 or size == 0:
        return _MAX_PAGE_KEYS
    average = size / keys
    return max(_MIN_PAGE_KEYS, min(_MAX_PAGE_KEYS, int(page_bytes / average)))
