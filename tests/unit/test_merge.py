"""The k-way merge that readers of multi-log sinks (Kafka partitions, routed streams) share."""

from collections.abc import Iterator

from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker
from bridge.merge import merge_by_position

PREFIX = b"/app/"


def change(revision: int, index: int, key: bytes) -> Event:
    return Event(revision, index, EventType.PUT, Op.UPDATE, key, b"v", mod_revision=revision)


def snapshot(revision: int, index: int, key: bytes) -> Event:
    return Event(revision, index, EventType.PUT, Op.SNAPSHOT, key, b"s", mod_revision=1)


def marker(revision: int, index: int, op: Op) -> Event:
    return snapshot_marker(
        revision=revision, index=index, op=op, prefix=PREFIX, reason=SnapshotReason.INITIAL
    )


def test_logs_merge_in_position_order_with_each_marker_once() -> None:
    begin, end = marker(5, 0, Op.SNAPSHOT_BEGIN), marker(5, 3, Op.SNAPSHOT_END)
    a = [begin, snapshot(5, 1, b"/app/a"), end, change(6, 1, b"/app/a"), change(9, 0, b"/app/a")]
    b = [begin, snapshot(5, 2, b"/app/b"), end, change(6, 0, b"/app/b"), change(7, 0, b"/app/b")]
    c = [begin, end]  # a log holding only the frames
    merged = list(merge_by_position([iter(a), iter(b), iter(c)]))
    assert [str(event.position) for event in merged] == [
        "5-0",
        "5-1",
        "5-2",
        "5-3",
        "6-0",
        "6-1",
        "7-0",
        "9-0",
    ]
    assert merged.count(begin) == 1 and merged.count(end) == 1


def test_a_repeated_change_is_kept_for_whoever_checks() -> None:
    twice = change(4, 0, b"/app/x")
    merged = list(merge_by_position([iter([twice]), iter([twice])]))
    assert merged == [twice, twice]


def test_a_snapshot_sorts_after_the_changes_of_its_revision() -> None:
    """A resync at a revision whose changes a log already holds numbers from 0 again."""
    watched = [change(8, 0, b"/app/a"), change(8, 1, b"/app/b")]
    resync = [marker(8, 0, Op.SNAPSHOT_BEGIN), marker(8, 1, Op.SNAPSHOT_END)]
    merged = list(merge_by_position([iter(resync), iter(watched)]))
    assert merged == [*watched, *resync]


def test_logs_are_read_lazily() -> None:
    pulled: list[int] = []

    def log(number: int, revisions: list[int]) -> Iterator[Event]:
        for revision in revisions:
            pulled.append(revision)
            yield change(revision, number, b"/app/k")

    merged = merge_by_position([log(0, [1, 2, 3, 4]), log(1, [10, 11])])
    assert next(merged).revision == 1
    assert pulled == [1, 10]  # one head per log, nothing read ahead
