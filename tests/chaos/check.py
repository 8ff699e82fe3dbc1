"""The check of a chaos run: what one sink holds, compared with etcd's history, counted.

A sink is given as streams, each in the order the sink holds it: one for the file and for
Redis, one per partition for Kafka, where the snapshot markers stand in every partition and
each change in exactly one. Everything wrong is counted rather than raised, so that one run
reports every kind of fault it found (``SinkFigures``), with a few examples of each.

A resync (a snapshot after the initial one) stands for the changes it replaces, as a
consumer takes it (docs/events.md): those are not counted lost, and its keys are checked
against etcd's state at its revision instead.

A sink that refuses events for good (``refused``: Kafka and NATS, above their 1 MB records)
is checked under its ``ON_REFUSED`` policy: with ``omit_value`` it must hold each such event
at its position without its values, their sizes given; with ``dead_letter`` its dead-letter
file must hold each one, whole and once, in order, and its streams none. Either way a refused
event missing is lost and one held twice (in the streams and the file too) is duplicated.
"""

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.events import (
    Event,
    EventType,
    OmittedBytes,
    Op,
    Position,
    SnapshotReason,
    values_omitted,
)
from config.refusal import RefusalPolicy
from tests.chaos.reference import expected_after_snapshot, state_at

REFUSED_BYTES = 1_000_000
"""Value bytes (value and previous value) above which Kafka and NATS refuse an event: their
records hold more than that (librdkafka's ``message.max.bytes``, nats-server's
``max_payload``). The run's other values are a few KiB at most."""


def refused(event: Event) -> bool:
    """Whether a sink with 1 MB records refuses ``event`` for good."""
    return OmittedBytes.of(event).total > REFUSED_BYTES


@dataclass
class SinkFigures:
    """What one sink's check found."""

    name: str
    events: int = 0
    """Events read (snapshot keys and changes; markers and tombstones not counted)."""
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    """Events etcd's history does not imply: wrong content, unknown position, wrong place."""
    resyncs: int = 0
    """Snapshots after the initial one (their begin markers, once however many streams hold
    them): each one a sink took because it could not resume where it was."""
    snapshot_revision: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep ``text`` as an example, up to 12: enough to see a pattern, not a flood."""
        if len(self.examples) < 12:
            self.examples.append(text)

    def flaw(self, text: str) -> None:
        """Something malformed the reader found (``tests.sinks.base.Flaw``): unexpected."""
        self.unexpected += 1
        self.note(text)


def describe(event: Event) -> str:
    """An event in one line of an example: position, op, key and the start of both values."""
    return (
        f"{event.position} {event.op.value} {event.key!r} value={event.value!r:.40} "
        f"prev={event.prev_value!r:.40}"
    )


@dataclass
class _Resync:
    """A snapshot after the initial one, as the streams hold it: its keys, from every stream,
    and the latest change any stream holds before it."""

    begin: Event
    expected: dict[bytes, Event]
    """etcd's state at its revision: per key, the change that wrote its value."""
    keys: list[Event] = field(default_factory=list)
    held_before: Position | None = None

    @property
    def end(self) -> Event:
        """Its ``snapshot_end``, as the bridge writes it after the keys of etcd's state."""
        return dataclasses.replace(
            self.begin, op=Op.SNAPSHOT_END, index=self.begin.index + len(self.expected) + 1
        )


