"""An independent record of what the tests wrote to etcd, to check sinks against.

``RecordingWriter`` performs random puts, updates, deletes and multi-key transactions on a
prefix and records, from etcd's own responses, the revision of every change and what the
bridge must emit for it (type, op, key, value, previous value, index within the revision).
The check then compares a sink's events with this record, never with the bridge's own view.
"""

import random
from dataclasses import dataclass

import pyetcd
from pyetcd import etcdrpc

from bridge.events import Event, EventType, Op


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

    def __init__(self, client: pyetcd.Etcd3Client, *, prefix: str, seed: int, keys: int = 50):
        self.client = client
        self.prefix = prefix.encode()
        self.random = random.Random(seed)  # noqa: S311 - reproducible, not security
        self.key_space = keys
        self.state: dict[bytes, bytes] = {}
        self.changes: list[Change] = []
        self.operations = 0

    def _key(self) -> bytes:
        return self.prefix + b"k%03d" % self.random.randrange(self.key_space)

    def _value(self) -> bytes:
        return b"v%d-" % self.operations + self.random.randbytes(self.random.randrange(0, 24))

    def step(self) -> None:
        """One operation: put, delete, or a transaction of 2-6 distinct keys."""
        self.operations += 1
        roll = self.random.random()
        if roll < 0.2:
            keys = list({self._key() for _ in range(self.random.randrange(2, 7))})
            self.transaction(keys)
        elif roll < 0.35 and self.state:
            self.transaction([self.random.choice(sorted(self.state))], delete=True)
        else:
            self.transaction([self._key()])

    def transaction(self, keys: list[bytes], *, delete: bool = False) -> int:
        """Apply puts (or, with ``delete``, deletes of existing keys) at one revision."""
        operations = []
        planned: list[tuple[bytes, bytes | None]] = []
        for key in keys:
            if delete or (key in self.state and self.random.random() < 0.25):
                if key not in self.state:
                    continue
                operations.append(
                    etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key))
                )
                planned.append((key, None))
            else:
                value = self._value()
                operations.append(
                    etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))
                )
                planned.append((key, value))
        if not operations:
            return 0
        response = self.client.kvstub.Txn(etcdrpc.TxnRequest(success=operations), timeout=10)
        revision = int(response.header.revision)
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


def put_all(client: pyetcd.Etcd3Client, items: list[tuple[bytes, bytes]]) -> int:
    """Put ``items`` in one transaction (one revision); return that revision."""
    operations = [
        etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))
        for key, value in items
    ]
    response = client.kvstub.Txn(etcdrpc.TxnRequest(success=operations), timeout=10)
    return int(response.header.revision)


def load_keys(client: pyetcd.Etcd3Client, *, prefix: str, count: int, value: bytes) -> None:
    """``count`` keys ``<prefix>000000``... in transactions of 100, fast."""
    for start in range(0, count, 100):
        put_all(
            client,
            [(f"{prefix}{n:06d}".encode(), value) for n in range(start, min(count, start + 100))],
        )


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
