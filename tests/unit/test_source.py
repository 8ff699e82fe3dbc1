"""The resume table of ``bridge.source`` driven by a scripted etcd (``tests.unit.doubles``):
where a source picks up after each kind of tail, and how it gets over compaction, responses
too large to take whole, and etcd going away. The etcd integration tests remain the proof
against the real server."""

import itertools
import threading

import pytest

from bridge.errors import (
    EtcdRejectedError,
    EtcdUnavailableError,
    PositionAheadError,
    PreviousValueCompactedError,
    RevisionCompactedError,
    WatchResponseTooLargeError,
)
from bridge.etcd import Chunk
from bridge.events import Event, EventType, Op, SnapshotReason
from bridge.health import Phase
from bridge.metrics import REGISTRY
from bridge.retry import Backoff
from bridge.source import ChangeSource
from config.keyspace import KeySpace
from tests.unit.doubles import PhaseLog, ScriptedEtcd, change, history

KEYSPACE = KeySpace.of([b"/p/"])
KEYS = [b"/p/a", b"/p/b", b"/p/c"]


def source(etcd: ScriptedEtcd, *, tail: Event | None, health: PhaseLog) -> ChangeSource:
    return ChangeSource(
        etcd,
        keyspace=KEYSPACE,
        page_bytes=64 * 1024,
        tail=tail,
        stop=threading.Event(),
        health=health,
        backoff=Backoff(initial=0.001, maximum=0.001),
    )


def read(etcd: ScriptedEtcd, *, tail: Event | None, until: int) -> tuple[list[Event], PhaseLog]:
    """The events the source yields up to the chunk that ends at revision ``until``, and the
    phases it went through."""
    health = PhaseLog(sink=f"scripted-{id(etcd)}")
    events: list[Event] = []
    for chunk in source(etcd, tail=tail, health=health):
        events += chunk.events
        if events and events[-1].revision == until:
            return events, health
    raise AssertionError(f"the source ended before revision {until}")


def counted(metric: str, sink: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, {"sink": sink, **labels}) or 0


def snapshot_event(op: Op, *, revision: int, index: int, key: bytes = b"/p/x") -> Event:
    event_type = EventType.PUT if op is Op.SNAPSHOT else EventType.MARKER
    reason = None if op is Op.SNAPSHOT else SnapshotReason.INITIAL
    return Event(revision, index, event_type, op, key, reason=reason)


KEYS_TAIL_AFTER_BEGIN = snapshot_event(Op.SNAPSHOT_BEGIN, revision=7, index=0, key=b"/p/")
KEYS_TAIL_AFTER_B = snapshot_event(Op.SNAPSHOT, revision=7, index=2, key=b"/p/b")


def summary(events: list[Event]) -> list[tuple[int, int, str, bytes]]:
    return [(event.revision, event.index, event.op.value, event.key) for event in events]


def framed_snapshot(revision: int, *, first: int = 0) -> list[tuple[int, int, str, bytes]]:
    """``summary`` of a snapshot of ``KEYS`` at ``revision`` with its markers, its positions
    numbered from ``first``."""
    prefix = KEYSPACE.describe()
    frames = [("snapshot_begin", prefix), *(("snapshot", key) for key in KEYS)]
    frames.append(("snapshot_end", prefix))
    return [(revision, first + n, op, key) for n, (op, key) in enumerate(frames)]


@pytest.mark.parametrize(
    ("tail", "watch_from"),
    [
        (change(9, 2, more=True), 9),
        (change(9, 3), 10),
        (snapshot_event(Op.SNAPSHOT_END, revision=9, index=4), 10),
    ],
    ids=["inside-a-revision", "end-of-a-revision", "snapshot-end"],
)
def test_after_a_change_or_a_snapshot_the_watch_resumes_here(tail: Event, watch_from: int) -> None:
    """More of the tail's revision to come: watch that revision again (the pump drops what
    the sink holds); else the next one. No snapshot is read."""
    etcd = ScriptedEtcd(revision=12, sessions=[history(range(watch_from, watch_from + 1))])
    events, health = read(etcd, tail=tail, until=watch_from)
    assert etcd.watches == [(watch_from, False)]
    assert etcd.ranges == []
    assert [event.revision for event in events] == [watch_from]
    assert health.phases == [Phase.WATCHING]