def check_streams(
    figures: SinkFigures,
    *,
    streams: dict[str, list[Event]],
    history: Sequence[Event],
    policy: RefusalPolicy = RefusalPolicy.STOP,
    diverted: Sequence[Event] = (),
) -> None:
    """Compare ``streams`` (one per Kafka partition, or the sink's single stream), each in
    the order the sink holds it, with etcd's ``history``; add the counts to ``figures``.
    ``policy``: what the sink does with the events it refuses (``STOP``: it refuses none);
    ``diverted``: its dead-letter file, under ``DEAD_LETTER``.

    A resync (a snapshot after the initial one: its position compacted away, or its data
    lost) replaces the changes between the sink's last one and the snapshot's revision,
    which it need not hold (docs/events.md, "Snapshots and resyncs"). The snapshot must hold
    etcd's state at its revision, key for key, and every change after it must follow."""
    begins = {
        event.position: event
        for stream in streams.values()
        for event in stream
        if event.op is Op.SNAPSHOT_BEGIN
    }
    figures.resyncs = max(0, len(begins) - 1)
    if not begins:
        figures.note("no snapshot_begin at all")
    ordered = sorted(begins)
    revision = ordered[0].revision if begins else 0
    figures.snapshot_revision = revision
    markers, changes = expected_after_snapshot(history, revision=revision)
    resyncs = {
        position: _Resync(begins[position], expected=state_at(history, revision=position.revision))
        for position in ordered[1:]
    }
    for resync in resyncs.values():
        markers += [resync.begin, resync.end]
    if policy is RefusalPolicy.OMIT_VALUE:
        changes = [values_omitted(event) if refused(event) else event for event in changes]
    seen: dict[Position, list[Event]] = defaultdict(list)
    for name, stream in streams.items():
        last: Position | None = None
        positions: set[Position] = set()
        held_markers: list[Event] = []
        resync: _Resync | None = None
        last_change: Position | None = None
        for event in stream:
            position = event.position
            if position in positions:
                pass  # counted as a duplicate below
            elif last is not None and position < last:
                figures.out_of_order += 1
                figures.note(f"out of order in {name}: {position} after {last}")
            positions.add(position)
            last = position if last is None else max(last, position)
            if event.type is EventType.MARKER:
                held_markers.append(event)
                resync = resyncs.get(position) if event.op is Op.SNAPSHOT_BEGIN else None
                if resync is not None and last_change is not None:
                    before = resync.held_before
                    resync.held_before = last_change if before is None else max(before, last_change)
            elif resync is not None and event.op is Op.SNAPSHOT:
                resync.keys.append(event)
            else:
                seen[position].append(event)
                last_change = position
        for marker in markers:
            count = held_markers.count(marker)
            if count == 0:
                figures.lost += 1
                figures.note(f"lost in {name}: marker {describe(marker)}")
            figures.duplicated += max(0, count - 1)
        for marker in held_markers:
            if marker not in markers:
                figures.unexpected += 1
                figures.note(f"unexpected in {name}: marker {describe(marker)}")
    for resync in resyncs.values():
        _check_resync(figures, resync)
        changes = [change for change in changes if not _replaced(change, resync, revision)]
    if policy is RefusalPolicy.DEAD_LETTER:
        _check_diverted(figures, seen=seen, diverted=diverted)
    expected = {event.position: event for event in changes}
    for position, events in seen.items():
        figures.events += len(events)
        if len(events) > 1:
            figures.duplicated += len(events) - 1
            figures.note(f"duplicated x{len(events)}: {describe(events[0])}")
        for event in set(events):
            if expected.get(position) != event:
                figures.unexpected += 1
                figures.note(f"unexpected: {describe(event)}")
    run: list[Event] = []  # consecutive lost events, reported as one range
    for change in [*changes, None]:
        if change is not None and change not in seen.get(change.position, ()):
            figures.lost += 1
            run.append(change)
        elif run:
            more = f" .. {run[-1].position}, {len(run)} events" if len(run) > 1 else ""
            figures.note(f"lost: {describe(run[0])}{more}")
            run = []


def _replaced(change: Event, resync: _Resync, initial: int) -> bool:
    """Whether ``resync`` replaced ``change``: a change after the initial snapshot (at
    revision ``initial``) and after the last one any stream holds before the resync, up to
    the resync's revision."""
    after = resync.held_before is None or change.position > resync.held_before
    return initial < change.revision <= resync.begin.revision and after


def _check_resync(figures: SinkFigures, resync: _Resync) -> None:
    """The keys of one resync against etcd's state at its revision: each key once, in key
    order from the index after its ``snapshot_begin``, with the value, revisions, version and
    lease etcd had; anything else is counted."""
    begin = resync.begin
    where = f"the resync at {begin.position}"
    if begin.reason in (None, SnapshotReason.INITIAL):
        figures.unexpected += 1
        figures.note(f"{where} says reason {begin.reason}")
    held: dict[bytes, list[Event]] = defaultdict(list)
    for event in resync.keys:
        held[event.key].append(event)
    figures.events += len(resync.keys)
    for number, key in enumerate(sorted(resync.expected), start=begin.index + 1):
        change, events = resync.expected[key], held.pop(key, [])
        if not events:
            figures.lost += 1
            figures.note(f"lost from {where}: key {key!r}")
        figures.duplicated += max(0, len(events) - 1)
        want = (begin.revision, number, change.value)
        want += (change.mod_revision, change.create_revision, change.version, change.lease)
        for event in set(events):
            have = (event.revision, event.index, event.value)
            have += (event.mod_revision, event.create_revision, event.version, event.lease)
            if have != want:
                figures.unexpected += 1
                figures.note(f"unexpected in {where}: {describe(event)}, etcd had {want}")
    for events in held.values():
        figures.unexpected += len(events)
        figures.note(f"unexpected in {where}: {describe(events[0])}, not in etcd then")


def _check_diverted(
    figures: SinkFigures, *, seen: dict[Position, list[Event]], diverted: Sequence[Event]
) -> None:
    """The dead-letter file: refused events only (one in the streams too is counted there as
    a duplicate), in order; each is added to ``seen``, where the rest of the check counts it
    as held."""
    for event in [event for events in seen.values() for event in events if refused(event)]:
        figures.unexpected += 1
        figures.note(f"refused, yet in the streams: {describe(event)}")
    last: Position | None = None
    for event in diverted:
        if last is not None and event.position < last:
            figures.out_of_order += 1
            figures.note(f"dead letters out of order: {event.position} after {last}")
        last = event.position if last is None else max(last, event.position)
        if not refused(event):
            figures.unexpected += 1
            figures.note(f"diverted, yet not refused: {describe(event)}")
        seen[event.position].append(event)
