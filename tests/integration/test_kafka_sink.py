"""The Kafka sink against a real broker, without the pump: records, positions, failures.

Each test drives ``KafkaSink`` directly with the contract kit's history model and pump
stand-in (``kafka_history``, ``bridge.contract.deliver``; batches of 200 events unless a test
needs others), and checks the topic with an independent client (aiokafka). The crash and
pause tests live in test_kafka_faults.py.
"""

import asyncio
import dataclasses

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge.contract import KEYSPACE, PREFIX, batches, deliver
from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker
from sinks.kafka import KafkaSink, partition_for
from sinks.kafka.settings import KafkaSettings
from tests.fixtures.kafka import KafkaBroker, Record, check_topic, kafka_history, read_topic

SIZES = (200,)
"""Batch sizes: a few flushes per test."""


def make_sink(
    broker: KafkaBroker, topic: str, *, pipeline: str = "test", **fields: object
) -> KafkaSink:
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topic=topic, **fields)  # type: ignore[arg-type]
    return KafkaSink(settings=settings, pipeline=pipeline, keyspace=KEYSPACE)


def test_snapshot_and_changes_land_with_keys_headers_values(kafka: KafkaBroker, topic: str) -> None:
    history = kafka_history(seed=1, changes=400)
    with make_sink(kafka, topic, partitions=3) as sink:
        assert deliver(sink, history, sizes=SIZES) is None
    records = read_topic(kafka.bootstrap, topic)
    check_topic(records, history, partitions=3, pipeline="test")
    first_change = next(r for r in records if r.headers["op"] == b"snapshot")
    event = Event.from_json(first_change.value or b"")
    assert first_change.key == event.key and first_change.headers == {
        "revision": str(history[0].revision).encode(),
        "index": str(event.index).encode(),
        "type": b"PUT",
        "op": b"snapshot",
        "pipeline": b"test",
    }
    assert {r.partition for r in records} == {0, 1, 2}
    with make_sink(kafka, topic, partitions=3) as reopened:
        assert reopened.open() == history[-1]


def test_reopen_resumes_inside_the_snapshot_and_after_it(kafka: KafkaBroker, topic: str) -> None:
    history = kafka_history(seed=2, changes=100)
    inside = history[40]
    assert inside.op is Op.SNAPSHOT
    with make_sink(kafka, topic, partitions=2) as sink:
        assert sink.open() is None
        sink.write(history[:41])
        sink.flush()
    with make_sink(kafka, topic, partitions=2) as sink:
        assert deliver(sink, history, sizes=SIZES) == inside
    with make_sink(kafka, topic, partitions=2) as sink:
        assert sink.open() == history[-1]
    check_topic(read_topic(kafka.bootstrap, topic), history, partitions=2, pipeline="test")


def test_a_record_ahead_of_the_checkpoint_is_not_taken_for_the_position(
    kafka: KafkaBroker, topic: str
) -> None:
    """The multi-partition hazard: partition A holds revision 100 while revision 99, bound for
    B, was never acknowledged. The position is the checkpoint, not the maximum of the tails;
    the rewrite sends 99 and skips the 100 that is already there."""
    partitions = 4
    key_a = next(
        PREFIX + b"a%d" % n
        for n in range(100)
        if partition_for(PREFIX + b"a%d" % n, partitions=partitions) == 0
    )
    key_b = next(
        PREFIX + b"b%d" % n
        for n in range(100)
        if partition_for(PREFIX + b"b%d" % n, partitions=partitions) == 1
    )
    events = [
        Event(revision=98, index=0, type=EventType.PUT, op=Op.CREATE, key=key_a, value=b"98"),
        Event(revision=99, index=0, type=EventType.PUT, op=Op.CREATE, key=key_b, value=b"99"),
        Event(revision=100, index=0, type=EventType.PUT, op=Op.UPDATE, key=key_a, value=b"100"),
        Event(revision=101, index=0, type=EventType.PUT, op=Op.UPDATE, key=key_b, value=b"101"),
    ]
    with make_sink(kafka, topic, partitions=partitions) as sink:
        sink.open()
        sink.write(events[:1])
        sink.flush()
    # What a crash can leave: 100 acknowledged in A, 99 (in B) and the checkpoint never were.
    asyncio.run(produce_raw(kafka.bootstrap, topic, events[2], partition=0))
    with make_sink(kafka, topic, partitions=partitions) as sink:
        tail = sink.open()
        assert tail == events[0], "the position must be the checkpoint, not max(tails)"
        sink.write(events[1:])
        sink.flush()
        assert sink.skipped == 1
    records = read_topic(kafka.bootstrap, topic)
    by_partition = {p: [r.value for r in records if r.partition == p] for p in (0, 1)}
    assert [Event.from_json(v or b"").revision for v in by_partition[0]] == [98, 100]
    assert [Event.from_json(v or b"").revision for v in by_partition[1]] == [99, 101]
    with make_sink(kafka, topic, partitions=partitions) as sink:
        assert sink.open() == events[-1]


