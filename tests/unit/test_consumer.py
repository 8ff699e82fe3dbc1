"""The consumer fold (``bridge.consumer``): dedupe by position, snapshot frames, resyncs,
requested snapshots inside a revision, whole revisions and rollback; every test runs on both
stores, and a random stream must leave both in the same state."""

import random
from collections.abc import Callable, Iterator

import pytest

from bridge.consumer import Fold, KeyValue, MemoryStore, SqliteStore, StateStore
from bridge.events import Event, EventType, Op, Position, SnapshotReason, snapshot_marker


@pytest.fixture(params=["memory", "sqlite"])
def fold(request: pytest.FixtureRequest) -> Iterator[Fold]:
    store: StateStore = MemoryStore() if request.param == "memory" else SqliteStore()
    folding = Fold(store)
    yield folding
    folding.close()


def put(revision: int, index: int, key: bytes, value: bytes, *, more: bool = False) -> Event:
    return Event(
        revision,
        index,
        EventType.PUT,
        Op.UPDATE,
        key,
        value,
        mod_revision=revision,
        create_revision=1,
        version=2,
        more=more,
    )


def delete(revision: int, index: int, key: bytes, *, more: bool = False) -> Event:
    return Event(
        revision, index, EventType.DELETE, Op.DELETE, key, mod_revision=revision, more=more
    )


def snapshot(
    revision: int, items: dict[bytes, bytes], *, reason: SnapshotReason, first_index: int = 0
) -> list[Event]:
    """A whole snapshot frame at ``revision`` numbered from ``first_index``."""
    index = first_index
    events = [
        snapshot_marker(
            revision=revision, index=index, op=Op.SNAPSHOT_BEGIN, prefix=b"/", reason=reason
        )
    ]
    for key, value in sorted(items.items()):
        index += 1
        events.append(
            Event(revision, index, EventType.PUT, Op.SNAPSHOT, key, value, mod_revision=revision)
        )
    events.append(
        snapshot_marker(
            revision=revision, index=index + 1, op=Op.SNAPSHOT_END, prefix=b"/", reason=reason
        )
    )
    return events


def state(fold: Fold) -> dict[bytes, bytes]:
    return {entry.key: entry.value for entry in fold.store.items()}


def test_dedupe_skips_what_is_at_or_below_the_last_position(fold: Fold) -> None:
    events = [
        *snapshot(5, {b"/a": b"1"}, reason=SnapshotReason.INITIAL),
        put(6, 0, b"/a", b"2"),
        put(7, 0, b"/b", b"3"),
    ]
    fold.apply_all(events)
    assert not fold.apply(put(6, 0, b"/a", b"stale again"))
    fold.apply_all(events)  # a consumer re-reading from the start
    assert fold.skipped == len(events) + 1
    assert state(fold) == {b"/a": b"2", b"/b": b"3"}
    assert (fold.position, fold.revision, fold.whole) == (Position(7, 0), 7, True)


def test_snapshot_end_drops_every_key_the_snapshot_did_not_hold(fold: Fold) -> None:
    fold.apply_all(
        snapshot(5, {b"/a": b"1", b"/b": b"2", b"/c": b"3"}, reason=SnapshotReason.INITIAL)
    )
    fold.apply(delete(6, 0, b"/a"))
    resync = snapshot(20, {b"/c": b"30", b"/d": b"4"}, reason=SnapshotReason.COMPACTED)
    fold.apply_all(resync[:-1])
    assert fold.in_snapshot and not fold.whole and fold.revision == 6
    assert b"/b" in state(fold), "keys are dropped at the end, not before"
    fold.apply(resync[-1])
    assert state(fold) == {b"/c": b"30", b"/d": b"4"}
    assert (fold.in_snapshot, fold.whole, fold.revision) == (False, True, 20)


def test_a_resync_then_changes_is_etcd_state(fold: Fold) -> None:
    fold.apply_all(snapshot(3, {b"/x": b"1", b"/y": b"1"}, reason=SnapshotReason.INITIAL))
    fold.apply_all([put(4, 0, b"/x", b"2"), delete(4, 1, b"/y")])
    fold.apply_all(snapshot(9, {b"/x": b"5", b"/z": b"5"}, reason=SnapshotReason.COMPACTED))
    fold.apply_all([put(10, 0, b"/z", b"6", more=True), delete(10, 1, b"/x")])
    assert state(fold) == {b"/z": b"6"}
    assert fold.revision == 10


