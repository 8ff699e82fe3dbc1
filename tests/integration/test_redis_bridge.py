"""etcd -> ``etcd-bridge run`` (a subprocess, configured by environment) -> Redis, end to end.

What etcd did is recorded independently (``tests.history.RecordingWriter``) and compared with
what a Redis consumer reads: XRANGE for streams, SUBSCRIBE for pub/sub, HGETALL against
``etcdctl get --prefix`` for the mirror. The crash tests kill the bridge with SIGKILL, or
kill redis-server itself, in the middle of thousands of changes.
"""

import base64
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bridge.events import Event, Op, SnapshotReason
from bridge.sink import Sink
from config.keyspace import KeySpace
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdFactory, EtcdServer, etcdctl_binary
from tests.fixtures.processes import wait_for
from tests.fixtures.redis import RedisFactory, RedisNames, RedisServer, published_events
from tests.history import RecordingWriter, assert_exactly_once
from tests.sinks.base import build

ROOT = Path(__file__).resolve().parents[2]


def bridge_env(
    etcd: EtcdServer, redis_url: str, names: RedisNames, *, prefix: str, **redis: str
) -> dict[str, str]:
    env = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": names.pipeline,
        "BRIDGE_SINKS": "redis",
        "BRIDGE_REDIS__URL": redis_url,
        "BRIDGE_REDIS__STREAM": names.stream,
        "BRIDGE_REDIS__CHANNEL": names.channel,
        "BRIDGE_REDIS__MIRROR_KEY": names.mirror,
    }
    env.update({f"BRIDGE_REDIS__{name.upper()}": value for name, value in redis.items()})
    return env


def sink_like(env: dict[str, str]) -> Sink:
    """A sink configured as the bridge is, to read its durable position from the test."""
    redis = {
        key.removeprefix("BRIDGE_REDIS__").lower(): value
        for key, value in env.items()
        if key.startswith("BRIDGE_REDIS__")
    }
    keyspace = KeySpace.of([env["BRIDGE_ETCD__PREFIX"].encode()])
    return build("redis", pipeline=env["BRIDGE_NAME"], keyspace=keyspace, **redis)


def durable_tail(env: dict[str, str]) -> Event | None:
    """The last event Redis durably holds, read back as the bridge does when it starts (with
    ``peek``: ``open`` would claim the stream the running bridge owns)."""
    with sink_like(env) as sink:
        return sink.peek()


def durable_revision(env: dict[str, str]) -> int:
    tail = durable_tail(env)
    return 0 if tail is None else tail.revision


def wait_for_revision(env: dict[str, str], revision: int, *, timeout: float = 30) -> None:
    def reached() -> bool:
        tail = durable_tail(env)
        if tail is None or tail.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
            return False  # mid-snapshot: the state is not complete yet
        return tail.revision >= revision

    wait_for(reached, timeout=timeout, what=f"revision {revision} in redis")


def etcd_prefix(etcd: EtcdServer, prefix: str) -> dict[bytes, bytes]:
    """``etcdctl get --prefix`` as bytes (JSON output: keys and values are base64)."""
    output = subprocess.run(
        [str(etcdctl_binary()), f"--endpoints={etcd.url}", "get", "--prefix", prefix, "-w=json"],
        check=True,
        capture_output=True,
    ).stdout
    kvs = json.loads(output).get("kvs", [])
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", "")) for kv in kvs}


def seed_and_change(writer: RecordingWriter, *, steps: int) -> None:
    for _ in range(steps):
        writer.step()


