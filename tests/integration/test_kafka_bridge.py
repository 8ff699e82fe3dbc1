"""etcd -> ``etcd-bridge run`` (a subprocess, configured by environment) -> Kafka, end to end.

What etcd did is recorded independently (``tests.history.RecordingWriter``) and compared with
what aiokafka reads from the topic (``tests.fixtures.kafka.read_topic``): each change once,
in the partition of its key, in revision order there, across ``kill -9`` of the bridge and a
frozen (SIGSTOP) broker.
"""

import random
import subprocess
import sys
from pathlib import Path

from bridge.events import Event, Op, Position, SnapshotReason
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kafka import KafkaBroker, KafkaFactory, read_topic, topic_events
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.sinks.kafka import KafkaDestination

ROOT = Path(__file__).resolve().parents[2]


def kafka_env(
    etcd: EtcdServer, broker: KafkaBroker, *, prefix: str, topic: str, **kafka: str
) -> dict[str, str]:
    env = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": "e2e",
        "BRIDGE_SINKS": "kafka",
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "BRIDGE_KAFKA__TOPIC": topic,
        "BRIDGE_KAFKA__PARTITIONS": "3",
    }
    env.update({f"BRIDGE_KAFKA__{name.upper()}": value for name, value in kafka.items()})
    return env


def durable_tail(env: dict[str, str]) -> Event | None:
    """The bridge's durable position, as a sink configured like it reads it back."""
    topic = KafkaDestination(
        bootstrap=env["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"],
        topic=env["BRIDGE_KAFKA__TOPIC"],
        partitions=int(env["BRIDGE_KAFKA__PARTITIONS"]),
    )
    return topic.tail(pipeline=env["BRIDGE_NAME"], prefix=env["BRIDGE_ETCD__PREFIX"].encode())


def wait_for_revision(env: dict[str, str], revision: int, *, timeout: float = 60) -> None:
    def reached() -> bool:
        tail = durable_tail(env)
        return tail is not None and tail.op is not Op.SNAPSHOT and tail.revision >= revision

    wait_for(reached, timeout=timeout, what=f"revision {revision} in kafka", interval=0.2)


def check_exactly_once(
    broker: KafkaBroker, env: dict[str, str], writer: RecordingWriter, *, tombstones: bool = False
) -> list[Event]:
    """Each change once, where it belongs; returns the topic's events in stream order."""
    events = topic_events(
        broker.bootstrap,
        env["BRIDGE_KAFKA__TOPIC"],
        partitions=int(env["BRIDGE_KAFKA__PARTITIONS"]),
        pipeline=env["BRIDGE_NAME"],
        tombstones=tombstones,
    )
    begin = events[0]
    assert begin.op is Op.SNAPSHOT_BEGIN and begin.reason is SnapshotReason.INITIAL
    assert sum(e.op is Op.SNAPSHOT_END for e in events) == 1
    assert_exactly_once(events, writer.changes, after=begin.revision)
    return events