def test_a_requested_snapshot_numbers_on_inside_its_revision(fold: Fold) -> None:
    fold.apply_all(snapshot(3, {b"/a": b"1"}, reason=SnapshotReason.INITIAL))
    fold.apply_all([put(8, 0, b"/a", b"2", more=True), put(8, 1, b"/b", b"2")])
    requested = snapshot(
        8, {b"/a": b"2", b"/b": b"2"}, reason=SnapshotReason.REQUESTED, first_index=2
    )
    assert requested[0].position == Position(8, 2)
    fold.apply_all(requested)
    assert fold.skipped == 0, "a requested snapshot at the same revision is not a duplicate"
    assert state(fold) == {b"/a": b"2", b"/b": b"2"}
    assert fold.position == Position(8, 5) and fold.whole


def test_a_snapshot_begun_again_drops_what_only_the_abandoned_one_held(fold: Fold) -> None:
    fold.apply_all(snapshot(3, {b"/a": b"1"}, reason=SnapshotReason.INITIAL))
    abandoned = snapshot(10, {b"/a": b"1", b"/gone": b"x"}, reason=SnapshotReason.COMPACTED)
    fold.apply_all(abandoned[:3])  # its revision compacted under it: a new one starts
    fold.apply_all(snapshot(12, {b"/a": b"1"}, reason=SnapshotReason.COMPACTED))
    assert state(fold) == {b"/a": b"1"}


def test_rollback_returns_to_the_last_whole_revision(fold: Fold) -> None:
    fold.apply_all(snapshot(3, {b"/a": b"1", b"/b": b"1"}, reason=SnapshotReason.INITIAL))
    fold.apply_all([put(4, 0, b"/a", b"2", more=True), delete(4, 1, b"/b", more=True)])
    assert not fold.whole and fold.revision == 3
    fold.rollback()
    assert state(fold) == {b"/a": b"1", b"/b": b"1"}
    assert (fold.position, fold.whole) == (Position(3, 3), True)
    fold.apply_all(snapshot(9, {b"/c": b"1"}, reason=SnapshotReason.COMPACTED)[:-1])
    fold.rollback()  # inside a snapshot: its keys go, the dropped-at-end keys stay
    assert state(fold) == {b"/a": b"1", b"/b": b"1"}
    assert not fold.in_snapshot
    fold.apply_all([put(4, 0, b"/a", b"3"), delete(5, 0, b"/b")])
    assert state(fold) == {b"/a": b"3"}


def random_stream(seed: int) -> tuple[list[Event], dict[bytes, bytes]]:
    """Snapshots of every reason and transactions of puts and deletes, some repeated; and
    the state they leave."""
    chance = random.Random(seed)  # noqa: S311 - reproducible, not security
    keys = [b"/k%02d" % number for number in range(30)]
    held: dict[bytes, bytes] = {}
    events = snapshot(2, {}, reason=SnapshotReason.INITIAL)
    for revision in range(3, 300):
        roll = chance.random()
        if roll < 0.05:
            reason = chance.choice([SnapshotReason.COMPACTED, SnapshotReason.REQUESTED])
            held = {key: b"s%d" % revision for key in chance.sample(keys, 10)}
            events += snapshot(revision, held, reason=reason)
            continue
        changes: list[Event] = []
        for index, key in enumerate(chance.sample(keys, chance.randrange(1, 5))):
            if key in held and chance.random() < 0.4:
                del held[key]
                changes.append(delete(revision, index, key, more=True))
            else:
                held[key] = b"v%d" % revision
                changes.append(put(revision, index, key, held[key], more=True))
        changes[-1].more = False
        events += changes
        if chance.random() < 0.1:
            events += changes  # an at-least-once sink repeating a batch
    return events, held


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_both_stores_fold_to_the_same_state(seed: int) -> None:
    events, expected = random_stream(seed)
    folded: list[list[KeyValue]] = []
    make: Callable[[], StateStore]
    for make in (MemoryStore, SqliteStore):
        fold = Fold(make())
        fold.apply_all(events)
        folded.append(list(fold.store.items()))
        assert len(fold.store) == len(folded[-1])
        fold.close()
    assert folded[0] == folded[1]
    assert {entry.key: entry.value for entry in folded[0]} == expected
