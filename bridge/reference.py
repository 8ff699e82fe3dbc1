"""What etcd says, read-only, for ``etcd-bridge verify``: the state of the watched prefixes at
a revision, their changes between two revisions, and how far etcd's history goes back.

Nothing here writes to etcd. The state is read exactly as a snapshot reads it
(``bridge.snapshot.read_snapshot``: pages sized by bytes at one pinned revision, key filters
applied), and the changes exactly as the bridge watches them (``EtcdConnection.watch``: the
covering range with ``prev_kv``, keys numbered by the same ``EventChunker``), so a
difference found is a difference in the sink, not in how the two sides were read.
"""

from collections.abc import Iterator

from bridge.consumer import KeyValue
from bridge.errors import RevisionCompactedError
from bridge.etcd import EtcdConnection
from bridge.events import Event, Op, SnapshotReason
from bridge.snapshot import SnapshotCursor, read_snapshot
from config.keyspace import KeySpace


def state_at(
    connection: EtcdConnection, *, keyspace: KeySpace, revision: int, page_bytes: int
) -> Iterator[KeyValue]:
    """Every watched key at ``revision`` (> 0), in key order, a page at a time.
    RevisionCompactedError (its ``compacted`` unknown: 0) when etcd no longer holds it."""
    cursor = SnapshotCursor(reason=SnapshotReason.REQUESTED, revision=revision)
    for chunk in read_snapshot(connection, keyspace=keyspace, cursor=cursor, page_bytes=page_bytes):
        for event in chunk.events:
            if event.op is Op.SNAPSHOT:
                yield KeyValue.of(event)


def compacted_revision(connection: EtcdConnection, *, keyspace: KeySpace, revision: int) -> int:
    """The revision etcd's history starts at, given that ``revision`` is compacted (a range
    says only that; a watch from there is refused with the compact revision). 0 when the
    watch is accepted after all."""
    stream = connection.watch(keyspace, start_revision=revision)
    try:
        for _chunk in stream:
            return 0
    except RevisionCompactedError as error:
        return error.compacted
    finally:
        stream.close()
    return 0


def changes_between(
    connection: EtcdConnection, *, keyspace: KeySpace, first: int, last: int
) -> Iterator[Event]:
    """etcd's changes of the watched keys at revisions ``first`` to ``last`` (at most etcd's
    current one), with previous values, numbered as the bridge numbers them.

    The watch stops at the first change past ``last``, at the last change of revision
    ``last`` itself, or at a progress answer at or past ``last`` (etcd then has sent every
    change up to it; asked for after a third of ``BRIDGE_ETCD__STALL_TIMEOUT`` of silence).
    RevisionCompactedError when ``first`` is compacted."""
    stream = connection.watch(keyspace, start_revision=first)
    try:
        for chunk in stream:
            for event in chunk.events:
                if event.revision > last:
                    return
                yield event
                if event.revision == last and not event.more:
                    return
            if chunk.synced and chunk.revision >= last:
                return
    finally:
        stream.close()
