"""Two instances, one active: takeover after kill -9 and after a pause; lease-bound keys."""

import threading
from pathlib import Path

from bridge.events import EventType
from tests.fixtures.bridge import BridgeFactory, BridgeProcess, read_events
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision


def active(bridges: list[BridgeProcess]) -> BridgeProcess:
    """The running instance that leads: ``/readyz`` says its pipeline is watching (a standby's
    says ``standby``). Every bridge listed must be running, not paused."""

    def ready(bridge: BridgeProcess) -> bool:
        try:
            return bridge.phases()[0] == 200
        except OSError:  # its endpoint is not up yet
            return False

    def leader() -> BridgeProcess | None:
        return next((bridge for bridge in bridges if bridge.running and ready(bridge)), None)

    return wait_for(leader, timeout=30, what="an active instance", interval=0.05)


class BackgroundWriter:
    """Keeps changing etcd from a thread while the test kills and pauses bridges."""

    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            self.writer.step()
            self.done.wait(0.005)

    def __enter__(self) -> "BackgroundWriter":
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.thread.join()


def ha_settings(
    factory: BridgeFactory, etcd: EtcdServer, *, prefix: str, path: Path
) -> dict[str, str]:
    return file_bridge(
        factory, etcd, prefix=prefix, path=path,
        BRIDGE_HA__ENABLED="true", BRIDGE_HA__TTL="2", BRIDGE_HA__KEY_PREFIX=f"/leaders{prefix}",
        BRIDGE_NAME="ha", BRIDGE_PUMP__BATCH_EVENTS="20",
    )  # fmt: skip


def stop_and_check(bridges: list[BridgeProcess], *, output: Path, writer: RecordingWriter) -> None:
    """Let the active instance catch up, stop every instance cleanly, check exactly once."""
    wait_for_revision(output, writer.changes[-1].revision, timeout=30)
    for bridge in bridges:
        assert bridge.terminate() == 0
    events = read_events(output)
    assert_exactly_once(events, writer.changes, after=events[0].revision)


def test_standby_takes_over_after_kill_9_exactly_once(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    settings = ha_settings(bridge_factory, etcd, prefix=prefix, path=output)
    bridges = [bridge_factory.start(**settings), bridge_factory.start(**settings)]
    with (
        etcd.client() as client,
        BackgroundWriter(RecordingWriter(client, prefix=prefix, seed=9)) as background,
    ):
        for _kill in range(4):
            leader = active(bridges)
            count = len(read_events(output))
            wait_for(lambda: len(read_events(output)) > count + 20, timeout=30, what="progress")  # noqa: B023
            leader.kill()
            bridges.remove(leader)
            bridges.append(bridge_factory.start(**settings))  # comes back as a standby
        leader = active(bridges)
        for standby in (bridge for bridge in bridges if bridge is not leader):
            standby.wait_phase("standby")
    stop_and_check(bridges, output=output, writer=background.writer)


def test_paused_leader_stops_writing_before_takeover(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    settings = ha_settings(bridge_factory, etcd, prefix=prefix, path=output)
    bridges = [bridge_factory.start(**settings), bridge_factory.start(**settings)]
    with (
        etcd.client() as client,
        BackgroundWriter(RecordingWriter(client, prefix=prefix, seed=10)) as background,
    ):
        first = active(bridges)
        wait_for(lambda: len(read_events(output)) > 50, timeout=30, what="progress")
        first.pause()
        active([b for b in bridges if b is not first])
        count = len(read_events(output))
        wait_for(
            lambda: len(read_events(output)) > count + 50, timeout=30, what="takeover progress"
        )
        first.resume()
        first.wait_phase("standby")  # the old leader noticed, stopped, and stands by
    stop_and_check(bridges, output=output, writer=background.writer)


def test_keys_deleted_by_lease_expiry_arrive_as_deletes(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    bridge = bridge_factory.start(**file_bridge(bridge_factory, etcd, prefix=prefix, path=output))
    bridge.wait_watching()
    with etcd.client() as client:
        lease = client.lease(1)
        client.put(prefix + "ephemeral", b"short-lived", lease=lease)
        wait_for(
            lambda: any(e.type is EventType.DELETE for e in read_events(output)),
            timeout=20, what="the lease's DELETE",
        )  # fmt: skip
    assert bridge.terminate() == 0
    put, delete = [e for e in read_events(output) if e.key == f"{prefix}ephemeral".encode()]
    assert put.lease == lease.id and put.value == b"short-lived"
    assert delete.type is EventType.DELETE and delete.prev_value == b"short-lived"
