"""Every record format end to end: the real bridge, killed with SIGKILL mid-stream, writing
the same history into every record sink at once (file, Redis stream, Kafka, NATS), each
read back by the format's own consumer and compared with the independent record of what was
written to etcd (``tests.history``).

- ``cloudevents``: every record is parsed by the CloudEvents SDK (``cloudevents`` from PyPI),
  structured JSON everywhere and Kafka's binary content mode (``ce_`` headers), through
  ``tests.formats.cloudevents_consumer``; its id must be the same on every replay.
- ``debezium``: every record is applied the way Flink's ``debezium-json`` applies a changelog
  (``tests.formats.debezium_consumer``): an update or delete whose ``before`` is not the
  consumer's current row fails, an unknown op fails, null values (Kafka's markers and
  tombstones) are skipped; the table it ends with must be etcd's state.

In both, the changes must arrive each once, in order (per key for Kafka's partitions), with
their values and previous values, and the values are embedded as JSON where they parse
(``BRIDGE_VALUES=json`` for one format, ``bytes`` for the other).
"""

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from bridge.events import Op, Position
from config.output import ValuesMode
from tests.fixtures.bridge import BridgeFactory, BridgeProcess
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kafka import KafkaBroker
from tests.fixtures.nats import NatsServer
from tests.fixtures.processes import wait_for
from tests.fixtures.redis import RedisServer
from tests.formats import cloudevents_consumer, debezium_consumer
from tests.formats.fields import canonical_json
from tests.history import RecordingWriter
from tests.sinks import SINKS, Destination
from tests.sinks.base import RawRecord

RECORD_SINKS = ("file", "redis", "kafka", "nats")
KILLS = 3


@dataclass(frozen=True)
class Read:
    """One record as the format's consumer understood it."""

    position: Position
    op: Op
    key: bytes
    value: bytes | None
    prev_value: bytes | None


Reader = Callable[[str, RawRecord, ValuesMode], Read | None]
"""How a format's consumer reads one record of a sink (None: a record it skips)."""


def read_cloudevent(sink: str, record: RawRecord, values: ValuesMode) -> Read | None:
    if record.value is None:  # a Kafka tombstone (BRIDGE_KAFKA__TOMBSTONES): no event
        assert sink == "kafka" and record.headers["op"] == b"delete", record
        return None
    if sink == "kafka":
        change = cloudevents_consumer.read_kafka(
            record.headers, record.value, key=record.key, values=values
        )
    else:
        change = cloudevents_consumer.read_structured(record.value, values=values)
    return Read(change.position, change.op, change.key, change.value, change.prev_value)


def read_debezium(sink: str, record: RawRecord, values: ValuesMode) -> Read | None:
    change = debezium_consumer.read(record.value, values=values)
    if change is None:
        return None
    return Read(change.position, change.op, change.key, change.value, change.prev_value)


FORMATS: dict[str, tuple[Reader, ValuesMode]] = {
    "cloudevents": (read_cloudevent, ValuesMode.BYTES),
    "debezium": (read_debezium, ValuesMode.JSON),
}


def as_read(raw: bytes | None, values: ValuesMode) -> bytes | None:
    """What a consumer reads for bytes written to etcd: with ``json``, a value that parses
    comes back re-serialized compactly."""
    if raw is None or values is ValuesMode.BYTES:
        return raw
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return raw if document is None else canonical_json(raw)


@pytest.fixture
def destinations(
    kafka: KafkaBroker, redis_server: RedisServer, nats_server: NatsServer, tmp_path: Path
) -> dict[str, Destination]:
    servers = {"kafka": kafka, "redis": redis_server, "nats": nats_server, "file": None}
    tag = f"formats-{uuid.uuid4().hex[:8]}"
    return {
        name: SINKS[name].fresh(servers[name], directory=tmp_path, tag=tag) for name in RECORD_SINKS
    }


def write_json_values(writer: RecordingWriter, *, prefix: str, round_: int) -> None:
    """JSON documents, a JSON string, a JSON null and text, created then updated."""
    base = prefix.encode() + b"json/"
    writer.put_keys(
        [
            (base + b"object", b'{"replicas": %d, "labels": {"app": "web"}}' % round_),
            (base + b"string", b'"quoted %d"' % round_),
            (base + b"null", b"null"),
            (base + b"text", b"plain %d" % round_),
        ]
    )