def test_with_nothing_held_a_snapshot_comes_first() -> None:
    """A snapshot pinned at etcd's revision, framed by markers of reason ``initial``, then the
    watch from the next revision."""
    etcd = ScriptedEtcd(revision=7, keys=KEYS, sessions=[history(range(8, 9))])
    events, health = read(etcd, tail=None, until=8)
    assert summary(events) == [*framed_snapshot(7), (8, 0, "update", b"/p/8-0")]
    assert events[0].reason is SnapshotReason.INITIAL
    # Counting the keys pins the revision: every page is read at it.
    assert etcd.counts == [(b"/p/", 0)] and {revision for _, revision, _ in etcd.ranges} == {7}
    assert etcd.watches == [(8, False)]
    assert health.phases == [Phase.SNAPSHOT, Phase.WATCHING]


@pytest.mark.parametrize(
    ("tail", "first"),
    [
        (snapshot_event(Op.SNAPSHOT_BEGIN, revision=7, index=0, key=b"/p/"), (7, 1, b"/p/a")),
        (snapshot_event(Op.SNAPSHOT, revision=7, index=2, key=b"/p/b"), (7, 3, b"/p/c")),
    ],
    ids=["after-begin", "after-a-key"],
)
def test_inside_a_snapshot_the_rest_of_it_comes_first(
    tail: Event, first: tuple[int, int, bytes]
) -> None:
    """The same revision, after the last key held, numbered on; no second begin marker."""
    etcd = ScriptedEtcd(revision=9, keys=KEYS, sessions=[history(range(8, 9))])
    events, _health = read(etcd, tail=tail, until=8)
    assert (events[0].revision, events[0].index, events[0].key) == first
    assert [event.op for event in events[:-1]].count(Op.SNAPSHOT_BEGIN) == 0
    assert events[-2].op is Op.SNAPSHOT_END
    assert {revision for _, revision, _ in etcd.ranges} == {7}
    assert etcd.watches == [(8, False)]


@pytest.mark.parametrize(
    ("tail", "read_before"), [(KEYS_TAIL_AFTER_BEGIN, 0), (KEYS_TAIL_AFTER_B, 2)]
)
def test_a_snapshot_reports_its_progress_against_a_count(tail: Event, read_before: int) -> None:
    """The keys are counted at the snapshot's revision; a resumed snapshot counts those before
    its last key as read."""
    etcd = ScriptedEtcd(revision=9, keys=KEYS, sessions=[history(range(8, 9))])
    health = PhaseLog(sink=f"progress-{read_before}")
    for chunk in source(etcd, tail=tail, health=health):
        if chunk.events[-1].op is Op.SNAPSHOT_END:
            break
    stats = health.stats
    assert (stats.snapshot_keys_expected, stats.snapshot_keys_read) == (3, 3)
    assert etcd.counts[0] == (b"/p/", 7), "counted at the snapshot's own revision"
    assert len(etcd.counts) == (1 if read_before == 0 else 2)
    metric = counted("etcd_bridge_snapshot_keys_expected", health.sink)
    assert metric == 3


def requested(etcd: ScriptedEtcd, *, tail: Event, until: int) -> tuple[list[Event], PhaseLog]:
    """What the source yields up to revision ``until`` when a snapshot is asked for after the
    first change it hands on."""
    health = PhaseLog(sink=f"requested-{id(etcd)}")
    events: list[Event] = []
    for chunk in source(etcd, tail=tail, health=health):
        if not events:
            health.snapshot_request.ask()
        events += chunk.events
        if events[-1].revision == until:
            return events, health
    raise AssertionError(f"the source ended before revision {until}")


def test_a_requested_snapshot_numbers_on_after_the_changes_of_its_revision() -> None:
    """Asked for while the watch is at etcd's revision 11: the snapshot is at 11 too, and its
    positions follow the change of 11 already handed on, so the sink takes all of them."""
    etcd = ScriptedEtcd(
        revision=11, keys=KEYS, sessions=[history(range(11, 12)), history(range(12, 13))]
    )
    events, health = requested(etcd, tail=change(10), until=12)
    assert summary(events) == [
        (11, 0, "update", b"/p/11-0"),
        *framed_snapshot(11, first=1),
        (12, 0, "update", b"/p/12-0"),
    ]
    assert events[1].reason is SnapshotReason.REQUESTED is events[5].reason
    assert [event.opens_snapshot for event in events[2:5]] == [True, False, False]
    assert etcd.watches == [(11, False), (12, False)]
    assert health.phases == [Phase.WATCHING, Phase.SNAPSHOT, Phase.WATCHING]
    assert counted("etcd_bridge_snapshots_requested_total", health.sink) == 1
    assert not health.snapshot_request.pending


