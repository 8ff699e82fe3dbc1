"""The pure parts of the Kafka sink: partitions, topic routing, record ranks, checkpoints."""

import pytest

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker
from sinks.kafka import Checkpoint, TailRecord, TopicRouter, headers_of, partition_for, rank_of

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
    router = TopicRouter("etcd.{1}.{2}", prefix=b"/registry")
    assert router.topic_for(b"/registry/pods/default/web-1") == "etcd.pods.default"
    assert router.topic_for(b"/registry/pods") == "etcd.pods._", "a missing segment is _"
    assert router.topic_for(b"/registry/") == "etcd._._"
    assert router.topic_for(b"/registry/a b/\xff\xfe") == "etcd.a_b.__", "unsafe characters"
    assert TopicRouter("plain", prefix=b"/x/").topic_for(b"/x/anything") == "plain"


def test_router_refuses_a_name_kafka_cannot_hold() -> None:
    router = TopicRouter("etcd.{1}", prefix=b"/")
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
