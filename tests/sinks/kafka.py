"""The Kafka sink's destination: a topic of its own (``PARTITIONS`` partitions) on a broker.

Read back with aiokafka (``tests.fixtures.kafka.read_topic``), never with the sink's
confluent-kafka client: ``streams`` gives one stream per partition and counts as flaws a
record outside the murmur2 partition of its key (aiokafka's murmur2, not the sink's), with
another key or headers than its event's, or without a value; ``events`` merges the topic
into one stream, asserting all that (``topic_events``). Its tail is the durable position as
a sink configured like the bridge reads it back; the number of events of a revision it holds
is followed record by record (``TopicFollower``), as a checkpoint is written only per flush.

A benchmark counts every partition from the beginning with confluent-kafka (C decoding:
cheap for a million records; Tansu's high watermark cannot say where a partition ends, so
counting means consuming) and follows it with aiokafka with ``fetch_max_wait_ms=5``: from a
producer's acknowledgement to the record, librdkafka's consumer showed 27 ms (p50) on this
broker whatever its ``fetch.wait.max.ms``; aiokafka shows 2.4 ms p50 / 12 ms p99 at 1,000
records/s (1 ms: 3.2 / 84 ms, the broker is then busy answering fetches; 20 ms: 4.6 / 17).
"""

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioPartition
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bridge.events import Event, EventType
from config.keyspace import KeySpace
from tests.fixtures.kafka import KafkaBroker, TopicFollower, read_topic, topic_events
from tests.sinks.base import (
    Destination,
    Flaw,
    Progress,
    RawRecord,
    Seen,
    SinkServer,
    build,
)

PARTITIONS = 3
TRUE = ("1", "true", "yes", "on")


@dataclass
class KafkaDestination(Destination):
    name = "kafka"
    tail_creates = True
    independent = True  # aiokafka, not librdkafka: read by code the product does not share
    impatient = {"flush_timeout": "3", "timeout": "5"}
    large_values = {"properties__message_max_bytes": str(16 * 1024 * 1024)}
    """librdkafka's ``message.max.bytes`` (docs/kafka.md): an event carrying 1 MiB twice is
    ~2.8 MB of JSON (base64); librdkafka's default (1,000,000) refuses it, Tansu accepts it."""

    bootstrap: str
    topic: str
    partitions: int = PARTITIONS
    _follower: TopicFollower | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def server(cls, workdir: Path, *, persistent: bool) -> KafkaBroker:
        """A Tansu broker: memory storage whatever ``persistent`` says."""
        return KafkaBroker(workdir=workdir)

    @classmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        assert isinstance(server, KafkaBroker)
        return cls(bootstrap=server.bootstrap, topic=f"{tag}-events")

    @property
    def marker_records(self) -> int:
        return self.partitions

    def settings(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "topic": self.topic,
            "partitions": self.partitions,
        }

    def records(self, *, pipeline: str) -> dict[str, list[RawRecord]]:
        streams: dict[str, list[RawRecord]] = {f"partition {p}": [] for p in range(self.partitions)}
        for record in read_topic(self.bootstrap, self.topic):
            streams[f"partition {record.partition}"].append(
                RawRecord(record.value, key=record.key, headers=record.headers)
            )
        return streams

    def streams(self, *, pipeline: str, flaw: Flaw) -> dict[str, list[Event]]:
        records = read_topic(self.bootstrap, self.topic)
        found = sorted({record.partition for record in records})
        streams: dict[str, list[Event]] = {f"partition {p}": [] for p in range(self.partitions)}
        if found and found[-1] >= self.partitions:
            flaw(f"partitions {found}, expected {self.partitions}")
        for record in records:
            where = f"partition {record.partition}"
            if record.value is None:
                flaw(f"a null-value record at offset {record.offset} of {where}")
                continue
            event = Event.from_json(record.value)
            wanted = {
                "revision": str(event.revision).encode(),
                "index": str(event.index).encode(),
                "type": event.type.value.encode(),
                "op": event.op.value.encode(),
                "pipeline": pipeline.encode(),
            }
            if event.reason is not None:  # a marker says its snapshot's reason
                wanted["reason"] = event.reason.value.encode()
            home = (murmur2(event.key) & 0x7FFFFFFF) % self.partitions
            misplaced = event.type is not EventType.MARKER and record.partition != home
            if record.headers != wanted or record.key != event.key or misplaced:
                flaw(f"record at offset {record.offset} of {where}: {event.position} {event.key!r}")
            streams.setdefault(where, []).append(event)
        return streams

    def events(self, *, pipeline: str) -> list[Event]:
        return topic_events(
            self.bootstrap, self.topic, partitions=self.partitions, pipeline=pipeline
        )

    def tail(self, *, pipeline: str, prefix: bytes) -> Event | None:
        keyspace = KeySpace.of([prefix])
        with build("kafka", pipeline=pipeline, keyspace=keyspace, **self.settings()) as sink:
            return sink.open()

    def held(self, *, revision: int, count: int, pipeline: str, prefix: bytes) -> int:
        if self._follower is None:
            self._follower = TopicFollower(self.bootstrap, self.topic)
        return min(count, self._follower.held(revision))

    def records_per_delete(self, bridge_env: Mapping[str, str]) -> int:
        """A delete, and its tombstone if the bridge writes them."""
        return 2 if bridge_env.get("BRIDGE_KAFKA__TOMBSTONES", "").lower() in TRUE else 1

    def reader(self) -> "KafkaReader":
        return KafkaReader(bootstrap=self.bootstrap, topic=self.topic)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
            self._follower = None


