"""An independent record of what the tests wrote to etcd, to check sinks against.

``RecordingWriter`` performs random puts, updates, deletes and multi-key transactions on a
prefix (or given ones: bulk loads, a DeleteRange of the whole prefix) and records, from etcd's
own responses, the revision of every change and what the bridge must emit for it (type, op,
key, value, previous value, index within the revision). The checks (``assert_snapshot``,
``assert_exactly_once``) then compare a sink's events with this record, never with the
bridge's own view.
"""

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyetcd
from pyetcd import etcdrpc

from bridge.events import SNAPSHOT_OPS, Event, EventType, Op, SnapshotReason
from config.keyspace import prefix_range

LOAD_TRANSACTION_KEYS = 100
"""Keys per transaction when loading (etcd allows 128 operations per transaction by default)."""


@dataclass(frozen=True)
class Change:
    revision: int
    index: int
    type: EventType
    op: Op
    key: bytes
    value: bytes | None
    prev_value: bytes | None


class RecordingWriter:
    """Random operations on ``prefix``; ``changes`` holds what etcd did, in order."""

    def __init__(
        self,
        client: pyetcd.Etcd3Client,
        *,
        prefix: str,
        seed: int,
        keys: int = 50,
        padding: int = 0,
    ):
        """``padding``: bytes added to every value (large values fill a budget sooner)."""
        self.client = client
        self.padding = b"p" * padding
        self.prefix = prefix.encode()
        self.random = random.Random(seed)  # noqa: S311 - reproducible, not security
        self.key_space = keys
        self.state: dict[bytes, bytes] = {}
        self.changes: list[Change] = []
        self.operations = 0
        self.revisions_from_keys = False
        """Record a transaction at its keys' ``mod_revision``, read back, rather than at its
        response header's revision: right after an etcd leader is killed, a header was seen
        one revision short of the transaction's own (the watch had it right). A member that
        diverged for good (``EtcdCluster.divergence``) answers both one revision apart."""

    def _key(self) -> bytes:
        return self.prefix + b"k%03d" % self.random.randrange(self.key_space)

    def _value(self) -> bytes:
        value = b"v%d-" % self.operations + self.random.randbytes(self.random.randrange(0, 24))
        return value + self.padding

    def step(self) -> None:
        """One operation: put, delete, or a transaction of 2-6 distinct keys."""
        self.operations += 1
        roll = self.random.random()
        if roll < 0.2:
            # Sorted: a set's order follows the process's hash seed, and so would the steps.
            keys = sorted({self._key() for _ in range(self.random.randrange(2, 7))})
            self.transaction(keys)
        elif roll < 0.35 and self.state:
            self.transaction([self.random.choice(sorted(self.state))], delete=True)
        else:
            self.transaction([self._key()])

    def transaction(self, keys: list[bytes], *, delete: bool = False) -> int:
        """Apply puts (or, with ``delete``, deletes of existing keys) at one revision."""
        planned: list[tuple[bytes, bytes | None]] = []
        for key in keys:
            if delete or (key in self.state and self.random.random() < 0.25):
                if key not in self.state:
                    continue
                planned.append((key, None))
            else:
                planned.append((key, self._value()))
        return self.apply(planned)

    def steps_across(self, groups: Sequence[bytes], *, steps: int) -> int:
        """``steps`` random steps, and every 30 a transaction over a key of each of
        ``groups`` (key segments under the prefix, for routing by segment) then a delete of
        two of them; returns the last revision."""
        for step in range(steps):
            self.step()
            if step % 30 == 0:
                keys = [self.prefix + group + b"/t%d" % step for group in groups]
                self.transaction(keys)
                self.transaction(keys[:2], delete=True)
        return self.changes[-1].revision

    def put_keys(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Put ``items`` (distinct keys) in one transaction, recorded; return its revision."""
        return self.apply(list(items))

    def load(self, *, count: int, value: Callable[[int], bytes]) -> int:
        """Create ``count`` keys named as ``load_keys`` names them, key ``n`` holding
        ``value(n)``, recorded; return the last revision."""
        revision = 0
        for items in key_batches(self.prefix, count=count, value=value):
            revision = self.put_keys(items)
        return revision

    def apply(self, planned: list[tuple[bytes, bytes | None]]) -> int:
        """One transaction of puts and (``None``) deletes of existing keys; record what etcd
        did and return its revision (0 when there is nothing to do)."""
        if not planned:
            return 0
        operations = [
            etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key))
            if value is None
            else etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))
            for key, value in planned
        ]
        response = self.client.kvstub.Txn(etcdrpc.TxnRequest(success=operations), timeout=10)
        revision = int(response.header.revision)
        written = next((key for key, value in planned if value is not None), None)
        if self.revisions_from_keys and written is not None:
            read = self.client.kvstub.Range(etcdrpc.RangeRequest(key=written), timeout=10)
            revision = int(read.kvs[0].mod_revision)
        for index, (key, value) in enumerate(planned):
            previous = self.state.get(key)
            if value is None:
                del self.state[key]
                self.changes.append(
                    Change(revision, index, EventType.DELETE, Op.DELETE, key, None, previous)
                )
            else:
                self.state[key] = value
                op = Op.UPDATE if previous is not None else Op.CREATE
                self.changes.append(
                    Change(revision, index, EventType.PUT, op, key, value, previous)
                )
        return revision

    def delete_prefix(self) -> int:
        """Delete every key of the prefix with one DeleteRange: ONE revision holding a DELETE
        of each key, in key order, with its previous value. Recorded; returns the revision."""
        start, end = prefix_range(self.prefix)
        response = self.client.kvstub.DeleteRange(
            etcdrpc.DeleteRangeRequest(key=start, range_end=end), timeout=60
        )
        revision = int(response.header.revision)
        assert response.deleted == len(self.state), "someone else writes to the prefix"
        for index, key in enumerate(sorted(self.state)):
            self.changes.append(
                Change(revision, index, EventType.DELETE, Op.DELETE, key, None, self.state[key])
            )
        self.state.clear()
        return revision


def put_all(client: pyetcd.Etcd3Client, items: list[tuple[bytes, bytes]]) -> int:
    """Put ``items`` in one transaction (one revision); return that revision."""
    operations = [
        etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))
        for key, value in items
    ]
    response = client.kvstub.Txn(etcdrpc.TxnRequest(success=operations), timeout=10)
    return int(response.header.revision)


def key_batches(
    prefix: bytes, *, count: int, value: Callable[[int], bytes]
) -> Iterator[list[tuple[bytes, bytes]]]:
    """Keys ``<prefix>000000``... with ``value(n)`` for key ``n``, a transaction's worth at a
    time."""
    for start in range(0, count, LOAD_TRANSACTION_KEYS):
        yield [
            (prefix + b"%06d" % number, value(number))
            for number in range(start, min(count, start + LOAD_TRANSACTION_KEYS))
        ]


def load_keys(client: pyetcd.Etcd3Client, *, prefix: str, count: int, value: bytes) -> None:
    """``count`` keys ``<prefix>000000``... in transactions of 100, fast."""
    for items in key_batches(prefix.encode(), count=count, value=lambda _number: value):
        put_all(client, items)


def as_change(event: Event) -> Change:
    return Change(
        event.revision,
        event.index,
        event.type,
        event.op,
        event.key,
        event.value,
        event.prev_value,
    )


def assert_exactly_once(events: list[Event], changes: list[Change], *, after: int) -> None:
    """The sink's changes after revision ``after`` are ``changes``, each once, in order."""
    positions = [event.position for event in events]
    assert positions == sorted(set(positions)), "positions repeat or go backwards"
    got = [as_change(event) for event in events if event.type is not EventType.MARKER]
    got = [change for change in got if change.revision > after]
    expected = [change for change in changes if change.revision > after]
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing and not extra, (
        f"missing {sorted(missing, key=repr)[:3]}, unexpected {sorted(extra, key=repr)[:3]}"
    )
    assert got == expected


def assert_snapshot(events: Sequence[Event], state: dict[bytes, bytes]) -> int:
    """``events`` open with one whole initial snapshot of exactly ``state``: a begin marker,
    every key in key order with its value (bytes exact), an end marker, all at one revision
    with indexes 0, 1, ...; no other snapshot follows. Returns the snapshot's revision."""
    count = len(state) + 2
    snapshot = events[:count]
    assert snapshot, "no snapshot"
    begin, end = snapshot[0], snapshot[-1]
    assert (begin.op, begin.reason) == (Op.SNAPSHOT_BEGIN, SnapshotReason.INITIAL), begin
    assert end.op is Op.SNAPSHOT_END, f"the snapshot ends with {end}"
    assert all(event.revision == begin.revision for event in snapshot), "revisions differ"
    assert [event.index for event in snapshot] == list(range(count)), "indexes"
    entries = snapshot[1:-1]
    assert all(event.op is Op.SNAPSHOT for event in entries), "a marker inside the snapshot"
    got = ((event.key, event.value) for event in entries)
    for number, (pair, wanted) in enumerate(zip(got, sorted(state.items()), strict=True), 1):
        assert pair == wanted, f"snapshot entry {number} is {pair[0]!r}, expected {wanted[0]!r}"
    later = [event for event in events[count:] if event.op in SNAPSHOT_OPS]
    assert not later, f"another snapshot follows: {later[:1]}"
    return begin.revision
