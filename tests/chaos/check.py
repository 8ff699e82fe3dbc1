"""The check of a chaos run: what one sink holds, compared with etcd's history, counted.

A sink is given as streams, each in the order the sink holds it: one for the file and for
Redis, one per partition for Kafka, where the snapshot markers stand in every partition and
each change in exactly one. Everything wrong is counted rather than raised, so that one run
reports every kind of fault it found (``SinkFigures``), with a few examples of each.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.events import Event, EventType, Op, Position
from tests.chaos.reference import expected_after_snapshot


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


def check_streams(
    figures: SinkFigures, *, streams: dict[str, list[Event]], history: Sequence[Event]
) -> None:
    """Compare ``streams`` (one per Kafka partition, or the sink's single stream), each in
    the order the sink holds it, with etcd's ``history``; add the counts to ``figures``."""
    begins = [
        event.position
        for stream in streams.values()
        for event in stream
        if event.op is Op.SNAPSHOT_BEGIN
    ]
    if not begins:
        figures.note("no snapshot_begin at all")
    revision = min(begins).revision if begins else 0
    figures.snapshot_revision = revision
    markers, changes = expected_after_snapshot(history, revision=revision)
    expected = {event.position: event for event in changes}
    seen: dict[Position, list[Event]] = defaultdict(list)
    for name, stream in streams.items():
        last: Position | None = None
        positions: set[Position] = set()
        held_markers: list[Event] = []
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
            else:
                seen[position].append(event)
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