class KafkaReader:
    """Every partition of the topic, assigned (no group join), read from the beginning: see
    the module docstring for the two clients."""

    def __init__(self, *, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._counter: Consumer | None = None
        self._assigned = False
        self._follower: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress = Progress()

    def _consumer(self) -> Consumer:
        if self._counter is None:
            self._counter = Consumer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "group.id": "etcd-bridge-bench",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "fetch.wait.max.ms": 10,
                }
            )
        return self._counter

    def _partitions(self) -> list[int]:
        """The topic's partitions, or [] while it does not exist (all-topics metadata: a
        metadata request never creates it)."""
        found = self._consumer().list_topics(timeout=10).topics.get(self._topic)
        if found is None or found.error is not None or not found.partitions:
            return []
        return sorted(found.partitions)

    def progress(self) -> Progress:
        if not self._assigned:
            partitions = self._partitions()
            if not partitions:
                return Progress()
            self._consumer().assign(
                [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions]
            )
            self._assigned = True
        while messages := self._consumer().consume(num_messages=20_000, timeout=0):
            for message in messages:
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"kafka reader: {error.str()}")
            self._progress.records += len(messages)
            headers = dict(messages[-1].headers() or ())
            revision = int(headers["revision"])
            if revision >= self._progress.last_revision:
                self._progress.last_revision = revision
                self._progress.last_op = headers["op"].decode()
        return Progress(**vars(self._progress))

    def follow(self, *, timeout: float) -> list[Seen]:
        if self._loop is None:
            partitions = self._partitions()
            if not partitions:
                time.sleep(timeout)
                return []
            self._loop = asyncio.new_event_loop()
            self._follower = self._loop.run_until_complete(self._start_follower(partitions))
        batches = self._loop.run_until_complete(
            self._follower.getmany(timeout_ms=max(1, round(timeout * 1000)), max_records=20_000)
        )
        seen: list[Seen] = []
        for messages in batches.values():
            for message in messages:
                headers = dict(message.headers)
                seen.append((int(headers["revision"]), bytes(headers["op"]).decode()))
        return seen

    async def _start_follower(self, partitions: list[int]) -> Any:
        follower = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        await follower.start()
        assigned = [AioPartition(self._topic, p) for p in partitions]
        follower.assign(assigned)
        await follower.seek_to_beginning(*assigned)
        return follower

    def close(self) -> None:
        if self._counter is not None:
            self._counter.close()
            self._counter = None
        if self._loop is not None:
            self._loop.run_until_complete(self._follower.stop())
            self._loop.close()
            self._loop = None
