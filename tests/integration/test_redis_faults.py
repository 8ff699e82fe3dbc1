"""Redis against its own memory limit and its own loss of data, each on a dedicated server:
``maxmemory`` reached with ``noeviction`` (the test frees the memory), an ``allkeys-*``
policy that ``check`` refuses, a Redis restarted empty under a running bridge."""

import subprocess
import sys

import pytest
import redis
import redis.exceptions

from bridge.events import Op, SnapshotReason
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.redis import RedisFactory, RedisNames, RedisServer
from tests.history import RecordingWriter, assert_exactly_once
from tests.integration.test_file_faults import caught_up, phase_of, write_until
from tests.integration.test_redis_bridge import ROOT, bridge_env

_MAXMEMORY = 16 << 20
_PIECE = 256 << 10


def test_maxmemory_with_noeviction_waits_for_memory_and_resumes_exactly_once(
    etcd: EtcdServer,
    redis_factory: RedisFactory,
    bridge_factory: BridgeFactory,
    redis_names: RedisNames,
    prefix: str,
) -> None:
    server = redis_factory.start(
        extra_args=("--maxmemory", str(_MAXMEMORY), "--maxmemory-policy", "noeviction")
    )
    bridge = bridge_factory.start(**bridge_env(etcd, server.url, redis_names, prefix=prefix))
    bridge.wait_watching()
    with server.client() as client, etcd.client() as etcd_client:
        snapshot_end = server.stream_events(redis_names.stream)[-1]
        fill(client)
        writer = RecordingWriter(etcd_client, prefix=prefix, seed=26)
        write_until(writer, lambda: phase_of(bridge, "redis") == "sink_down", what="sink_down")
        assert bridge.metric("etcd_bridge_errors_total", sink="redis", kind="SinkUnavailableError")
        client.delete("filler")
        for _ in range(20):
            writer.step()
        caught_up(lambda: server.stream_events(redis_names.stream), writer)
    assert bridge.terminate() == 0
    events = server.stream_events(redis_names.stream)
    assert_exactly_once(events, writer.changes, after=snapshot_end.revision)


def fill(client: redis.Redis) -> None:
    """A key that grows until Redis refuses it: over ``maxmemory`` from then on."""
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for _ in range(2 * _MAXMEMORY // _PIECE):
            client.append("filler", b"\0" * _PIECE)


def check(etcd: EtcdServer, server: RedisServer, names: RedisNames, **redis: str) -> str:
    """``etcd-bridge check``'s problems, one per line (empty when it passes)."""
    env = bridge_env(etcd, server.url, names, prefix="/check/", **redis)
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check"],
        env={**BridgeFactory(ROOT).environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    problems = [line for line in result.stderr.splitlines() if line.startswith("etcd-bridge:")]
    assert (result.returncode == 0) is not problems, result.stderr
    return "\n".join(problems)


def test_check_refuses_an_allkeys_policy_unless_accepted(
    etcd: EtcdServer, redis_factory: RedisFactory, redis_names: RedisNames
) -> None:
    server = redis_factory.start(extra_args=("--maxmemory-policy", "allkeys-lru"))
    problem = check(etcd, server, redis_names)
    assert "maxmemory-policy allkeys-lru" in problem and "ACCEPT_EVICTION" in problem, problem
    assert "\n" not in problem
    assert check(etcd, server, redis_names, accept_eviction="true") == ""
    with server.client() as client:
        client.config_set("maxmemory-policy", "volatile-lru")
    assert check(etcd, server, redis_names) == ""


def test_a_redis_restarted_empty_gets_a_lost_snapshot(
    etcd: EtcdServer,
    redis_factory: RedisFactory,
    bridge_factory: BridgeFactory,
    redis_names: RedisNames,
    prefix: str,
) -> None:
    server = redis_factory.start()  # no persistence: a restart empties it
    bridge = bridge_factory.start(**bridge_env(etcd, server.url, redis_names, prefix=prefix))
    with etcd.client() as etcd_client:
        writer = RecordingWriter(etcd_client, prefix=prefix, seed=27)
        for _ in range(20):
            writer.step()
        bridge.wait_watching()
        caught_up(lambda: server.stream_events(redis_names.stream), writer)
        server.restart()

        def lost_snapshot_done() -> bool:
            events = server.stream_events(redis_names.stream)
            return any(e.op is Op.SNAPSHOT_END and e.reason is SnapshotReason.LOST for e in events)

        write_until(writer, lost_snapshot_done, what="the lost snapshot")
        for _ in range(20):
            writer.step()
        caught_up(lambda: server.stream_events(redis_names.stream), writer)
    assert bridge.metric("etcd_bridge_sink_data_lost_total", sink="redis") == 1
    assert bridge.terminate() == 0
    events = server.stream_events(redis_names.stream)
    begin = events[0]
    assert (begin.op, begin.reason) == (Op.SNAPSHOT_BEGIN, SnapshotReason.LOST), begin
    assert_exactly_once(events, writer.changes, after=begin.revision)
