"""The local log in-process: frames, recovery after a torn write, where a sink resumes,
trimming, and sinks reading it through the pump with a scripted etcd behind it. The
integration suite (tests/integration/test_journal.py) runs it against a real etcd."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bridge.errors import JournalError, JournalOverrunError
from bridge.etcd import Chunk
from bridge.events import Event, EventType, OmittedBytes, Op, Position, SnapshotReason
from bridge.health import PipelineHealth
from bridge.journal import frames, recording
from bridge.journal.reading import JournalReader
from bridge.journal.segments import Journal
from bridge.ownership import Owner
from bridge.pump import Pipeline
from bridge.retry import Backoff
from config.journal import JournalSettings
from config.pump import PumpSettings
from tests.fixtures.processes import wait_for
from tests.unit.doubles import HistorySource, MemorySink, change, events_of, history

_TIMEOUT = 5.0
_IDENTITY = "test /p/"


def snapshot(revision: int, keys: int, *, reason: SnapshotReason = SnapshotReason.INITIAL) -> Chunk:
    """A whole snapshot at ``revision`` of ``keys`` keys, as one chunk."""
    begin = Event(revision, 0, EventType.MARKER, Op.SNAPSHOT_BEGIN, b"/p/", reason=reason)
    body = [
        Event(revision, 1 + number, EventType.PUT, Op.SNAPSHOT, f"/p/s{number}".encode(), b"s")
        for number in range(keys)
    ]
    end = Event(revision, keys + 1, EventType.MARKER, Op.SNAPSHOT_END, b"/p/", reason=reason)
    return Chunk([begin, *body, end], revision, 4 * keys)


def settings(path: Path, **overrides: float) -> JournalSettings:
    return JournalSettings(path=path, **overrides)  # type: ignore[arg-type]


def opened(path: Path, **overrides: float) -> Journal:
    journal = Journal(settings(path, **overrides), identity=_IDENTITY)
    journal.open()
    return journal


def test_a_frame_keeps_every_field_of_its_events() -> None:
    events = [
        Event(7, 0, EventType.MARKER, Op.SNAPSHOT_BEGIN, b"/p/", reason=SnapshotReason.LOST),
        Event(
            7,
            1,
            EventType.PUT,
            Op.UPDATE,
            b"/p/\xff\x00bin",
            b"\x00\x01",
            b"",
            7,
            3,
            4,
            99,
            more=True,
            prev_mod_revision=5,
            prev_create_revision=3,
            prev_version=3,
            prev_lease=98,
        ),
        Event(7, 2, EventType.DELETE, Op.DELETE, b"/p/gone", None, None, 7),
        Event(7, 3, EventType.PUT, Op.SNAPSHOT, b"/p/x", closes_snapshot=True, opens_snapshot=True),
        Event(
            8,
            0,
            EventType.PUT,
            Op.CREATE,
            b"/p/big",
            omitted_bytes=OmittedBytes(value=5_000_000, prev_value=None),
        ),
    ]
    chunk = Chunk(events, 9, 123)
    data = frames.encode(chunk)
    decoded = frames.decode(data[: frames.HEADER_BYTES], data[frames.HEADER_BYTES :])
    assert (decoded.events, decoded.revision, decoded.size) == (events, 9, 123)
    fields = ("more", "closes_snapshot", "opens_snapshot", "prev_mod_revision", "prev_lease")
    for field in fields:  # not part of equality, so compared one by one
        assert [getattr(e, field) for e in decoded.events] == [getattr(e, field) for e in events]
    damaged = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(frames.TornFrameError):
        frames.decode(damaged[: frames.HEADER_BYTES], damaged[frames.HEADER_BYTES :])


def test_reopening_cuts_a_torn_write_and_resumes_after_the_last_whole_frame(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    chunks = [snapshot(10, 3), *history(range(11, 14))]
    for chunk in chunks:
        journal.append(chunk)
    journal.close()
    segment = next(tmp_path.glob("*.seg"))
    whole = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(frames.encode(history(range(14, 15))[0])[:-3])  # a crash mid-append
    reopened = Journal(settings(tmp_path), identity=_IDENTITY)
    assert reopened.open() == chunks[-1].events[-1]
    assert segment.stat().st_size == whole
    reopened.append(history(range(14, 15))[0])
    assert reopened.tail == change(14)


def test_a_log_of_other_keys_is_started_afresh(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    journal.append(snapshot(10, 2))
    journal.close()
    other = Journal(settings(tmp_path), identity="test /q/")
    assert other.open() is None
    assert list(tmp_path.glob("*.seg")) == []


def test_where_a_sink_resumes(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    assert journal.start_for(None) is not None  # empty: its first snapshot is to come
    assert journal.start_for(change(5)) is None  # what follows revision 5 is not known yet
    journal.append(snapshot(10, 2))
    for chunk in history(range(11, 13), per_revision=2):
        journal.append(chunk)
    fresh = journal.start_for(None)
    assert fresh is not None and (fresh.offset, fresh.initial) == (0, True)
    assert journal.start_for(change(9)) is None  # before the log's snapshot: etcd's history
    whole = journal.start_for(change(11, 1))
    assert whole is not None and whole.after == Position(11, 2**62)
    inside = journal.start_for(change(12, 0, more=True))
    assert inside is not None and inside.after == Position(12, 0)
    other_key = Event(12, 0, EventType.PUT, Op.SNAPSHOT, b"/p/elsewhere")
    assert journal.start_for(other_key) is None  # same position, another stream
    ahead = journal.start_for(change(40))
    assert ahead is not None and ahead.offset == journal.progress()[0]  # waits for it


def read(journal: Journal, tail: Event | None, *, count: int) -> list[Event]:
    """The first ``count`` events the log hands a sink whose tail is ``tail``."""
    start = journal.start_for(tail)
    assert start is not None
    health = PipelineHealth(sink="reader")
    reader = JournalReader(journal, start, health=health, recorder=PipelineHealth(sink="log"))
    events: list[Event] = []
    for chunk in reader:
        events += chunk.events
        if len(events) >= count:
            reader.close()
    return events


def test_a_fresh_sink_reads_the_logs_snapshot_as_its_initial_one(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    taken = snapshot(10, 2, reason=SnapshotReason.COMPACTED)
    journal.append(taken)
    journal.append(history(range(11, 12))[0])
    events = read(journal, None, count=5)
    assert [e.reason for e in events] == [SnapshotReason.INITIAL, None, None, "initial", None]
    assert [e.position for e in events] == [e.position for e in [*taken.events, change(11)]]
    resumed = read(journal, taken.events[1], count=3)  # a sink that stopped inside it
    assert [e.position for e in resumed] == [e.position for e in [*taken.events[2:], change(11)]]
    assert resumed[1].reason is SnapshotReason.INITIAL


def test_trimming_keeps_the_budget_and_a_sink_behind_it_is_told(tmp_path: Path) -> None:
    journal = opened(tmp_path, max_bytes=1024 * 1024, segment_bytes=64 * 1024)
    journal.append(snapshot(10, 2))
    behind = PipelineHealth(sink="behind")
    journal.register(behind.stats)  # holds nothing: pins the log until the budget
    start = journal.start_for(None)
    assert start is not None
    for chunk in history(range(11, 400), value=b"x" * 8192):
        journal.append(chunk)
    assert journal.size <= 1024 * 1024 + 64 * 1024 + 9000
    assert journal.start_for(None) is None  # its first snapshot is gone
    reader = JournalReader(journal, start, health=behind, recorder=PipelineHealth(sink="log"))
    with pytest.raises(JournalOverrunError):
        list(reader)


def test_segments_every_sink_has_passed_are_trimmed(tmp_path: Path) -> None:
    journal = opened(tmp_path, segment_bytes=64 * 1024)
    ahead = PipelineHealth(sink="ahead")
    journal.register(ahead.stats)
    journal.append(snapshot(10, 2))
    for chunk in history(range(11, 60), value=b"x" * 8192):
        ahead.stats.position = chunk.events[-1].position
        journal.append(chunk)
    assert len(list(tmp_path.glob("*.seg"))) <= 2
    assert journal.start_for(change(59)) is not None


@contextmanager
def bridge_with_log(
    path: Path,
    etcd: HistorySource,
    sinks: list[MemorySink],
    *,
    catch_up: HistorySource | None = None,
    **overrides: float,
) -> Iterator[tuple[Journal, list[Pipeline], threading.Event]]:
    """The log's reader and one pipeline per sink reading the log, until the block ends;
    ``catch_up``: the sinks' etcd where the log does not hold what they need (default:
    ``etcd``, the reader's)."""
    stop = threading.Event()
    recorder = PipelineHealth(sink="journal")
    with recording(
        settings(path, **overrides),
        identity=_IDENTITY,
        etcd=etcd,
        catch_up=catch_up or etcd,
        health=recorder,
        shutdown_timeout=_TIMEOUT,
    ) as (journal, source):
        pipelines = [
            Pipeline(
                sink,
                source=source,
                limits=PumpSettings(),
                stop=stop,
                health=PipelineHealth(sink=f"sink{number}"),
                may_write=lambda: True,
                backoff=Backoff(initial=0.001, maximum=0.001),
            )
            for number, sink in enumerate(sinks)
        ]
        threads = [threading.Thread(target=p.run, daemon=True) for p in pipelines]
        for pipeline in pipelines:
            journal.register(pipeline.health.stats)
        for thread in threads:
            thread.start()
        try:
            yield journal, pipelines, stop
        finally:
            stop.set()
            for thread in threads:
                thread.join(_TIMEOUT)


