"""The pure parts of the Kafka sink: partitions, topic routing, record ranks, checkpoints,
delivery failures."""

import pytest
from confluent_kafka import KafkaError

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker
from bridge.keytemplate import KeyTemplate
from config.keyspace import KeySpace
from sinks.kafka.failures import DeliveryFailure, rejection
from sinks.kafka.records import Checkpoint, Headers, TailRecord, header_map, headers_of, rank_of
from sinks.kafka.routing import TopicRouter, partition_for

# Kafka's own test vectors for Utils.murmur2 (signed 32-bit results).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 7, 64, 1_000_003])
def test_partition_is_the_java_default_partitioners(partitions: int) -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert partition_for(key, partitions=partitions) == (signed & 0x7FFFFFFF) % partitions


def test_router_fills_segments_below_the_prefix() -> None:
    router = TopicRouter(KeyTemplate.parse("etcd.{1}.{2}"), keyspace=KeySpace.of([b"/registry"]))
    assert router.topic_for(b"/registry/pods/default/web-1") == "etcd.pods.default"
    assert router.topic_for(b"/registry/pods") == "etcd.pods._", "a missing segment is _"
    assert router.topic_for(b"/registry/") == "etcd._._"
    assert router.topic_for(b"/registry/a b/\xff\xfe") == "etcd.a_b.__", "unsafe characters"
    assert (
        TopicRouter(KeyTemplate.parse("plain"), keyspace=KeySpace.of([b"/x/"])).topic_for(
            b"/x/anything"
        )
        == "plain"
    )


def test_router_strips_whichever_prefix_a_key_is_under() -> None:
    router = TopicRouter(
        KeyTemplate.parse("etcd.{1}"), keyspace=KeySpace.of([b"/apps/", b"/registry/"])
    )
    assert router.topic_for(b"/registry/pods/web-1") == "etcd.pods"
    assert router.topic_for(b"/apps/pods/web-1") == "etcd.pods"


def test_router_refuses_a_name_kafka_cannot_hold() -> None:
    router = TopicRouter(KeyTemplate.parse("etcd.{1}"), keyspace=KeySpace.of([b"/"]))
    with pytest.raises(SinkRejectedError, match="not a Kafka topic name"):
        router.topic_for(b"/" + b"s" * 300)


def change(revision: int, index: int, op: Op = Op.UPDATE) -> Event:
    kind = EventType.DELETE if op is Op.DELETE else EventType.PUT
    return Event(revision=revision, index=index, type=kind, op=op, key=b"/k", value=b"v")


def test_ranks_order_records_within_a_partition() -> None:
    delete = change(7, 2, Op.DELETE)
    assert rank_of(change(7, 1)) < rank_of(delete) < rank_of(delete, tombstone=True)
    assert rank_of(delete, tombstone=True) < rank_of(change(7, 3)) < rank_of(change(8, 0))
    # A snapshot taken at a revision whose changes were already produced sorts after them.
    begin = snapshot_marker(
        revision=7, index=0, op=Op.SNAPSHOT_BEGIN, prefix=b"/", reason=SnapshotReason.COMPACTED
    )
    assert rank_of(change(7, 5)) < rank_of(begin) < rank_of(change(8, 0))


def test_tail_rank_comes_from_the_headers() -> None:
    delete = change(9, 1, Op.DELETE)
    headers = dict(headers_of(delete, pipeline=b"p"))
    assert headers == {
        "revision": b"9",
        "index": b"1",
        "type": b"DELETE",
        "op": b"delete",
        "pipeline": b"p",
    }
    record = TailRecord("t", 0, 5, b"/k", delete.to_json(), headers)  # type: ignore[arg-type]
    tombstone = TailRecord("t", 0, 6, b"/k", None, headers)  # type: ignore[arg-type]
    assert record.rank(pipeline="p") == rank_of(delete)
    assert tombstone.rank(pipeline="p") == rank_of(delete, tombstone=True)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "not written by etcd-bridge"),
        ({"pipeline": b"other"}, "belongs to pipeline 'other'"),
        ({"pipeline": b"p", "revision": b"x", "index": b"0", "op": b"create"}, "malformed"),
    ],
)
def test_a_foreign_tail_is_refused(headers: dict[str, bytes], problem: str) -> None:
    with pytest.raises(SinkRejectedError, match=problem):
        TailRecord("t", 3, 17, None, b"{}", headers).rank(pipeline="p")


def test_checkpoint_round_trips_and_drops_huge_values() -> None:
    begin = snapshot_marker(
        revision=5, index=0, op=Op.SNAPSHOT_BEGIN, prefix=b"/p/", reason=SnapshotReason.INITIAL
    )
    inside = Event(
        revision=5, index=3, type=EventType.PUT, op=Op.SNAPSHOT, key=b"/p/\xff", value=b"\x00"
    )
    checkpoint = Checkpoint(event=inside, snapshot_begin=begin, topics=("a", "b"))
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    huge = Event(
        revision=6, index=0, type=EventType.PUT, op=Op.UPDATE, key=b"/p/k", value=b"x" * 900_000
    )
    decoded = Checkpoint.decode(Checkpoint(event=huge, snapshot_begin=None, topics=()).encode())
    assert decoded.event.position == huge.position and decoded.event.key == huge.key
    assert decoded.event.value is None


def test_the_checkpoint_record_is_read_back_only_from_its_pipeline() -> None:
    checkpoint = Checkpoint(event=change(12, 0), snapshot_begin=None, topics=("t",))
    headers = header_map(checkpoint.headers(pipeline=b"p"))
    record = TailRecord("t.p.checkpoint", 0, 4, b"p", checkpoint.encode(), headers)
    assert Checkpoint.read(record, pipeline="p") == checkpoint
    with pytest.raises(SinkRejectedError, match="BRIDGE_KAFKA__CHECKPOINT_TOPIC"):
        Checkpoint.read(record, pipeline="other")
    garbage = TailRecord("t.p.checkpoint", 0, 5, b"p", b"{}", headers)
    with pytest.raises(SinkRejectedError, match="not an etcd-bridge checkpoint"):
        Checkpoint.read(garbage, pipeline="p")


def test_a_refused_record_is_reported_by_key_and_revision() -> None:
    def failure(code: int, key: bytes, headers: Headers) -> DeliveryFailure:
        return DeliveryFailure(KafkaError(code), "t", 0, key, header_map(headers))

    late = failure(KafkaError.MSG_SIZE_TOO_LARGE, b"/k/b", headers_of(change(9, 2), pipeline=b"p"))
    early = failure(KafkaError.MSG_SIZE_TOO_LARGE, b"/k/a", headers_of(change(9, 1), pipeline=b"p"))
    assert late.permanent and min([late, early], key=DeliveryFailure.rank) is early
    message = str(rejection(early))
    assert "'/k/a' at revision 9 (index 1)" in message and "max.message.bytes" in message
    checkpoint = Checkpoint(event=change(9, 2), snapshot_begin=None, topics=())
    lost = failure(KafkaError._TRANSPORT, b"p", checkpoint.headers(pipeline=b"p"))
    assert not lost.permanent and lost.describe().startswith("the checkpoint record")
