"""Each sink of a chaos run read back by the test's own means, never through the bridge.

``read_back`` reads a whole sink for the check: the file line by line, the Redis stream with
XRANGE, every Kafka partition with aiokafka (not the sink's client). Anything a reader finds
malformed on the way (a torn line, an entry or record that disagrees with the event it
holds) is counted as unexpected in the sink's figures. ``tail`` reads only a sink's last
event, cheaply and often, to wait for the bridges to catch up.
"""

from pathlib import Path

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from bridge.events import Event, EventType, Op
from config.keyspace import KeySpace
from sinks.kafka import KafkaSink
from sinks.kafka.settings import KafkaSettings
from tests.chaos.check import SinkFigures, describe
from tests.chaos.cluster import Cluster
from tests.chaos.common import PARTITIONS, PIPELINE, PREFIX, STREAM, TOPIC
from tests.fixtures.kafka import KafkaBroker, Record, read_topic
from tests.fixtures.redis import RedisServer


def read_back(cluster: Cluster, *, sink: str, figures: SinkFigures) -> dict[str, list[Event]]:
    """All of ``sink``, as streams in the sink's order (one per Kafka partition)."""
    if sink == "file":
        return _read_file(cluster.output, figures=figures)
    if sink == "redis":
        return _read_redis(cluster.redis, figures=figures)
    return _read_kafka(cluster.kafka, figures=figures)


def tail(cluster: Cluster, *, sink: str) -> Event | None:
    """The last event ``sink`` durably holds, if any."""
    if sink == "file":
        return _file_tail(cluster.output)
    if sink == "redis":
        return _redis_tail(cluster.redis)
    return _kafka_tail(cluster.kafka)


def holds(last: Event | None, *, revision: int) -> bool:
    """Whether a sink whose last event is ``last`` has everything up to ``revision``."""
    if last is None or last.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
        return False
    return last.revision >= revision


def _read_file(path: Path, *, figures: SinkFigures) -> dict[str, list[Event]]:
    content = path.read_bytes() if path.exists() else b""
    if content and not content.endswith(b"\n"):
        figures.unexpected += 1
        figures.note("the file ends with a torn line")
    events = []
    for line in content.splitlines():
        try:
            events.append(Event.from_json(line))
        except (ValueError, KeyError) as error:
            figures.unexpected += 1
            figures.note(f"unreadable line {line[:80]!r}: {error}")
    return {"file": events}


def _read_redis(server: RedisServer, *, figures: SinkFigures) -> dict[str, list[Event]]:
    events = []
    with server.client() as client:
        start = "-"
        while True:
            entries = client.xrange(STREAM, min=start, max="+", count=5000)
            for entry_id, fields in entries:
                event = Event.from_json(fields[b"event"])
                if entry_id.decode() != str(event.position) or fields[b"key"] != event.key:
                    figures.unexpected += 1
                    figures.note(f"entry {entry_id!r} holds {describe(event)}")
                events.append(event)
            if len(entries) < 5000:
                break
            start = "(" + entries[-1][0].decode()
    return {"redis": events}


def _read_kafka(broker: KafkaBroker, *, figures: SinkFigures) -> dict[str, list[Event]]:
    """Every partition, each record checked to be where it belongs (the murmur2 partition of
    its key) and to carry the headers of its event."""
    records: list[Record] = read_topic(broker.bootstrap, TOPIC)
    partitions = sorted({record.partition for record in records})
    streams: dict[str, list[Event]] = {f"partition {p}": [] for p in range(PARTITIONS)}
    if partitions and partitions[-1] >= PARTITIONS:
        figures.unexpected += 1
        figures.note(f"partitions {partitions}, expected {PARTITIONS}")
    for record in records:
        where = f"partition {record.partition}"
        if record.value is None:
            figures.unexpected += 1
            figures.note(f"a null-value record at offset {record.offset} of {where}")
            continue
        event = Event.from_json(record.value)
        headers = record.headers
        wanted = {
            "revision": str(event.revision).encode(),
            "index": str(event.index).encode(),
            "type": event.type.value.encode(),
            "op": event.op.value.encode(),
            "pipeline": PIPELINE.encode(),
        }
        home = (murmur2(event.key) & 0x7FFFFFFF) % PARTITIONS
        misplaced = event.type is not EventType.MARKER and record.partition != home
        if headers != wanted or record.key != event.key or misplaced:
            figures.unexpected += 1
            figures.note(f"record at offset {record.offset} of {where}: {describe(event)}")
        streams.setdefault(where, []).append(event)
    return streams


def _file_tail(path: Path) -> Event | None:
    """The event on the last complete line."""
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        chunk = handle.read()
    lines = chunk[: chunk.rfind(b"\n") + 1].splitlines()
    return Event.from_json(lines[-1]) if lines else None


def _redis_tail(server: RedisServer) -> Event | None:
    with server.client() as client:
        entries = client.xrevrange(STREAM, count=1)
    return Event.from_json(entries[0][1][b"event"]) if entries else None


def _kafka_tail(broker: KafkaBroker) -> Event | None:
    """The durable position, as a sink configured like the bridges' reads it back."""
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap, topic=TOPIC, partitions=PARTITIONS, timeout=5
    )
    with KafkaSink(settings=settings, pipeline=PIPELINE, keyspace=KeySpace.of([PREFIX])) as sink:
        return sink.open()