def delivered(sink: MemorySink) -> list[Position]:
    return [event.position for event in sink.durable]


def test_sinks_read_one_recording_of_etcd_each_at_its_own_pace(tmp_path: Path) -> None:
    chunks = [snapshot(10, 50), *history(range(11, 200), per_revision=3)]
    etcd = HistorySource(chunks)
    gate = threading.Event()
    fast, slow = MemorySink(), MemorySink(on_write=lambda _batch: gate.wait())
    expected = [event.position for event in events_of(chunks)]
    with bridge_with_log(tmp_path, etcd, [fast, slow]):
        wait_for(lambda: delivered(fast) == expected, timeout=_TIMEOUT, what="fast sink")
        assert len(delivered(slow)) < len(expected)
        gate.set()
        wait_for(lambda: delivered(slow) == expected, timeout=_TIMEOUT, what="slow sink")
    assert etcd.tails == [None]  # etcd read once, by the log's reader alone


def test_a_sink_behind_the_log_catches_up_from_etcd_then_reads_the_log(tmp_path: Path) -> None:
    chunks = [snapshot(10, 5), *history(range(11, 40))]
    etcd = HistorySource(chunks)
    journal = opened(tmp_path)
    for chunk in chunks[20:]:  # the log holds only the end, after a whole revision
        journal.append(chunk)
    journal.close()
    behind = MemorySink()
    behind.durable = events_of(chunks[:3])
    with bridge_with_log(tmp_path, etcd, [behind]):
        expected = [event.position for event in events_of(chunks)]
        wait_for(lambda: delivered(behind) == expected, timeout=_TIMEOUT, what="caught up")
    assert etcd.tails[0] == chunks[-1].events[-1]  # the log's reader, from its tail
    assert etcd.tails[1] == chunks[2].events[-1]  # the sink, from its own
    assert etcd.handed == 30 - 12  # revisions 13 to 30, where the log takes over