@pytest.mark.parametrize("mode", ["stream", "routed", "pubsub", "mirror"])
def test_each_mode_end_to_end(
    etcd: EtcdServer,
    redis_server: RedisServer,
    redis_names: RedisNames,
    bridge_factory: BridgeFactory,
    prefix: str,
    mode: str,
) -> None:
    extra = {"mode": "stream" if mode == "routed" else mode}
    if mode == "routed":
        extra["stream"] = f"test:{redis_names.tag}:{{1}}"
    env = bridge_env(etcd, redis_server.url, redis_names, prefix=prefix, **extra)
    with etcd.client() as client, redis_server.client() as redis, redis.pubsub() as subscriber:
        subscriber.subscribe(redis_names.channel)
        writer = RecordingWriter(client, prefix=prefix, seed=3)
        seed_and_change(writer, steps=60)  # what the snapshot will hold
        bridge = bridge_factory.start(**env)
        wait_for_revision(env, writer.changes[-1].revision)
        snapshot_revision = writer.changes[-1].revision
        writer.transaction([prefix.encode() + b"txn/%d" % n for n in range(5)])
        writer.transaction([prefix.encode() + b"txn/1", prefix.encode() + b"txn/3"], delete=True)
        seed_and_change(writer, steps=300)
        wait_for_revision(env, writer.changes[-1].revision)
        assert bridge.terminate() == 0, bridge.log_text()

        if mode == "stream":
            events = redis_server.stream_events(redis_names.stream)
            assert events[0].op is Op.SNAPSHOT_BEGIN
            assert events[0].reason is SnapshotReason.INITIAL
            assert_exactly_once(events, writer.changes, after=events[0].revision)
        elif mode == "routed":
            streams = sorted(
                key.decode()
                for key in redis.scan_iter(match=f"test:{redis_names.tag}:*", count=1000)
            )
            assert f"test:{redis_names.tag}:txn" in streams and len(streams) > 10
            merged: dict[tuple[int, int], Event] = {}
            for stream in streams:
                for event in redis_server.stream_events(stream):
                    merged[(event.revision, event.index)] = event
            events = [merged[position] for position in sorted(merged)]
            assert_exactly_once(events, writer.changes, after=events[0].revision)
        elif mode == "pubsub":
            last = writer.changes[-1].revision
            received = published_events(
                subscriber, until=lambda got: bool(got) and got[-1].revision >= last, timeout=20
            )
            assert received[0].op is Op.SNAPSHOT_BEGIN
            assert_exactly_once(received, writer.changes, after=received[0].revision)
        else:
            mirrored = dict(redis.hgetall(redis_names.mirror))
            assert mirrored == etcd_prefix(etcd, prefix) == writer.state
    assert snapshot_revision > 0


@pytest.mark.slow
def test_kill_9_of_the_bridge_leaves_xrange_exactly_once(
    etcd: EtcdServer,
    redis_server: RedisServer,
    redis_names: RedisNames,
    bridge_factory: BridgeFactory,
    prefix: str,
) -> None:
    env = bridge_env(etcd, redis_server.url, redis_names, prefix=prefix)
    env["BRIDGE_PUMP__BATCH_EVENTS"] = "7"
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=9)
        seed_and_change(writer, steps=200)
        enough = threading.Event()

        def keep_writing() -> None:
            for _ in range(20000):  # bounded; stops as soon as the kills are done
                if enough.is_set() and len(writer.changes) > 2500:
                    return
                writer.step()

        busy = threading.Thread(target=keep_writing)
        busy.start()
        held_at_kills: list[int] = []
        try:
            for _round in range(8):
                before = durable_revision(env)
                bridge = bridge_factory.start(**env)
                # Kill once this run has made something durable: mid-stream, not at start-up.
                wait_for(
                    lambda before=before: durable_revision(env) > before,  # type: ignore[misc]
                    timeout=30,
                    what="the bridge to make progress",
                )
                held_at_kills.append(durable_revision(env))
                bridge.kill()
        finally:
            enough.set()
            busy.join()
        bridge = bridge_factory.start(**env)
        bridge.wait_watching(timeout=60)  # up, so that SIGTERM stops it gracefully
        wait_for_revision(env, writer.changes[-1].revision, timeout=60)
    assert bridge.terminate() == 0
    events = redis_server.stream_events(redis_names.stream)
    assert sum(event.op is Op.SNAPSHOT_END for event in events) == 1
    assert len(writer.changes) > 2000
    assert_exactly_once(events, writer.changes, after=events[0].revision)
    delivered = {event.revision for event in events}
    assert all(revision in delivered for revision in held_at_kills), "durable, then lost"
    assert held_at_kills == sorted(set(held_at_kills)), "every run made progress"
    assert durable_revision(env) == writer.changes[-1].revision


