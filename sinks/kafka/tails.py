"""Reading back the last record of partitions, which is where the sink resumes from.

A partition's high watermark cannot be trusted here: the broker used in the tests (Tansu)
reports the last batch's base offset + 1, so "seek to high - 1" may land before the last
record, or on nothing. So a tail is read from ``high - 1`` until every partition showed a
record or its end and a poll then returns nothing; when that finds nothing although the
partition is not empty, it steps further back (16 times as far each time).
"""

import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bridge.errors import SinkUnavailableError
from sinks.kafka.clients import Clients
from sinks.kafka.records import TailRecord, Where, header_map

_TAIL_QUIET_SECONDS = 0.3
"""A tail read ends with a poll this long that returns nothing."""


def read_tails(
    partitions: Sequence[Where], *, clients: Clients, pipeline: str
) -> dict[Where, TailRecord | None]:
    """The last record of each partition (None: empty), read back from the broker within the
    sink's ``timeout``."""
    if not partitions:
        return {}
    deadline = time.monotonic() + clients.settings.timeout
    consumer = clients.new(
        Consumer,
        {
            "group.id": f"etcd-bridge-tails.{pipeline}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        },
    )
    try:
        found: dict[Where, TailRecord | None] = {}
        back = dict.fromkeys(partitions, 1)
        pending = list(partitions)
        while pending:
            starts: dict[Where, int] = {}
            lows: dict[Where, int] = {}
            for where in pending:
                low, high = _watermarks(consumer, where, deadline=deadline, clients=clients)
                lows[where] = low
                starts[where] = max(low, high - back[where]) if high > low else low
            read = _read_from(consumer, starts, deadline=deadline, clients=clients)
            pending = []
            for where, record in read.items():
                if record is None and starts[where] > lows[where]:
                    back[where] *= 16
                    pending.append(where)
                else:
                    found[where] = record
        return found
    finally:
        consumer.close()


def _watermarks(
    consumer: Consumer, where: Where, *, deadline: float, clients: Clients
) -> tuple[int, int]:
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(*where), timeout=max(0.1, deadline - time.monotonic()), cached=False
        )
    except KafkaException as error:
        raise SinkUnavailableError(
            f"kafka: no offsets for {where[0]}[{where[1]}] from {clients.servers}: "
            f"{clients.scrub(str(error.args[0]))}"
        ) from error
    return int(low), int(high)


def _read_from(
    consumer: Consumer, starts: dict[Where, int], *, deadline: float, clients: Clients
) -> dict[Where, TailRecord | None]:
    """Read from ``starts`` until each partition showed a record or its end, then until a
    poll returns nothing; the last record of each partition."""
    consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
    last: dict[Where, TailRecord | None] = dict.fromkeys(starts)
    heard: set[Where] = set()
    try:
        while True:
            if time.monotonic() > deadline:
                raise SinkUnavailableError(
                    f"kafka: reading the tails of {len(starts)} partitions from "
                    f"{clients.servers} took longer than {clients.settings.timeout}s"
                )
            messages = consumer.consume(num_messages=10_000, timeout=_TAIL_QUIET_SECONDS)
            if not messages:
                if len(heard) == len(starts):
                    return last
                continue
            for message in messages:
                where = (message.topic() or "", message.partition() or 0)
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        heard.add(where)
                        continue
                    raise SinkUnavailableError(
                        f"kafka: reading the tail of {where[0]}[{where[1]}]: {error.str()}"
                    )
                heard.add(where)
                last[where] = _tail_record(message)
    finally:
        consumer.unassign()


def _tail_record(message: Message) -> TailRecord:
    return TailRecord(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=header_map(message.headers()),
    )