def test_a_log_whose_end_etcd_compacted_starts_afresh_and_a_sink_past_it_needs_no_snapshot(
    tmp_path: Path,
) -> None:
    """A standby's log after a takeover: it ends at revision 15, etcd compacted at 20, and
    the sink followed the former leader's log to 25. The reader's resync snapshot (30)
    begins a new log; the sink catches up from etcd, from 25, with no snapshot."""
    history_ = [snapshot(10, 5), *history(range(11, 41))]
    journal = opened(tmp_path)
    for chunk in history_[:6]:
        journal.append(chunk)
    journal.close()
    resync = snapshot(30, 5, reason=SnapshotReason.COMPACTED)
    reader = HistorySource([*history_[:6], resync, *history_[21:]])  # from 15: the snapshot
    sink = MemorySink()
    sink.durable = events_of(history_[:16])
    expected = [event.position for event in events_of(history_)]
    with bridge_with_log(tmp_path, reader, [sink], catch_up=HistorySource(history_)) as (
        journal,
        _pipelines,
        _stop,
    ):
        wait_for(lambda: delivered(sink) == expected, timeout=_TIMEOUT, what="caught up")
        assert journal.start_for(None) is not None, "the new log begins with the snapshot"
        assert journal.start_for(history_[6].events[-1]) is None, "nor holds the old log"
    assert reader.tails == [history_[5].events[-1]]


def test_a_requested_snapshot_is_the_sinks_own_from_etcd(tmp_path: Path) -> None:
    chunks = [snapshot(10, 5), *history(range(11, 20))]
    etcd = HistorySource(chunks)
    sink = MemorySink()
    with bridge_with_log(tmp_path, etcd, [sink]) as (_journal, pipelines, _stop):
        wait_for(lambda: len(sink.durable) == 16, timeout=_TIMEOUT, what="history delivered")
        pipelines[0].health.snapshot_request.ask()
        wait_for(lambda: len(etcd.tails) == 2, timeout=_TIMEOUT, what="etcd opened for it")
    assert etcd.tails[1] == chunks[-1].events[-1]


def test_a_second_bridge_on_the_same_directory_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    first = Journal(settings(tmp_path), identity=_IDENTITY, owner=Owner("one", "host-a", 11))
    first.open()
    second = Journal(settings(tmp_path), identity=_IDENTITY, owner=Owner("two", "host-b", 22))
    with pytest.raises(JournalError, match="BRIDGE_JOURNAL__PATH: .*'one', pid 11 on host host-a"):
        second.open()
    first.close()
    assert second.open() is None  # free once the first has closed it
