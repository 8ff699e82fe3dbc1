"""The core end to end: etcd -> bridge process -> file sink, against a real etcd."""

import base64
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.events import EventType, Op, Position, SnapshotReason
from tests.fixtures.bridge import BridgeFactory, last_event, metric, read_events, serving
from tests.fixtures.etcd import EtcdFactory, EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once, load_keys


def file_bridge(
    factory: BridgeFactory, server: EtcdServer, *, prefix: str, path: Path, **extra: str
) -> dict[str, str]:
    return {
        "BRIDGE_ETCD__ENDPOINTS": server.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_SINKS": "file",
        "BRIDGE_FILE__PATH": str(path),
        "BRIDGE_NAME": "test",
        **extra,  # overrides any of the above
    }


def wait_for_revision(path: Path, revision: int, *, timeout: float = 30) -> None:
    def reached() -> bool:
        events = read_events(path)
        return bool(events) and events[-1].revision >= revision

    wait_for(reached, timeout=timeout, what=f"revision {revision} in {path.name}")


def kill_repeatedly(
    factory: BridgeFactory,
    settings: dict[str, str],
    output: Path,
    writer: RecordingWriter,
    *,
    rounds: int,
    chaos: random.Random,
    steps: tuple[int, int],
) -> list[Position]:
    """``rounds`` times: start a bridge, write ``steps`` (a range) operations, and once it has
    made something durable (past start-up) kill -9 it at a random moment of the stream that
    goes on meanwhile: snapshotting, mid-batch or idle. The positions ``output`` held at each
    kill."""
    held_at_kills: list[Position] = []
    for _round in range(rounds):
        before = last_event(output)
        factory.start(**settings)
        for _ in range(chaos.randrange(*steps)):
            writer.step()
        wait_for(
            lambda before=before: last_event(output) != before,  # type: ignore[misc]
            timeout=30,
            what="durable progress before the kill",
            interval=0.05,
        )
        for _ in range(chaos.randrange(0, 100)):
            writer.step()
        held = last_event(output)
        factory.processes[-1].kill()
        assert held is not None
        held_at_kills.append(held.position)
    return held_at_kills


@pytest.mark.parametrize("version", ["3.5", "3.4"])
def test_changes_become_events(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path, version: str
) -> None:
    server = etcd_factory.start(version=version)
    prefix = "/app/"
    output = tmp_path / "events.jsonl"
    with server.client() as client:
        client.put(prefix + "existing", b"old")
        client.put("/other/outside", b"ignored")
        bridge = bridge_factory.start(
            **file_bridge(bridge_factory, server, prefix=prefix, path=output)
        )
        wait_for(
            lambda: read_events(output) and read_events(output)[-1].op is Op.SNAPSHOT_END,
            timeout=20,
            what="the snapshot",
        )
        writer = RecordingWriter(client, prefix=prefix, seed=1)
        writer.transaction([prefix.encode() + b"a"])  # create
        writer.transaction([prefix.encode() + b"a"])  # update (or delete, by chance)
        writer.transaction([prefix.encode() + b"x%d" % i for i in range(5)])
        writer.transaction([prefix.encode() + b"x1", prefix.encode() + b"x3"], delete=True)
        last = writer.transaction([b"/app/\xff\xfebinary", b"/app/text"])
        client.put("/other/outside", b"still ignored")
        wait_for_revision(output, last)
    assert bridge.terminate() == 0
    events = read_events(output)
    begin, existing, end = events[:3]
    assert (begin.op, begin.reason, begin.index) == (Op.SNAPSHOT_BEGIN, SnapshotReason.INITIAL, 0)
    assert (existing.op, existing.key, existing.value, existing.index) == (
        Op.SNAPSHOT,
        b"/app/existing",
        b"old",
        1,
    )
    assert existing.revision == begin.revision and existing.mod_revision < begin.revision
    assert (end.op, end.index) == (Op.SNAPSHOT_END, 2)
    assert_exactly_once(events, writer.changes, after=begin.revision)
    transaction = [event for event in events if event.revision == writer.changes[2].revision]
    assert [event.index for event in transaction] == [0, 1, 2, 3, 4]
    deleted = [event for event in events if event.type is EventType.DELETE]
    assert {event.key for event in deleted} == {b"/app/x1", b"/app/x3"}
    assert all(event.value is None and event.prev_value is not None for event in deleted)
    assert any(event.key == b"/app/\xff\xfebinary" for event in events)
    binary_key = base64.b64encode(b"/app/\xff\xfebinary")
    raw_line = next(line for line in output.read_bytes().splitlines() if binary_key in line)
    assert b'"b64":["key"' in raw_line


