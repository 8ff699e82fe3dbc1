"""An in-memory etcd prefix that emits the events the pump would hand a sink.

Sink tests drive ``History`` instead of a real etcd: each method changes the model's state
the way etcd would (one revision per call, a transaction's changes numbered within it, the
previous value carried by updates and deletes) and returns the normalized events of that
change, with ``more`` set on every change but the last of its revision, as the source sets it.
``snapshot`` returns the whole prefix at the current revision framed by its markers, the
initial snapshot or a resync after compaction.

``applied_state`` is the other side: what a consumer that applies whole revisions and whole
snapshots holds after a stream (a mirror), the expected value of sinks that keep state rather
than a log.
"""

import random
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker


@dataclass(frozen=True, slots=True)
class Entry:
    """One key of the model: what etcd keeps for it."""

    value: bytes
    mod_revision: int
    create_revision: int
    version: int


class History:
    """A model of one etcd prefix; see the module docstring."""

    def __init__(self, *, prefix: bytes = b"/app/", revision: int = 1) -> None:
        self.prefix = prefix
        self.revision = revision
        """The revision of the last change (etcd's header revision)."""
        self.state: dict[bytes, Entry] = {}

    def snapshot(self, *, reason: SnapshotReason = SnapshotReason.INITIAL) -> list[Event]:
        """The prefix at the current revision: ``snapshot_begin``, each key in key order,
        ``snapshot_end``, all at that revision with indexes 0, 1, ..."""
        revision = self.revision
        events = [self._marker(Op.SNAPSHOT_BEGIN, index=0, reason=reason)]
        for key in sorted(self.state):
            entry = self.state[key]
            events.append(
                Event(
                    revision=revision,
                    index=len(events),
                    type=EventType.PUT,
                    op=Op.SNAPSHOT,
                    key=key,
                    value=entry.value,
                    mod_revision=entry.mod_revision,
                    create_revision=entry.create_revision,
                    version=entry.version,
                )
            )
        events.append(self._marker(Op.SNAPSHOT_END, index=len(events), reason=reason))
        return events

    def put(self, key: bytes, value: bytes) -> list[Event]:
        return self.txn([(key, value)])

    def delete(self, key: bytes) -> list[Event]:
        return self.txn([(key, None)])

    def txn(self, changes: Iterable[tuple[bytes, bytes | None]]) -> list[Event]:
        """One revision changing several keys; ``None`` deletes. Deletes of absent keys are
        dropped, as etcd drops them; nothing at all to do takes no revision."""
        revision = self.revision + 1
        events: list[Event] = []
        for key, value in changes:
            previous = self.state.get(key)
            if value is None:
                if previous is None:
                    continue
                del self.state[key]
                events.append(
                    Event(
                        revision=revision,
                        index=len(events),
                        type=EventType.DELETE,
                        op=Op.DELETE,
                        key=key,
                        prev_value=previous.value,
                        mod_revision=revision,
                    )
                )
                continue
            create = revision if previous is None else previous.create_revision
            version = 1 if previous is None else previous.version + 1
            self.state[key] = Entry(value, revision, create, version)
            events.append(
                Event(
                    revision=revision,
                    index=len(events),
                    type=EventType.PUT,
                    op=Op.CREATE if previous is None else Op.UPDATE,
                    key=key,
                    value=value,
                    prev_value=None if previous is None else previous.value,
                    mod_revision=revision,
                    create_revision=create,
                    version=version,
                )
            )
        if events:
            self.revision = revision
        for event in events[:-1]:
            event.more = True
        return events

    def values(self) -> dict[bytes, bytes]:
        """The prefix now: key -> value."""
        return {key: entry.value for key, entry in self.state.items()}

    def seed(self, keys: int = 20) -> list[Event]:
        """``keys`` puts of ``<prefix>seed/<nnn>`` = ``s<n>``, one revision each: a prefix
        that already holds something before a test's own changes."""
        events: list[Event] = []
        for number in range(keys):
            events += self.put(self.prefix + f"seed/{number:03d}".encode(), f"s{number}".encode())
        return events

    def random_changes(self, *, count: int, seed: int, keys: int = 50) -> list[Event]:
        """``count`` random puts, deletes and transactions of 2-5 keys over ``keys`` keys
        ``<prefix>g<n % 4>/k<n>``, the same for the same arguments in any process."""
        chooser = random.Random(seed)  # noqa: S311 - reproducible test data
        events: list[Event] = []
        names = [self.prefix + f"g{number % 4}/k{number:03d}".encode() for number in range(keys)]
        for step in range(count):
            roll = chooser.random()
            if roll < 0.6:
                events += self.put(chooser.choice(names), f"v{step}".encode())
            elif roll < 0.8:
                events += self.delete(chooser.choice(names))
            else:
                picked = chooser.sample(names, chooser.randint(2, 5))
                value = f"t{step}".encode()
                events += self.txn(
                    [(key, None if chooser.random() < 0.3 else value) for key in picked]
                )
        return events

    def _marker(self, op: Op, *, index: int, reason: SnapshotReason) -> Event:
        return snapshot_marker(
            revision=self.revision, index=index, op=op, prefix=self.prefix, reason=reason
        )


def applied_state(events: Iterable[Event]) -> dict[bytes, bytes]:
    """What a consumer that applies whole revisions and whole snapshots holds after
    ``events``: a snapshot replaces the state at its ``snapshot_end``, and the changes of a
    revision take effect together at its last one (``more`` unset)."""
    state: dict[bytes, bytes] = {}
    building: dict[bytes, bytes] = {}
    staged: list[Event] = []
    for event in events:
        if event.op is Op.SNAPSHOT_BEGIN:
            building, staged = {}, []
        elif event.op is Op.SNAPSHOT:
            building[event.key] = event.value or b""
        elif event.op is Op.SNAPSHOT_END:
            state, building = building, {}
        else:
            staged.append(event)
            if not event.more:
                for change in staged:
                    if change.type is EventType.DELETE:
                        state.pop(change.key, None)
                    else:
                        state[change.key] = change.value or b""
                staged = []
    return state