@pytest.mark.slow
def test_redis_killed_and_restarted_under_a_running_bridge(
    etcd: EtcdServer,
    redis_factory: RedisFactory,
    redis_names: RedisNames,
    bridge_factory: BridgeFactory,
    prefix: str,
) -> None:
    server = redis_factory.start(persistent=True)
    env = bridge_env(etcd, server.url, redis_names, prefix=prefix, timeout="2")
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=12)
        bridge = bridge_factory.start(**env)
        bridge.wait_watching()
        seed_and_change(writer, steps=300)
        server.kill()
        seed_and_change(writer, steps=300)  # Redis is down: the bridge retries meanwhile
        wait_for(
            lambda: bridge.phases()[1]["redis"] == "sink_down",
            timeout=20,
            what="the bridge noticing Redis is gone",
        )
        server.start()
        seed_and_change(writer, steps=300)
        wait_for_revision(env, writer.changes[-1].revision, timeout=60)
    assert bridge.terminate() == 0
    events = server.stream_events(redis_names.stream)
    assert_exactly_once(events, writer.changes, after=events[0].revision)


def test_check_names_the_missing_acl_permission(
    etcd: EtcdServer, redis_server: RedisServer, redis_names: RedisNames, prefix: str
) -> None:
    user, password = f"c{redis_names.tag}", f"pw-{redis_names.tag}"
    url = redis_server.add_user(user, password=password, rules="~* &* +@all -xadd")
    env = bridge_env(etcd, url, redis_names, prefix=prefix)
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check"],
        env={**BridgeFactory(ROOT).environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("etcd-bridge:")]
    assert len(problems) == 1, result.stderr
    assert f"ACL user '{user}'" in problems[0] and "XADD" in problems[0]
    assert password not in result.stderr + result.stdout
    assert "etcd" in result.stdout


def test_mirror_resync_after_compaction_drops_keys_deleted_meanwhile(
    etcd_factory: EtcdFactory,
    redis_server: RedisServer,
    redis_names: RedisNames,
    bridge_factory: BridgeFactory,
) -> None:
    server = etcd_factory.start()
    prefix = "/m/"
    env = bridge_env(server, redis_server.url, redis_names, prefix=prefix, mode="mirror")
    with server.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=21)
        # Keys the random steps never write (they write k000-k049), so that they stay gone.
        doomed = [prefix.encode() + b"doomed-%d" % number for number in range(10)]
        writer.put_keys([(key, b"soon deleted") for key in doomed])
        seed_and_change(writer, steps=200)
        bridge = bridge_factory.start(**env)
        wait_for_revision(env, writer.changes[-1].revision)
        assert bridge.terminate() == 0
        writer.transaction(doomed, delete=True)  # deleted while the bridge is down
        seed_and_change(writer, steps=200)
        client.compact(writer.changes[-1].revision)
        bridge = bridge_factory.start(**env)
        wait_for_revision(env, writer.changes[-1].revision)
        assert bridge.metric("etcd_bridge_resyncs_total", sink="redis") == 1
        assert bridge.terminate() == 0
    with redis_server.client() as redis:
        mirrored = dict(redis.hgetall(redis_names.mirror))
        assert redis.exists(redis_names.mirror + ":next") == 0
    assert mirrored == etcd_prefix(server, prefix) == writer.state
    assert not set(doomed) & set(mirrored)