def test_snapshot_and_changes_reach_the_topic(
    etcd: EtcdServer, kafka: KafkaBroker, bridge_factory: BridgeFactory, prefix: str, topic: str
) -> None:
    env = kafka_env(etcd, kafka, prefix=prefix, topic=topic, TOMBSTONES="true")
    with etcd.client() as client:
        client.put(prefix + "existing", b"old")
        client.put(prefix + "\xe9t\xe9", b"\xff\xfe binary")
        check = subprocess.run(
            [sys.executable, "-m", "bridge", "check"],
            env=bridge_factory.environment(**env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stderr
        assert "sink kafka is reachable" in check.stdout
        bridge = bridge_factory.start(**env)
        wait_for(
            lambda: (tail := durable_tail(env)) is not None and tail.op is Op.SNAPSHOT_END,
            timeout=30,
            what="the snapshot",
            interval=0.2,
        )
        writer = RecordingWriter(client, prefix=prefix, seed=21)
        for _ in range(150):
            writer.step()
        wait_for_revision(env, writer.changes[-1].revision)
    assert bridge.terminate() == 0
    events = check_exactly_once(kafka, env, writer, tombstones=True)
    snapshot = {e.key: e.value for e in events if e.op is Op.SNAPSHOT}
    assert snapshot == {
        prefix.encode() + b"existing": b"old",
        (prefix + "\xe9t\xe9").encode(): b"\xff\xfe binary",
    }
    records = read_topic(kafka.bootstrap, topic)
    change = next(r for r in records if r.value is not None and r.headers["op"] == b"create")
    assert set(change.headers) == {"revision", "index", "type", "op", "pipeline"}
    assert change.key == Event.from_json(change.value or b"").key


def test_kill_9_at_random_moments_leaves_each_change_once(
    etcd: EtcdServer, kafka: KafkaBroker, bridge_factory: BridgeFactory, prefix: str, topic: str
) -> None:
    env = kafka_env(etcd, kafka, prefix=prefix, topic=topic, TOMBSTONES="true")
    env["BRIDGE_PUMP__BATCH_EVENTS"] = "20"
    chaos = random.Random(9)  # noqa: S311 - reproducible chaos, not security
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=22)
        for _ in range(200):
            writer.step()
        held_at_kills: list[Position] = []
        before = durable_tail(env)
        for _round in range(6):
            bridge = bridge_factory.start(**env)
            # Let it deliver something, then kill it at a random moment of the stream that
            # goes on meanwhile: mid-batch, mid-flush, writing the checkpoint, or catching up.
            for _ in range(chaos.randrange(100, 300)):
                writer.step()
            wait_for(
                lambda: durable_tail(env) != before,  # noqa: B023
                timeout=30,
                what="progress before the kill",
                interval=0.1,
            )
            for _ in range(chaos.randrange(0, 400)):
                writer.step()
            held = durable_tail(env)
            bridge.kill()
            assert held is not None
            held_at_kills.append(held.position)
            before = held
        bridge = bridge_factory.start(**env)
        bridge.wait_watching(timeout=60)  # up, so that SIGTERM stops it gracefully
        wait_for_revision(env, writer.changes[-1].revision, timeout=90)
    assert bridge.terminate() == 0
    assert len(writer.changes) > 3000
    assert any(c.index >= 3 for c in writer.changes), "multi-key transactions"
    events = check_exactly_once(kafka, env, writer, tombstones=True)
    delivered = {event.position for event in events}
    assert all(position in delivered for position in held_at_kills), "durable, then lost"
    assert held_at_kills == sorted(set(held_at_kills)), "every run made progress"


def test_broker_paused_mid_stream_loses_and_duplicates_nothing(
    etcd: EtcdServer,
    kafka_factory: KafkaFactory,
    bridge_factory: BridgeFactory,
    prefix: str,
    topic: str,
) -> None:
    broker = kafka_factory.start()
    env = kafka_env(
        etcd,
        broker,
        prefix=prefix,
        topic=topic,
        FLUSH_TIMEOUT="1",
        TIMEOUT="2",
        # Requests time out inside the pause, so librdkafka retries them after it.
        PROPERTIES__SOCKET_TIMEOUT_MS="700",
        PROPERTIES__REQUEST_TIMEOUT_MS="700",
    )
    with etcd.client() as client:
        bridge = bridge_factory.start(**env)
        writer = RecordingWriter(client, prefix=prefix, seed=23)
        for _ in range(200):
            writer.step()
        wait_for_revision(env, writer.changes[-1].revision)
        unavailable = {"sink": "kafka", "kind": "SinkUnavailableError"}
        broker.pause()
        try:
            for _ in range(300):
                writer.step()
            wait_for(
                lambda: bridge.metric("etcd_bridge_errors_total", **unavailable) >= 3,
                timeout=30,
                what="the bridge to find the broker unavailable, and retry",
            )
        finally:
            broker.resume()
        for _ in range(200):
            writer.step()
        wait_for_revision(env, writer.changes[-1].revision)
    assert bridge.terminate() == 0
    check_exactly_once(broker, env, writer)


def test_an_oversize_value_stops_the_bridge_naming_key_and_revision(
    etcd: EtcdServer, kafka: KafkaBroker, bridge_factory: BridgeFactory, prefix: str, topic: str
) -> None:
    env = kafka_env(etcd, kafka, prefix=prefix, topic=topic)
    with etcd.client() as client:
        client.put(prefix + "small", b"fine")
        bridge = bridge_factory.start(**env)
        wait_for(lambda: durable_tail(env) is not None, timeout=30, what="the snapshot")
        revision = int(client.put(prefix + "huge", b"x" * 1_200_000).header.revision)
        client.put(prefix + "after", b"must not be delivered")
    wait_for(lambda: not bridge.running, timeout=30, what="the bridge to stop")
    assert bridge.process is not None and bridge.process.returncode == 1
    log = bridge.log_text()
    assert f"{prefix}huge" in log and f"revision {revision}" in log and "MSG_SIZE_TOO_LARGE" in log
    keys = {r.key for r in read_topic(kafka.bootstrap, topic)}
    assert (prefix + "small").encode() in keys
    assert not keys & {(prefix + "huge").encode(), (prefix + "after").encode()}
    again = bridge_factory.start(**env)  # a restart stops at the same record, skipping nothing
    wait_for(lambda: not again.running, timeout=30, what="the restarted bridge to stop")
    assert f"revision {revision}" in again.log_text()