def test_snapshot_spans_many_pages(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    keys = 3000
    with etcd.client() as client:
        load_keys(client, prefix=prefix, count=keys, value=b"x" * 100)
    bridge = bridge_factory.start(
        **file_bridge(
            bridge_factory,
            etcd,
            prefix=prefix,
            path=output,
            BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES=str(64 * 1024),
        )
    )
    wait_for(
        lambda: read_events(output) and read_events(output)[-1].op is Op.SNAPSHOT_END,
        timeout=30,
        what="the snapshot",
    )
    assert bridge.terminate() == 0
    events = read_events(output)
    assert len(events) == keys + 2
    assert [event.index for event in events] == list(range(keys + 2))
    assert [event.key for event in events[1:-1]] == [
        f"{prefix}{number:06d}".encode() for number in range(keys)
    ]
    assert len({event.revision for event in events}) == 1


def test_kill_9_anywhere_leaves_each_change_once(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    settings = file_bridge(
        bridge_factory, etcd, prefix=prefix, path=output, BRIDGE_PUMP__BATCH_EVENTS="7"
    )
    chaos = random.Random(7)  # noqa: S311 - reproducible chaos, not security
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=2)
        for _ in range(200):
            writer.step()
        start_revision = writer.changes[-1].revision
        held_at_kills = kill_repeatedly(
            bridge_factory, settings, output, writer, rounds=8, chaos=chaos, steps=(50, 400)
        )
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching(timeout=60)  # up, so that SIGTERM stops it gracefully
        wait_for_revision(output, writer.changes[-1].revision, timeout=60)
    assert bridge.terminate() == 0
    events = read_events(output)
    snapshot_revision = events[0].revision
    assert events[0].op is Op.SNAPSHOT_BEGIN and snapshot_revision >= start_revision
    assert sum(event.op is Op.SNAPSHOT_END for event in events) == 1
    assert_exactly_once(events, writer.changes, after=snapshot_revision)
    delivered = {event.position for event in events}
    assert all(position in delivered for position in held_at_kills), "durable, then lost"
    assert held_at_kills == sorted(set(held_at_kills)), "every run made progress"


def test_kill_9_during_snapshot_resumes_it(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    keys = 20000
    with etcd.client() as client:
        load_keys(client, prefix=prefix, count=keys, value=b"y" * 100)
    settings = file_bridge(
        bridge_factory,
        etcd,
        prefix=prefix,
        path=output,
        BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES=str(64 * 1024),
        BRIDGE_PUMP__BATCH_EVENTS="100",
        BRIDGE_FILE__FSYNC="false",
    )
    bridge = bridge_factory.start(**settings)
    wait_for(lambda: len(read_events(output)) > 2000, timeout=30, what="part of the snapshot")
    bridge.kill()
    partial = read_events(output)
    assert partial[-1].op is not Op.SNAPSHOT_END, "snapshot finished before the kill; grow it"
    with open(output, "ab") as torn:  # a crash in the middle of a line
        torn.write(b'{"revision":')
    with etcd.client() as client:
        client.put(prefix + "000005", b"changed after the snapshot revision")
    bridge = bridge_factory.start(**settings)
    wait_for(
        lambda: any(e.op is Op.UPDATE for e in read_events(output)),
        timeout=30,
        what="the watch after the resumed snapshot",
    )
    assert bridge.terminate() == 0
    events = read_events(output)
    assert [event.index for event in events[:-1]] == list(range(keys + 2))
    snapshot_keys = [event.key for event in events if event.op is Op.SNAPSHOT]
    assert snapshot_keys == [f"{prefix}{number:06d}".encode() for number in range(keys)]
    assert events[-1].op is Op.UPDATE and events[-1].prev_value == b"y" * 100


def test_compaction_while_down_resyncs(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    prefix = "/c/"
    output = tmp_path / "events.jsonl"
    settings = file_bridge(bridge_factory, server, prefix=prefix, path=output)
    with server.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=3)
        bridge = bridge_factory.start(**settings)
        for _ in range(30):
            writer.step()
        wait_for_revision(output, writer.changes[-1].revision)
        assert bridge.terminate() == 0
        for _ in range(30):
            writer.step()
        client.put("/unrelated", b"moves the revision past the prefix's last change")
        status_revision = writer.changes[-1].revision + 1
        client.compact(status_revision)
        bridge = bridge_factory.start(**settings)
        wait_for(
            lambda: (
                (last := last_event(output)) is not None
                and last.op is Op.SNAPSHOT_END
                and last.reason is SnapshotReason.COMPACTED
            ),
            timeout=30,
            what="the resync snapshot",
        )
        state_then = dict(writer.state)
        writer.step()
        wait_for_revision(output, writer.changes[-1].revision)
        assert bridge.metric("etcd_bridge_resyncs_total", sink="file") == 1
    assert bridge.terminate() == 0
    events = read_events(output)
    begins = [event for event in events if event.op is Op.SNAPSHOT_BEGIN]
    assert [begin.reason for begin in begins] == [SnapshotReason.INITIAL, SnapshotReason.COMPACTED]
    resync = begins[1]
    mirrored = {
        e.key: e.value for e in events if e.op is Op.SNAPSHOT and e.revision == resync.revision
    }
    assert mirrored == state_then
    positions = [event.position for event in events]
    assert positions == sorted(set(positions))


@pytest.mark.parametrize("journal", [False, True], ids=["etcd", "log"])
def test_a_change_etcd_sends_without_its_previous_value_is_a_resync(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path, journal: bool
) -> None:
    """etcd looks each event's previous key-value up as it sends the event, and leaves it out
    when that revision was compacted meanwhile (etcd-io/etcd#10681): here under a watch that
    lags because its bridge is paused. An update or delete without it is history lost, as a
    compacted position is, so the bridge resyncs (and never passes it on); with the log on,
    its reader does, and the sink follows."""
    server = etcd_factory.start()
    prefix = "/p/"
    output = tmp_path / "events.jsonl"
    log = {"BRIDGE_JOURNAL__PATH": str(tmp_path / "journal")} if journal else {}
    settings = file_bridge(
        bridge_factory,
        server,
        prefix=prefix,
        path=output,
        BRIDGE_ETCD__STALL_TIMEOUT="120",  # no stall check may end the lagging watch
        **log,
    )
    keys = [f"{prefix}k{number:02d}" for number in range(20)]
    with server.client() as client:
        for key in keys:
            client.put(key, b"first")
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()
        bridge.pause()
        padding = b"p" * 1024  # 2,000 revisions of 2 KiB events: far more than gRPC buffers
        for number in range(2000):
            client.put(keys[number % len(keys)], b"%d-" % number + padding)
        revision = client.put("/unrelated", b"the revision to compact").header.revision
        client.compact(revision)
        state = {meta.key: value for value, meta in client.get_prefix(prefix)}
        bridge.resume()
        wait_for(
            lambda: (
                (last := last_event(output)) is not None
                and last.op is Op.SNAPSHOT_END
                and last.revision >= revision
            ),
            timeout=60,
            what="the resync snapshot",
        )
        reader = "journal" if journal else "file"
        assert bridge.metric("etcd_bridge_resyncs_total", sink=reader) == 1
    assert bridge.terminate() == 0
    # The case this test is about happened: etcd sent a change without its previous value.
    assert "PreviousValueCompactedError" in bridge.log_text()
    events = read_events(output)
    changes = [event for event in events if event.op in (Op.UPDATE, Op.DELETE)]
    assert [event.position for event in changes if event.prev_value is None] == []
    begins = [event for event in events if event.op is Op.SNAPSHOT_BEGIN]
    assert begins[-1].reason is SnapshotReason.COMPACTED
    mirrored = {
        e.key: e.value for e in events if e.op is Op.SNAPSHOT and e.revision == begins[-1].revision
    }
    assert mirrored == state
    positions = [event.position for event in events]
    assert positions == sorted(set(positions))


def test_a_long_replay_is_handed_on_in_whole_revisions(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    """Catching up, etcd sends up to 1,000 revisions in one response (here 6,000 events);
    the bridge cuts it into chunks, between revisions, and a kill in the middle of it loses
    and repeats nothing."""
    output = tmp_path / "events.jsonl"
    settings = file_bridge(
        bridge_factory, etcd, prefix=prefix, path=output, BRIDGE_PUMP__BATCH_EVENTS="150"
    )
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=5, keys=100)
        writer.transaction([prefix.encode() + b"k000"])
        bridge = bridge_factory.start(**settings)
        wait_for_revision(output, writer.changes[-1].revision)
        bridge.kill()
        keys = [prefix.encode() + b"k%03d" % number for number in range(100)]
        for _ in range(60):
            writer.transaction(keys)
        bridge = bridge_factory.start(**settings)
        wait_for(lambda: len(read_events(output)) > 1000, timeout=30, what="part of the replay")
        bridge.kill()
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching(timeout=30)
        wait_for_revision(output, writer.changes[-1].revision)
    assert bridge.terminate() == 0
    events = read_events(output)
    assert_exactly_once(events, writer.changes, after=events[0].revision)
    replayed = [event for event in events if event.revision > writer.changes[0].revision]
    assert len(replayed) == 6000
    assert [event.index for event in replayed] == list(range(100)) * 60


def test_etcd_restart_under_running_bridge(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    prefix = "/r/"
    output = tmp_path / "events.jsonl"
    bridge = bridge_factory.start(**file_bridge(bridge_factory, server, prefix=prefix, path=output))
    bridge.wait_watching()
    with server.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=4)
        for _ in range(100):
            writer.step()
    server.restart()
    with server.client() as client:
        writer.client = client
        for _ in range(100):
            writer.step()
        wait_for_revision(output, writer.changes[-1].revision)
        assert bridge.metric("etcd_bridge_etcd_reconnects_total", sink="file") >= 1
    assert bridge.terminate() == 0
    events = read_events(output)
    assert_exactly_once(events, writer.changes, after=events[0].revision)


def test_stalled_watch_is_reopened(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    output = tmp_path / "events.jsonl"
    bridge = bridge_factory.start(
        **file_bridge(
            bridge_factory,
            server,
            prefix="/s/",
            path=output,
            BRIDGE_ETCD__STALL_TIMEOUT="1.5",
            BRIDGE_ETCD__TIMEOUT="1",
        )
    )
    bridge.wait_watching()
    server.process.pause()
    wait_for(lambda: "watch stalled" in bridge.log_text(), timeout=20, what="stall detection")
    server.process.resume()
    with server.client() as client:
        revision = client.put("/s/after", b"1").header.revision
    wait_for_revision(output, revision)
    assert bridge.terminate() == 0


def run_command(command: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", command],
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BRIDGE_ETCD__ENDPOINTS", "localhost:2379"),
        ("BRIDGE_PUMP__BATCH_EVENTS", "many"),
        ("BRIDGE_SINKS", "file,nosuchsink"),
        ("BRIDGE_ETCD__CA_FILE", "/nonexistent/ca.pem"),
    ],
)
def test_bad_setting_is_one_line_naming_it(variable: str, value: str, tmp_path: Path) -> None:
    result = run_command("run", **{variable: value, "BRIDGE_FILE__PATH": str(tmp_path / "f")})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


def test_check_names_an_unreachable_endpoint(tmp_path: Path) -> None:
    result = run_command(
        "check",
        BRIDGE_ETCD__ENDPOINTS="http://127.0.0.1:9",
        BRIDGE_ETCD__TIMEOUT="1",
        BRIDGE_STDOUT__CHECKPOINT_DIR=str(tmp_path),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "127.0.0.1:9" in lines[0] and "BRIDGE_ETCD__ENDPOINTS" in lines[0]


def test_check_passes_on_a_good_setup(etcd: EtcdServer, tmp_path: Path) -> None:
    result = run_command(
        "check",
        BRIDGE_ETCD__ENDPOINTS=etcd.url,
        BRIDGE_SINKS="file",
        BRIDGE_FILE__PATH=str(tmp_path / "out.jsonl"),
    )
    assert result.returncode == 0, result.stderr


def test_sigterm_exits_zero_promptly(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    bridge = bridge_factory.start(**file_bridge(bridge_factory, etcd, prefix=prefix, path=output))
    bridge.wait_watching()
    assert bridge.process is not None
    bridge.signal(signal.SIGINT)
    assert bridge.process.wait(15) == 0


def test_position_ahead_of_a_new_etcd_stops_loudly(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    first = etcd_factory.start()
    output = tmp_path / "events.jsonl"
    with first.client() as client:
        for number in range(20):
            revision = client.put(f"/a/{number}", b"v").header.revision
    bridge = bridge_factory.start(**file_bridge(bridge_factory, first, prefix="/a/", path=output))
    wait_for(
        lambda: read_events(output) and read_events(output)[-1].op is Op.SNAPSHOT_END,
        timeout=20,
        what="the snapshot",
    )
    assert bridge.terminate() == 0 and read_events(output)[-1].revision == revision
    replacement = etcd_factory.start()
    before = output.read_bytes()
    bridge = bridge_factory.start(
        **file_bridge(bridge_factory, replacement, prefix="/a/", path=output)
    )
    assert bridge.process is not None and bridge.process.wait(30) == 1
    assert "was replaced or restored from a backup" in bridge.log_text()
    assert output.read_bytes() == before


@pytest.mark.parametrize("version", ["3.5", "3.4"])
def test_a_revision_over_the_watch_limit_arrives_in_fragments(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path, version: str
) -> None:
    """A delete-range whose response is over BRIDGE_ETCD__WATCH_RESPONSE_BYTES: gRPC refuses
    it whole, so it can only arrive through etcd's fragments; then whole responses again.
    Values of 1 KiB keep the fragments' event count, and so etcd's quadratic cost of cutting
    them, small (70,000 deletes of 100 B take 90 s on etcd 3.4)."""
    server = etcd_factory.start(version=version)
    prefix, keys = "/big/", 9000  # about 9.6 MB of deletes with their previous values
    output = tmp_path / "events.jsonl"
    with server.client() as client:
        load_keys(client, prefix=prefix, count=keys, value=b"v" * 1024)
        bridge, port = serving(
            bridge_factory,
            **file_bridge(
                bridge_factory,
                server,
                prefix=prefix,
                path=output,
                BRIDGE_ETCD__WATCH_RESPONSE_BYTES=str(8 * 1024 * 1024),
            ),
        )
        bridge.wait_watching()
        assert metric(port, "etcd_bridge_watch_fragmented_total", sink="file") == 0
        deleted = client.delete_prefix(prefix).header.revision
        wait_for(
            lambda: read_events(output)[-1].position == Position(deleted, keys - 1),
            timeout=60,
            what="the whole delete-range",
        )
        after = client.put(prefix + "after", b"small").header.revision
        wait_for_revision(output, after)
        assert metric(port, "etcd_bridge_watch_fragmented_total", sink="file") == 1
    assert bridge.terminate() == 0
    events = read_events(output)
    deletes = [event for event in events if event.revision == deleted]
    assert [event.index for event in deletes] == list(range(keys))
    assert [event.key for event in deletes] == [
        f"{prefix}{number:06d}".encode() for number in range(keys)
    ]
    assert all(event.prev_value == b"v" * 1024 for event in deletes)
    assert [event.more for event in deletes] == [True] * (keys - 1) + [False]
    assert (events[-1].revision, events[-1].value, events[-1].more) == (after, b"small", False)
