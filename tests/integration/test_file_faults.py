"""The file and stdout sinks against what can happen to their disk: it fills up (a tmpfs of
1 MiB mounted by the test, filled with a file the test then deletes), another bridge is
pointed at the same file, the file is truncated under the running bridge."""

from collections.abc import Callable
from pathlib import Path

from bridge.events import Event, Op, SnapshotReason
from tests.fixtures.bridge import BridgeFactory, BridgeProcess, read_events
from tests.fixtures.disk import fill, small_disk
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.integration.test_pipeline_file import file_bridge

_DISK_BYTES = 1 << 20


def write_until(writer: RecordingWriter, condition: Callable[[], bool], *, what: str) -> None:
    """etcd operations, one per poll, until ``condition`` holds."""

    def stepped() -> bool:
        writer.step()
        return condition()

    wait_for(stepped, timeout=30, what=what, interval=0.01)


def phase_of(bridge: BridgeProcess, sink: str) -> str:
    return bridge.phases()[1][sink]


def caught_up(events: Callable[[], list[Event]], writer: RecordingWriter) -> None:
    revision = writer.changes[-1].revision
    wait_for(
        lambda: (held := events()) and held[-1].revision >= revision,
        timeout=30,
        what=f"revision {revision}",
    )


def test_a_full_disk_stops_the_file_sink_until_space_returns(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", size=_DISK_BYTES) as disk, etcd.client() as client:
        output = disk / "events.jsonl"
        bridge = bridge_factory.start(
            **file_bridge(bridge_factory, etcd, prefix=prefix, path=output)
        )
        bridge.wait_watching()
        snapshot_end = read_events(output)[-1]
        filler = fill(disk)
        writer = RecordingWriter(client, prefix=prefix, seed=16)
        write_until(writer, lambda: phase_of(bridge, "file") == "sink_down", what="sink_down")
        assert bridge.metric("etcd_bridge_errors_total", sink="file", kind="SinkUnavailableError")
        filler.unlink()
        for _ in range(20):
            writer.step()
        caught_up(lambda: read_events(output), writer)
        assert bridge.terminate() == 0
        assert output.read_bytes().endswith(b"\n"), "a torn line was left"
        assert_exactly_once(read_events(output), writer.changes, after=snapshot_end.revision)


def test_a_full_checkpoint_directory_stops_the_stdout_sink_until_space_returns(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", size=_DISK_BYTES) as disk, etcd.client() as client:
        bridge = bridge_factory.start(
            BRIDGE_ETCD__ENDPOINTS=etcd.url, BRIDGE_ETCD__PREFIX=prefix, BRIDGE_SINKS="stdout",
            BRIDGE_STDOUT__CHECKPOINT_DIR=str(disk), BRIDGE_NAME="full",
        )  # fmt: skip
        bridge.wait_watching()
        checkpoint = disk / "full.stdout.json"
        filler = fill(disk)
        writer = RecordingWriter(client, prefix=prefix, seed=17)
        write_until(writer, lambda: phase_of(bridge, "stdout") == "sink_down", what="sink_down")
        assert sorted(path.name for path in disk.iterdir()) == sorted([checkpoint.name, "filler"])
        Event.from_json(checkpoint.read_bytes())  # the old checkpoint, whole
        filler.unlink()
        for _ in range(20):
            writer.step()
        caught_up(lambda: read_events(bridge.stdout_path), writer)
        assert bridge.terminate() == 0
        events = read_events(bridge.stdout_path)
        assert Event.from_json(checkpoint.read_bytes()) == events[-1]
        assert_exactly_once(events, writer.changes, after=events[0].revision)


def test_a_second_bridge_on_the_same_file_is_refused_naming_the_first(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    settings = file_bridge(bridge_factory, etcd, prefix=prefix, path=output)
    first = bridge_factory.start(**settings)
    first.wait_watching()
    second = bridge_factory.start(**settings)
    assert second.process is not None and first.process is not None
    assert second.process.wait(30) == 1
    refusal = next(line for line in second.log_text().splitlines() if "ERROR" in line)
    assert f"pid {first.process.pid} on host" in refusal and "'test'" in refusal, refusal
    assert str(output) in refusal, refusal
    assert phase_of(first, "file") == "watching"
    assert first.terminate() == 0


def test_a_truncated_file_gets_a_lost_snapshot(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=18)
        for _ in range(20):
            writer.step()
        bridge = bridge_factory.start(
            **file_bridge(bridge_factory, etcd, prefix=prefix, path=output)
        )
        bridge.wait_watching()
        output.write_bytes(b"")  # an operator's mistake: the file is emptied under the bridge

        def lost_snapshot_done() -> bool:
            events = read_events(output)
            return any(e.op is Op.SNAPSHOT_END and e.reason is SnapshotReason.LOST for e in events)

        write_until(writer, lost_snapshot_done, what="the lost snapshot")
        for _ in range(20):
            writer.step()
        caught_up(lambda: read_events(output), writer)
        assert bridge.metric("etcd_bridge_sink_data_lost_total", sink="file") == 1
        assert bridge.terminate() == 0
    events = read_events(output)
    begin = events[0]
    assert (begin.op, begin.reason) == (Op.SNAPSHOT_BEGIN, SnapshotReason.LOST), begin
    assert_exactly_once(events, writer.changes, after=begin.revision)