def test_a_checkpoint_lost_after_its_flush_costs_a_skipped_rewrite(
    kafka: KafkaBroker, topic: str
) -> None:
    """flush() returns once its records are acknowledged and sends its checkpoint with the
    next flush, so a crash right after a flush may leave the previous checkpoint: the rewrite
    from there must skip every record that is already there."""
    history = kafka_history(seed=6, changes=60)
    flushes = list(batches(history, sizes=(40,)))
    assert all(e.type is not EventType.MARKER for e in flushes[-1])
    # A long linger holds the last checkpoint in the producer, where a kill -9 would lose it.
    with make_sink(kafka, topic, partitions=3, properties={"linger.ms": "60000"}) as held:
        assert held.open() is None
        for batch in flushes:
            held.write(batch)
            held.flush()
        with make_sink(kafka, topic, partitions=3) as fresh:
            assert fresh.open() == flushes[-2][-1], "the previous flush's checkpoint"
            fresh.write(flushes[-1])
            fresh.flush()
            assert (fresh.skipped, fresh.produced) == (len(flushes[-1]), 0)
    check_topic(read_topic(kafka.bootstrap, topic), history, partitions=3, pipeline="test")
    with make_sink(kafka, topic, partitions=3) as sink:
        assert sink.open() == history[-1]


async def produce_raw(bootstrap: str, topic: str, event: Event, *, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            value=event.to_json(),
            key=event.key,
            partition=partition,
            headers=[
                ("revision", b"%d" % event.revision),
                ("index", b"%d" % event.index),
                ("type", event.type.value.encode()),
                ("op", event.op.value.encode()),
                ("pipeline", b"test"),
            ],
        )
    finally:
        await producer.stop()


def test_tombstones_follow_deletes(kafka: KafkaBroker, topic: str) -> None:
    history = kafka_history(seed=3, changes=300)
    assert any(e.type is EventType.DELETE for e in history)
    with make_sink(kafka, topic, partitions=3, tombstones=True, cleanup_policy="compact") as sink:
        deliver(sink, history, sizes=SIZES)
    records = read_topic(kafka.bootstrap, topic)
    check_topic(records, history, partitions=3, pipeline="test", tombstones=True)
    deletes = sum(e.type is EventType.DELETE for e in history)
    assert sum(r.value is None for r in records) == deletes


def test_a_delete_whose_tombstone_was_lost_gets_it(kafka: KafkaBroker, topic: str) -> None:
    history = kafka_history(seed=4, changes=50)
    delete_at = next(n for n, e in enumerate(history) if e.type is EventType.DELETE)
    deleted = history[delete_at]
    with make_sink(kafka, topic, partitions=1, tombstones=True) as sink:
        sink.open()
        sink.write(history[:delete_at])
        sink.flush()
    asyncio.run(produce_raw(kafka.bootstrap, topic, deleted, partition=0))  # no tombstone yet
    with make_sink(kafka, topic, partitions=1, tombstones=True) as sink:
        deliver(sink, history, sizes=SIZES)
    check_topic(
        read_topic(kafka.bootstrap, topic), history, partitions=1, pipeline="test", tombstones=True
    )


def test_oversize_value_stops_with_the_key_and_revision(kafka: KafkaBroker, topic: str) -> None:
    history = kafka_history(seed=5, changes=20)
    at = next(n for n in range(len(history) - 5, 0, -1) if history[n].type is EventType.PUT)
    delivered = history[: at - 1]
    big = dataclasses.replace(history[at], value=b"x" * 1_500_000)
    with make_sink(kafka, topic, partitions=2) as sink:
        sink.open()
        sink.write(delivered)
        sink.flush()
        sink.write([history[at - 1], big, *history[at + 1 :]])
        with pytest.raises(SinkRejectedError) as refused:
            sink.flush()
    message = str(refused.value)
    assert big.key.decode() in message and f"revision {big.revision}" in message
    assert "MSG_SIZE_TOO_LARGE" in message
    with make_sink(kafka, topic, partitions=2) as sink:
        assert sink.open() == delivered[-1], "nothing after the good batch is checkpointed"
    records = read_topic(kafka.bootstrap, topic)
    positions = {(int(r.headers["revision"]), int(r.headers["index"])) for r in records}
    assert max(positions) < (big.revision, big.index), "nothing at or after the refused record"
    assert (history[at - 1].revision, history[at - 1].index) in positions, (
        "what came before it did land"
    )