def test_a_requested_snapshot_at_a_later_revision_starts_at_index_0() -> None:
    etcd = ScriptedEtcd(
        revision=13, keys=KEYS, sessions=[history(range(11, 12)), history(range(14, 15))]
    )
    events, _health = requested(etcd, tail=change(10), until=14)
    assert summary(events)[:2] == [
        (11, 0, "update", b"/p/11-0"),
        (13, 0, "snapshot_begin", KEYSPACE.describe()),
    ]
    assert etcd.watches == [(11, False), (14, False)]


def test_a_compacted_watch_resyncs_with_a_new_snapshot() -> None:
    etcd = ScriptedEtcd(
        revision=30,
        keys=KEYS,
        sessions=[
            [RevisionCompactedError(requested=10, compacted=20)],
            history(range(31, 32)),
        ],
    )
    events, health = read(etcd, tail=change(9, 0), until=31)
    assert events[0].op is Op.SNAPSHOT_BEGIN and events[0].reason is SnapshotReason.COMPACTED
    assert events[0].revision == 30 and events[-1].revision == 31
    assert etcd.watches == [(10, False), (31, False)]
    assert counted("etcd_bridge_resyncs_total", health.sink) == 1


def test_a_change_without_its_previous_value_resyncs_after_what_was_handed_on() -> None:
    """Two changes of revision 11 handed on, then etcd sends the third without its previous
    value, having compacted 11 itself: the resync snapshot is at 11 too, and numbers on after
    the changes of 11 the sink already takes."""
    part = Chunk(events=history(range(11, 12), per_revision=3)[0].events[:2], revision=11, size=0)
    lost = PreviousValueCompactedError(key=b"/p/11-2", revision=11)
    etcd = ScriptedEtcd(revision=11, keys=KEYS, sessions=[[part, lost], history(range(12, 13))])
    events, health = read(etcd, tail=change(10), until=12)
    assert summary(events) == [
        (11, 0, "update", b"/p/11-0"),
        (11, 1, "update", b"/p/11-1"),
        *framed_snapshot(11, first=2),
        (12, 0, "update", b"/p/12-0"),
    ]
    assert events[2].reason is SnapshotReason.COMPACTED
    assert etcd.watches == [(11, False), (12, False)]
    assert counted("etcd_bridge_resyncs_total", health.sink) == 1


def test_a_snapshot_whose_revision_was_compacted_starts_over() -> None:
    """The sink holds part of a snapshot at 7, which etcd has compacted: a new snapshot of
    reason ``compacted`` at the current revision, from its first key."""
    etcd = ScriptedEtcd(revision=30, keys=KEYS, compacted=20, sessions=[history(range(31, 32))])
    tail = snapshot_event(Op.SNAPSHOT, revision=7, index=2, key=b"/p/b")
    events, _health = read(etcd, tail=tail, until=31)
    assert summary(events)[:2] == [
        (30, 0, "snapshot_begin", KEYSPACE.describe()),
        (30, 1, "snapshot", b"/p/a"),
    ]
    assert events[0].reason is SnapshotReason.COMPACTED


def too_large(*, fragmented: bool) -> WatchResponseTooLargeError:
    return WatchResponseTooLargeError(
        endpoint="http://etcd-a:2379", limit=4 << 20, fragmented=fragmented, detail="5 MiB"
    )


def test_a_response_too_large_is_read_in_fragments_then_whole_again() -> None:
    """Refused whole at revision 11: watched again from 11 in fragments; once that watch has
    delivered its large response and ended, whole responses from the next revision."""
    etcd = ScriptedEtcd(
        revision=12,
        sessions=[
            [*history(range(10, 11)), too_large(fragmented=False)],
            history(range(11, 12), per_revision=50),
            history(range(12, 13)),
        ],
    )
    health = PhaseLog(sink="scripted-fragments")
    taken = list(itertools.islice(source(etcd, tail=change(9, 0), health=health), 3))
    assert [chunk.revision for chunk in taken] == [10, 11, 12]
    assert etcd.watches == [(10, False), (11, True), (12, False)]
    assert counted("etcd_bridge_watch_fragmented_total", "scripted-fragments") == 1


