"""Network partitions on a 3-member etcd cluster (issue 16), each member and each bridge in a
network namespace of its own (``tests.fixtures.netns``).

``test_bridge_fails_over_across_partitions`` runs one bridge through, in turn: the member it
watches cut off from the other two (it loses quorum: ``hasleader`` must end the watch), the
bridge cut from its member (packets dropped: only the stall detector notices), the leader cut
off while it is the only member the bridge reaches (no member answers: phase ``etcd_down``),
a flapping link, and latency with loss on its link where the kernel has ``netem`` (where it
has not, that part is skipped, saying why).
``test_partitioned_leader_stops_before_standby_takes_over`` cuts the active instance of an HA
pair off from etcd, then both instances from the first endpoint (the election must fail over
too). Both check the sink against what etcd answered to the writes: every change once, in
order, none stale.
"""

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pyetcd import etcdrpc

from tests.fixtures.bridge import BridgeFactory, BridgeProcess, get, read_events
from tests.fixtures.etcd import EtcdCluster, EtcdServer
from tests.fixtures.netns import Host, Network
from tests.fixtures.processes import serve, wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.integration.test_high_availability import BackgroundWriter, active, ha_settings
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision

TIMING = {"BRIDGE_ETCD__TIMEOUT": "2", "BRIDGE_ETCD__STALL_TIMEOUT": "3"}
"""Short deadlines, so that each partition is noticed within seconds."""