def test_missing_topic_is_named_when_creating_is_not_allowed(
    kafka: KafkaBroker, topic: str
) -> None:
    with (
        make_sink(kafka, topic, create_topics=False) as sink,
        pytest.raises(SinkRejectedError) as missing,
    ):
        sink.open()
    assert repr(f"{topic}.test.checkpoint") in str(missing.value)
    assert "BRIDGE_KAFKA__CREATE_TOPICS" in str(missing.value)


def test_created_topics_have_the_configured_partitions_and_policy(
    kafka: KafkaBroker, topic: str
) -> None:
    with make_sink(kafka, topic, partitions=5, cleanup_policy="compact") as sink:
        sink.open()
    described = asyncio.run(describe_topics(kafka.bootstrap, [topic, f"{topic}.test.checkpoint"]))
    assert described == {topic: (5, "compact"), f"{topic}.test.checkpoint": (1, "compact")}


async def describe_topics(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, str]]:
    """Partition count and cleanup.policy of each topic, asked with aiokafka's admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
        policies = {
            resource["resource_name"]: entry["config_value"]
            for response in responses
            for resource in response.to_object()["resources"]
            for entry in resource["config_entries"]
            if entry["config_names"] == "cleanup.policy"
        }
        return {t: (partitions[t], policies.get(t, "?")) for t in topics}
    finally:
        await admin.close()


def test_a_topic_of_another_pipeline_is_refused(kafka: KafkaBroker, topic: str) -> None:
    history = kafka_history(seed=6, changes=5)
    with make_sink(kafka, topic, pipeline="one", checkpoint_topic=f"{topic}.one") as sink:
        deliver(sink, history, sizes=SIZES)
    with (
        make_sink(kafka, topic, pipeline="two", checkpoint_topic=f"{topic}.two") as sink,
        pytest.raises(SinkRejectedError) as refused,
    ):
        sink.open()
    assert "pipeline 'one'" in str(refused.value)


def test_template_routes_by_segment_and_frames_every_topic(kafka: KafkaBroker, topic: str) -> None:
    prefix = PREFIX

    def put(revision: int, index: int, key: bytes, op: Op = Op.CREATE) -> Event:
        return Event(
            revision=revision, index=index, type=EventType.PUT, op=op, key=prefix + key, value=b"v"
        )

    def marker(index: int, op: Op) -> Event:
        return snapshot_marker(
            revision=10, index=index, op=op, prefix=prefix, reason=SnapshotReason.INITIAL
        )

    events = [
        marker(0, Op.SNAPSHOT_BEGIN),
        put(10, 1, b"alpha/1", Op.SNAPSHOT),
        put(10, 2, b"alpha/2", Op.SNAPSHOT),
        put(10, 3, b"beta/1", Op.SNAPSHOT),
        marker(4, Op.SNAPSHOT_END),
        put(11, 0, b"alpha/3"),
        put(11, 1, b"gam ma/x"),
    ]
    template = f"{topic}.{{1}}"
    with make_sink(kafka, template, partitions=2) as sink:
        sink.open()
        sink.write(events[:2])
        sink.flush()
        sink.write(events[2:])
        sink.flush()
    alpha = read_topic(kafka.bootstrap, f"{topic}.alpha")
    beta = read_topic(kafka.bootstrap, f"{topic}.beta")
    gamma = read_topic(kafka.bootstrap, f"{topic}.gam_ma")

    def ops(records: list[Record]) -> list[tuple[int, str, int]]:
        return sorted(
            (r.partition, r.headers["op"].decode(), int(r.headers["index"])) for r in records
        )

    assert ops(beta) == sorted(
        [(p, "snapshot_begin", 0) for p in (0, 1)]
        + [(partition_for(prefix + b"beta/1", partitions=2), "snapshot", 3)]
        + [(p, "snapshot_end", 4) for p in (0, 1)]
    ), "beta, first used mid-snapshot, still gets the whole begin..end frame"
    assert sum(r.headers["op"] == b"snapshot_begin" for r in alpha) == 2
    assert [r.headers["op"] for r in gamma] == [b"create"], "gamma appeared after the snapshot"
    with make_sink(kafka, template, partitions=2) as sink:
        assert sink.open() == events[-1]
        assert sorted(sink._in_use) == [f"{topic}.alpha", f"{topic}.beta", f"{topic}.gam_ma"]