def test_a_response_too_large_even_in_fragments_is_fatal_with_its_cause() -> None:
    cause = too_large(fragmented=True)
    etcd = ScriptedEtcd(revision=12, sessions=[[cause]])
    health = PhaseLog(sink="scripted-too-large")
    with pytest.raises(EtcdRejectedError) as raised:
        list(source(etcd, tail=change(9, 0), health=health))
    assert raised.value.__cause__ is cause
    assert raised.value.endpoint == "http://etcd-a:2379"
    assert "BRIDGE_ETCD__WATCH_RESPONSE_BYTES" in str(raised.value)


def test_when_etcd_goes_away_the_source_fails_over_and_watches_on() -> None:
    """The stream breaks after revision 10, the next connect fails too: the source turns to
    the next endpoint each time, and watches again from 11 once etcd answers."""
    etcd = ScriptedEtcd(
        revision=12,
        connects=[12, EtcdUnavailableError("etcd-b: refused", endpoint="http://etcd-b:2379")],
        sessions=[
            [*history(range(10, 11)), EtcdUnavailableError("etcd-a: stream broke")],
            history(range(11, 12)),
        ],
    )
    health = PhaseLog(sink="scripted-reconnect")
    taken = list(itertools.islice(source(etcd, tail=change(9, 0), health=health), 2))
    assert [chunk.revision for chunk in taken] == [10, 11]
    assert etcd.watches == [(10, False), (11, False)]
    assert etcd.connected == 3 and etcd.failovers == 2
    assert health.phases == [Phase.WATCHING, Phase.ETCD_DOWN, Phase.ETCD_DOWN, Phase.WATCHING]
    assert counted("etcd_bridge_etcd_reconnects_total", "scripted-reconnect") == 2
    kind = {"kind": "EtcdUnavailableError"}
    assert counted("etcd_bridge_errors_total", "scripted-reconnect", **kind) == 2


def test_a_fatal_etcd_error_is_not_retried() -> None:
    etcd = ScriptedEtcd(revision=12, sessions=[[EtcdRejectedError("etcd: permission denied")]])
    with pytest.raises(EtcdRejectedError):
        list(source(etcd, tail=change(9, 0), health=PhaseLog(sink="scripted-fatal")))
    assert etcd.connected == 1 and etcd.failovers == 0


def test_a_sink_ahead_of_etcd_is_refused() -> None:
    """etcd restored from an older backup: the sink's revision 9 is past etcd's 5."""
    etcd = ScriptedEtcd(revision=5)
    with pytest.raises(PositionAheadError) as raised:
        list(source(etcd, tail=change(9, 0), health=PhaseLog(sink="scripted-ahead")))
    error = raised.value
    assert (error.sink, error.revision, error.endpoint) == (
        "scripted-ahead",
        9,
        "http://etcd-a:2379",
    )
    assert etcd.watches == []


@pytest.mark.parametrize("tail", [None, change(11, 0, more=True)], ids=["empty", "mid-revision"])
def test_a_lost_sink_gets_a_snapshot_first_numbered_after_its_tail(tail: Event | None) -> None:
    """Opened with ``resync=lost`` (the pump found the sink behind what it flushed): the
    snapshot comes first whatever the tail, at etcd's revision, after the tail's index."""
    etcd = ScriptedEtcd(revision=11, keys=KEYS, sessions=[history(range(12, 13))])
    health = PhaseLog(sink=f"lost-{id(etcd)}")
    lost = ChangeSource(
        etcd,
        keyspace=KEYSPACE,
        page_bytes=64 * 1024,
        tail=tail,
        stop=threading.Event(),
        health=health,
        resync=SnapshotReason.LOST,
    )
    events: list[Event] = []
    for chunk in lost:
        events += chunk.events
        if events[-1].revision == 12:
            break
    first = 0 if tail is None else 1
    assert [(event.revision, event.index, event.op) for event in events[::4]] == [
        (11, first, Op.SNAPSHOT_BEGIN),
        (11, first + 4, Op.SNAPSHOT_END),
    ]
    assert events[0].reason is SnapshotReason.LOST is events[4].reason
    assert summary(events[5:]) == [(12, 0, "update", b"/p/12-0")]
    assert etcd.watches == [(12, False)]