@pytest.fixture
def cluster(network: Network, tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three etcd members, each in its own namespace (hosts ``m0``..``m2`` of ``network``)."""
    hosts = [network.add_host(f"m{number}") for number in range(3)]
    yield from serve(EtcdCluster(workdir=tmp_path, places=hosts))


def host_of(network: Network, member: EtcdServer) -> Host:
    return next(host for host in network.hosts if host.address == member.host)


def watched(cluster: EtcdCluster, bridge: BridgeProcess) -> EtcdServer:
    """The member the bridge's pipeline last connected to, from its ``/positions``."""
    assert bridge.port is not None
    _status, body = get(bridge.port, "/positions", host=bridge.host)
    endpoint = json.loads(body)["pipelines"][0]["etcd_endpoint"]
    return next(member for member in cluster.members if member.url == endpoint)


def settled_leader(members: Sequence[EtcdServer]) -> EtcdServer:
    """The leader every one of ``members`` follows, once they agree on one of themselves:
    writes through it then land, or fail, without doubt."""

    def agreed() -> EtcdServer | None:
        statuses = []
        for member in members:
            with member.client() as client:
                statuses.append(client.maintenancestub.Status(etcdrpc.StatusRequest(), timeout=1))
        leaders = {status.leader for status in statuses}
        ids = {status.header.member_id: m for status, m in zip(statuses, members, strict=True)}
        return ids.get(leaders.pop()) if len(leaders) == 1 else None

    return wait_for(agreed, timeout=30, what="a leader among the connected members")


def write(writer: RecordingWriter, member: EtcdServer, *, count: int) -> int:
    """``count`` operations through ``member``; the last revision."""
    with member.client() as client:
        writer.client = client
        for _ in range(count):
            writer.step()
    return writer.changes[-1].revision


@pytest.mark.timeout(180)
def test_bridge_fails_over_across_partitions(
    network: Network, cluster: EtcdCluster, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    members = cluster.members
    output = tmp_path / "events.jsonl"
    bridge_host = network.add_host("bridge")
    settings = file_bridge(
        bridge_factory, members[0], prefix="/parts/", path=output,
        BRIDGE_ETCD__ENDPOINTS=cluster.urls, **TIMING,
    )  # fmt: skip
    with members[0].client() as client:
        writer = RecordingWriter(client, prefix="/parts/", seed=16)
        for _ in range(20):
            writer.step()
    bridge = bridge_factory.start(place=bridge_host, **settings)
    bridge.wait_watching()
    started = time.monotonic()

    # 1. The member the bridge watches loses quorum: hasleader ends the watch there.
    cut_off = watched(cluster, bridge)
    others = [member for member in members if member is not cut_off]
    network.isolate(host_of(network, cut_off), from_hosts=[host_of(network, m) for m in others])
    revision = write(writer, settled_leader(others), count=40)
    wait_for_revision(output, revision, timeout=30)
    assert watched(cluster, bridge) in others
    network.heal_all()
    print(f"member cut from quorum: caught up after {time.monotonic() - started:.1f}s")

    # 2. The bridge loses its member: packets vanish, the stall detector notices.
    started = time.monotonic()
    lost = watched(cluster, bridge)
    network.cut(bridge_host, host_of(network, lost))
    revision = write(writer, settled_leader(members), count=40)
    wait_for_revision(output, revision, timeout=30)
    assert watched(cluster, bridge) is not lost
    network.heal_all()
    print(f"bridge cut from its member: caught up after {time.monotonic() - started:.1f}s")

    # 3. The leader is cut off while it is the only member the bridge reaches: no member
    # answers (etcd_down) until the bridge reaches a follower again, which has a new leader.
    started = time.monotonic()
    leader = settled_leader(members)
    followers = [member for member in members if member is not leader]
    for follower in followers:
        network.cut(bridge_host, host_of(network, follower))
    wait_for(
        lambda: watched(cluster, bridge) is leader, timeout=30, what="the bridge on the leader"
    )
    network.isolate(host_of(network, leader), from_hosts=[host_of(network, m) for m in followers])
    bridge.wait_phase("etcd_down", timeout=30)
    revision = write(writer, settled_leader(followers), count=40)
    for follower in followers:
        network.heal(bridge_host, host_of(network, follower))
    wait_for_revision(output, revision, timeout=30)
    bridge.wait_phase("watching")
    assert watched(cluster, bridge) in followers
    network.heal_all()
    print(f"leader cut off: caught up after {time.monotonic() - started:.1f}s")

    # 4. The link to the watched member flaps while changes keep coming.
    started = time.monotonic()
    flapping = host_of(network, watched(cluster, bridge))
    for _flap in network.flap(bridge_host, flapping, times=4, down=1.5, up=0.5):
        revision = write(writer, settled_leader(members), count=10)
    wait_for_revision(output, revision, timeout=30)
    print(f"flapping link: caught up after {time.monotonic() - started:.1f}s")

    # 5. Latency and loss on the bridge's link, if the kernel can add them.
    missing = network.netem_missing()
    if missing:
        print(f"latency and loss not tested: {missing}")
    else:
        network.degrade(bridge_host, delay_ms=100, loss_percent=5)
        revision = write(writer, settled_leader(members), count=40)
        wait_for_revision(output, revision, timeout=60)
        network.restore(bridge_host)

    assert bridge.metric("etcd_bridge_etcd_reconnects_total", sink="file") >= 3
    assert bridge.terminate() == 0
    events = read_events(output)
    assert_exactly_once(events, writer.changes, after=events[0].revision)


@pytest.mark.timeout(120)
def test_partitioned_leader_stops_before_standby_takes_over(
    network: Network, cluster: EtcdCluster, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    members = cluster.members
    output = tmp_path / "events.jsonl"
    settings = {
        **ha_settings(bridge_factory, members[0], prefix="/ha-parts/", path=output),
        "BRIDGE_ETCD__ENDPOINTS": cluster.urls,
        **TIMING,
    }
    hosts = {network.add_host(name): name for name in ("b0", "b1")}
    bridges = [bridge_factory.start(place=host, **settings) for host in hosts]
    place = dict(zip(bridges, hosts, strict=True))
    with (
        settled_leader(members).client() as client,
        BackgroundWriter(RecordingWriter(client, prefix="/ha-parts/", seed=17)) as background,
    ):
        first = active(bridges)
        second = next(bridge for bridge in bridges if bridge is not first)
        # The standby must be up before its leader is cut off, or this would time its start-up
        # (slow on a busy machine: its endpoint refused the first poll once) and not the takeover.
        second.wait_phase("standby", timeout=30)
        wait_for(lambda: len(read_events(output)) > 50, timeout=30, what="progress")
        network.isolate(place[first], from_hosts=[host_of(network, m) for m in members])
        cut_at = time.monotonic()

        def leading(bridge: BridgeProcess) -> bool:
            return bridge.metric("etcd_bridge_ha_leader", pipeline="ha") == 1

        # Poll both: the cut-off instance must say it stands down before the other leads.
        stood_down = took_over = 0.0
        while not took_over and time.monotonic() - cut_at < 30:
            now = time.monotonic() - cut_at
            if not stood_down and not leading(first):
                stood_down = now
            if leading(second):
                took_over = now
        print(
            f"cut-off leader stood down after {stood_down:.2f}s, other took over {took_over:.2f}s"
        )
        assert took_over, "the standby never took over"
        assert 0 < stood_down < took_over
        count = len(read_events(output))
        wait_for(lambda: len(read_events(output)) > count + 50, timeout=30, what="new progress")
        network.heal_all()
        first.wait_phase("standby", timeout=30)
        assert leading(second)

        # Both cut from the first endpoint: the lease refreshes and campaigns must turn to
        # the other members as the watch does, or nobody leads until the heal.
        for host in hosts:
            network.cut(host, host_of(network, members[0]))
        count = len(read_events(output))
        wait_for(
            lambda: len(read_events(output)) > count + 100,
            timeout=30,
            what="progress without the first member",
        )
        network.heal_all()
    wait_for_revision(output, background.writer.changes[-1].revision, timeout=30)
    for bridge in bridges:
        assert bridge.terminate() == 0
    events = read_events(output)
    assert_exactly_once(events, background.writer.changes, after=events[0].revision)