def durable_revision(bridge: BridgeProcess, sink: str) -> float:
    return bridge.metric("etcd_bridge_sink_revision", sink=sink)


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_each_change_reads_back_once_through_the_formats_consumer_across_kill_9(
    etcd: EtcdServer,
    bridge_factory: BridgeFactory,
    destinations: dict[str, Destination],
    prefix: str,
    format_name: str,
) -> None:
    reader, values = FORMATS[format_name]
    env = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": f"formats-{format_name}",
        "BRIDGE_SINKS": ",".join(RECORD_SINKS),
        "BRIDGE_VALUES": values.value,
        "BRIDGE_PUMP__BATCH_EVENTS": "20",
        "BRIDGE_KAFKA__TOMBSTONES": "true",
    }
    for destination in destinations.values():
        env |= destination.env(format=format_name)
    chaos = random.Random(13)  # noqa: S311 - reproducible chaos, not security
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=31)
        base = prefix.encode()
        writer.put_keys([(base + "é/t".encode(), b"\xff\xfe binary"), (base + b"\xff\x00", b"k")])
        write_json_values(writer, prefix=prefix, round_=0)
        for _ in range(50):
            writer.step()
        snapshot_state = dict(writer.state)
        snapshot_revision = writer.changes[-1].revision
        for round_ in range(KILLS):
            bridge = bridge_factory.start(**env)
            if round_ == 0:  # every sink's snapshot first, at a revision the test knows
                wait_for(
                    lambda: all(
                        durable_revision(bridge, sink) >= snapshot_revision  # noqa: B023
                        for sink in RECORD_SINKS
                    ),
                    timeout=60,
                    what="the snapshots",
                    interval=0.05,
                )
            write_json_values(writer, prefix=prefix, round_=round_ + 1)
            for _ in range(chaos.randrange(50, 150)):
                writer.step()
            reached = writer.changes[-1].revision
            wait_for(
                lambda: durable_revision(bridge, "file") >= reached,  # noqa: B023
                timeout=60,
                what="progress before the kill",
                interval=0.05,
            )
            for _ in range(chaos.randrange(0, 200)):
                writer.step()
            bridge.kill()
        bridge = bridge_factory.start(**env)
        last = writer.changes[-1].revision
        for sink in RECORD_SINKS:
            wait_for(
                lambda: durable_revision(bridge, sink) >= last,  # noqa: B023
                timeout=90,
                what=f"{sink} to catch up",
                interval=0.1,
            )
    assert bridge.terminate() == 0
    expected = [
        (
            Position(change.revision, change.index),
            change.op,
            change.key,
            as_read(change.value, values),
            as_read(change.prev_value, values),
        )
        for change in writer.changes
        if change.revision > snapshot_revision
    ]
    for sink, destination in destinations.items():
        streams = destination.records(pipeline=env["BRIDGE_NAME"])
        reads: list[Read] = []
        for stream in streams.values():
            positions = []
            for record in stream:
                read = reader(sink, record, values)
                if read is not None:
                    reads.append(read)
                    positions.append(read.position)
            assert positions == sorted(positions), f"{sink}: a stream goes backwards"
        # Kafka repeats a marker in every partition; a change is in one partition only.
        markers = {read for read in reads if read.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT_END)}
        changes = sorted(
            (read for read in reads if read not in markers), key=lambda read: read.position
        )
        snapshot = [read for read in changes if read.op is Op.SNAPSHOT]
        assert {read.position.revision for read in [*snapshot, *markers]} == {snapshot_revision}
        assert {read.key: read.value for read in snapshot} == {
            key: as_read(value, values) for key, value in snapshot_state.items()
        }, f"{sink}: the snapshot"
        live = [
            (read.position, read.op, read.key, read.value, read.prev_value)
            for read in changes
            if read.op is not Op.SNAPSHOT
        ]
        assert live == expected, f"{sink}: the changes differ from etcd's history"
        if format_name == "debezium":  # applied as Flink would: each before must match
            table = debezium_consumer.apply(
                (record.value for stream in streams.values() for record in stream),
                {},
                messages=sink != "kafka",
            )
            assert debezium_consumer.values_of(table, values=values) == {
                key: as_read(value, values) for key, value in writer.state.items()
            }, f"{sink}: the table differs from etcd's state"
