"""Failover between endpoints and leader changes, large responses, and the stdout sink."""

import signal
from pathlib import Path

import pytest

from bridge.events import Op
from tests.fixtures.bridge import BridgeFactory, BridgeProcess, read_events
from tests.fixtures.etcd import EtcdCluster, EtcdFactory, EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once, put_all
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision


def connected_member(cluster: EtcdCluster, bridge: BridgeProcess) -> EtcdServer:
    """The member the bridge last connected to, from its log."""
    line = [line for line in bridge.log_text().splitlines() if "connected to etcd" in line][-1]
    return next(member for member in cluster.members if f"endpoint={member.url} " in line)


def test_member_and_leader_killed_under_running_bridge(
    etcd_cluster: EtcdCluster, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    output = tmp_path / "events.jsonl"
    settings = file_bridge(
        bridge_factory,
        etcd_cluster.members[0],
        prefix="/ha/",
        path=output,
        BRIDGE_ETCD__ENDPOINTS=etcd_cluster.urls,
        BRIDGE_ETCD__TIMEOUT="2",
    )
    bridge = bridge_factory.start(**settings)
    bridge.wait_watching()
    writer: RecordingWriter | None = None
    for round_number in range(2):
        # Round 0 kills the member the bridge watches through, round 1 the leader.
        victim = (
            connected_member(etcd_cluster, bridge) if round_number == 0 else etcd_cluster.leader()
        )
        survivor = next(m for m in etcd_cluster.members if m is not victim and m.process.running)
        with survivor.client() as client:
            if writer is None:
                writer = RecordingWriter(client, prefix="/ha/", seed=5)
                writer.revisions_from_keys = True  # members and leaders die under it
            writer.client = client
            for _ in range(50):
                writer.step()
            victim.process.kill()
            with etcd_cluster.leader().client() as leader_client:
                writer.client = leader_client
                for _ in range(50):
                    writer.step()
            wait_for_revision(output, writer.changes[-1].revision, timeout=60)
        victim.start()  # back as a follower, same data
    assert bridge.metric("etcd_bridge_etcd_reconnects_total", sink="file") >= 1
    assert bridge.terminate() == 0
    assert writer is not None
    events = read_events(output)
    divergence = etcd_cluster.divergence()
    if divergence is not None:  # the writer and the bridge may have heard different members
        pytest.skip(
            f"etcd's members diverged after the kills ({divergence}): etcd-io/etcd#13766, "
            "fixed in etcd 3.5.3 (EtcdCluster.divergence)"
        )
    assert_exactly_once(events, writer.changes, after=events[0].revision)
    positions = [event.position for event in read_events(output)]
    assert positions == sorted(set(positions))


def test_responses_larger_than_grpc_default_limit(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start(extra_args=("--max-request-bytes=8388608",))
    output = tmp_path / "events.jsonl"
    settings = file_bridge(bridge_factory, server, prefix="/big/", path=output)
    big = b"b" * (1024 * 1024)
    with server.client() as client:
        for number in range(6):  # a 6 MiB snapshot page
            client.put(f"/big/s{number}", big)
        bridge = bridge_factory.start(**settings)
        wait_for(
            lambda: read_events(output) and read_events(output)[-1].op is Op.SNAPSHOT_END,
            timeout=30,
            what="the snapshot",
        )
        assert bridge.terminate() == 0
        # one 6 MiB revision, replayed as one watch response
        revision = put_all(client, [(b"/big/t%d" % n, big) for n in range(6)])
        bridge = bridge_factory.start(**settings)
        wait_for_revision(output, revision)
    assert bridge.terminate() == 0
    events = read_events(output)
    assert sum(event.value == big for event in events) == 12


def test_stdout_sink_resumes_from_its_checkpoint(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    settings = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_STDOUT__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    with etcd.client() as client:
        first = client.put(prefix + "a", b"1").header.revision
        bridge = bridge_factory.start(**settings)
        wait_for(
            lambda: (
                read_events(bridge.stdout_path)
                and read_events(bridge.stdout_path)[-1].op is Op.SNAPSHOT_END
            ),
            timeout=20,
            what="the snapshot on stdout",
        )
        second = client.put(prefix + "a", b"2").header.revision
        wait_for_revision(bridge.stdout_path, second)
        assert bridge.terminate() == 0
        third = client.put(prefix + "b", b"3").header.revision
        again = bridge_factory.start(**settings)
        wait_for_revision(again.stdout_path, third)
        assert again.process is not None
        again.signal(signal.SIGTERM)
        assert again.process.wait(20) == 0
    resumed = read_events(again.stdout_path)
    assert [(e.revision, e.key, e.value) for e in resumed] == [(third, f"{prefix}b".encode(), b"3")]
    assert first < second < third
