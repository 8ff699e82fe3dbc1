"""``KafkaReader``: what a pipeline's topics hold, read back as one stream (``bridge.reader``).

It reads with the sink's client library (librdkafka) but none of the producer's code: a
consumer with its partitions *assigned* (it never joins its group, never commits, never
creates a topic; librdkafka only insists on a ``group.id``), so it is safe beside a running
bridge. Four steps:

1. **Which partitions.** A fixed topic's, from all-topics metadata (asking for a topic by
   name may create it). With a template, the topics the sink lists in its checkpoint, found
   the way the sink finds them when it opens: the last record of the checkpoint topic. The
   checkpoint lags the partitions by at most one flush, so a topic first used by the very
   last batch appears once the next checkpoint names it. A missing topic holds nothing.
2. **Where each partition ends**: its last record as the sink reads it (``sinks.kafka.tails``:
   the high watermark of the brokers used in the tests cannot be trusted). The read stops
   there, so it ends even while a bridge keeps producing.
3. **Reading**, one consumer for every partition, each buffered up to a page: a partition
   whose buffer is full is paused until the merge has taken its page, so memory is about a
   page per partition plus librdkafka's prefetch queue (``queued.max.messages.kbytes``),
   whatever the topics hold.
4. **Decoding and merging.** A record is the pipeline's when its ``pipeline`` header says so
   (others are skipped); a tombstone (a DELETE's null value) is skipped; a record is decoded
   with the sink's format, in the content mode the sink writes; a marker whose record has no
   value (Debezium's) is rebuilt from its headers. Each partition is in position order, so a
   k-way merge (``bridge.merge``) makes one stream of them and keeps each marker once (the
   sink writes markers to every partition).

Kafka cannot seek by position: ``after`` skips what lies at or before it, so reading from a
late position still reads the partitions from their start.
"""

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op, Position, SnapshotReason
from bridge.formats import EventFormat
from bridge.merge import merge_by_position
from bridge.reader import StreamReader
from config.errors import ConfigError
from config.keyspace import KeySpace
from sinks.kafka.clients import Clients
from sinks.kafka.records import (
    HEADER_INDEX,
    HEADER_OP,
    HEADER_PIPELINE,
    HEADER_REASON,
    HEADER_REVISION,
    Checkpoint,
    Where,
    binary_content,
    header_map,
)
from sinks.kafka.settings import KafkaSettings
from sinks.kafka.tails import read_tails
from sinks.kafka.topics import partition_counts

PAGE = 1000
"""Records buffered per partition before it is paused."""
_POLL_SECONDS = 0.2
_MARKER_OPS = frozenset({Op.SNAPSHOT_BEGIN, Op.SNAPSHOT_END})


@runtime_checkable
class BinaryDecoder(Protocol):
    """A format with a binary content mode reads a record back from its headers and value."""

    def decode_binary(
        self, headers: Iterable[tuple[str, bytes | str | None]], value: bytes | None
    ) -> Event: ...


class KafkaReader(StreamReader):
    """The events of one pipeline's topics; see the module docstring."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        pipeline: str,
        keyspace: KeySpace,
        record_format: EventFormat,
    ) -> None:
        if not settings.bootstrap_servers:
            raise ConfigError("BRIDGE_KAFKA__BOOTSTRAP_SERVERS is required to read kafka back")
        self.checkpoint_topic = settings.checked_checkpoint_topic(pipeline)
        self.settings = settings
        self.pipeline = pipeline
        self._pipeline_header = pipeline.encode()
        self._prefix = keyspace.describe()
        self._format = record_format
        self._binary = (
            record_format
            if binary_content(settings, record_format) and isinstance(record_format, BinaryDecoder)
            else None
        )
        self._last_error: KafkaError | None = None
        self._clients = Clients(
            settings, servers=settings.bootstrap_servers, on_error=self._on_error
        )

    def events(self, *, after: Position | None = None) -> Iterator[Event]:
        consumer = self._clients.new(
            Consumer,
            {
                "group.id": f"etcd-bridge-reader.{self.pipeline}",  # required, never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            },
        )
        try:
            ends = self._ends(self._partitions(consumer))
            if not ends:
                return
            fetcher = _Fetcher(consumer, ends, clients=self._clients)
            yield from merge_by_position(
                self._partition_events(fetcher, where, after=after) for where in sorted(ends)
            )
        finally:
            consumer.close()

    # --- which partitions, and where they end ------------------------------------------------

    def _partitions(self, consumer: Consumer) -> list[Where]:
        if self.settings.template.routed:
            topics = self._checkpointed_topics(consumer)
        else:
            topics = [self.settings.topic]
        counts = self._counts(consumer, topics)
        return [(topic, partition) for topic in topics for partition in range(counts.get(topic, 0))]

    def _checkpointed_topics(self, consumer: Consumer) -> list[str]:
        """The topics the pipeline's last checkpoint lists (none without a checkpoint)."""
        if not self._counts(consumer, [self.checkpoint_topic]):
            return []
        where = (self.checkpoint_topic, 0)
        record = read_tails([where], clients=self._clients, pipeline=self.pipeline)[where]
        if record is None:
            return []
        return list(Checkpoint.read(record, pipeline=self.pipeline).topics)

    def _counts(self, consumer: Consumer, topics: list[str]) -> dict[str, int]:
        try:
            return partition_counts(consumer, topics, clients=self._clients)
        except SinkUnavailableError as error:
            if self._last_error is None:
                raise
            detail = self._clients.scrub(self._last_error.str())
            raise SinkUnavailableError(f"{error}; last client error: {detail}") from error

    def _ends(self, partitions: list[Where]) -> dict[Where, int]:
        """The offset past the last record of each non-empty partition."""
        tails = read_tails(partitions, clients=self._clients, pipeline=self.pipeline)
        return {where: tail.offset + 1 for where, tail in tails.items() if tail is not None}

    # --- decoding ---------------------------------------------------------------------------

    def _partition_events(
        self, fetcher: "_Fetcher", where: Where, *, after: Position | None
    ) -> Iterator[Event]:
        while page := fetcher.page(where):
            for message in page:
                event = self._event_of(message)
                if event is not None and (after is None or event.position > after):
                    yield event

    def _event_of(self, message: Message) -> Event | None:
        """The event of one record; None for a tombstone or another pipeline's record."""
        headers = header_map(message.headers())
        if headers.get(HEADER_PIPELINE) != self._pipeline_header:
            return None
        value = message.value()
        try:
            op = Op(headers[HEADER_OP].decode())
            if value is None:
                if op is Op.DELETE:
                    return None  # a tombstone: its DELETE came just before
                if op in _MARKER_OPS:
                    return self._marker_of(headers, op=op)
                raise ValueError(f"a {op.value} record without a value")
            if self._binary is not None:
                return self._binary.decode_binary(headers.items(), value)
            return self._format.decode(value)
        except (KeyError, ValueError, TypeError) as error:
            where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
            raise SinkRejectedError(
                f"kafka: the record at {where} is not an etcd-bridge "
                f"{self._format.name.value} record ({error}); set BRIDGE_KAFKA__FORMAT (and "
                "BRIDGE_KAFKA__CONTENT_MODE) to what the topic holds"
            ) from error

    def _marker_of(self, headers: dict[str, bytes], *, op: Op) -> Event:
        """A marker whose record has no value (Debezium's): its headers say it all; a record
        written before markers carried their ``reason`` header has none."""
        reason = headers.get(HEADER_REASON)
        return Event(
            revision=int(headers[HEADER_REVISION]),
            index=int(headers[HEADER_INDEX]),
            type=EventType.MARKER,
            op=op,
            key=self._prefix,
            reason=None if reason is None else SnapshotReason(reason.decode()),
        )

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's thread: only record it (a refused login shows up here only)."""
        self._last_error = error


class _Fetcher:
    """One consumer assigned to every partition, from its start to its end, filling a buffer
    per partition and pausing a partition whose buffer holds a page."""

    def __init__(self, consumer: Consumer, ends: dict[Where, int], *, clients: Clients) -> None:
        self._consumer = consumer
        self._clients = clients
        self._ends = ends
        self._buffers: dict[Where, deque[Message]] = {where: deque() for where in ends}
        self._next = dict.fromkeys(ends, 0)
        self._done: set[Where] = set()
        self._paused: set[Where] = set()
        consumer.assign([TopicPartition(*where, OFFSET_BEGINNING) for where in ends])

    def page(self, where: Where) -> list[Message]:
        """The next records of ``where`` (about a page); [] once it is read to its end."""
        buffer = self._buffers[where]
        if not buffer and where in self._paused and where not in self._done:
            self._consumer.resume([TopicPartition(*where)])
            self._paused.discard(where)
        heard = time.monotonic()
        while not buffer and where not in self._done:
            if self._consume():
                heard = time.monotonic()
            elif time.monotonic() - heard > self._clients.settings.timeout:
                raise SinkUnavailableError(
                    f"kafka: {where[0]}[{where[1]}] sent nothing for "
                    f"{self._clients.settings.timeout}s from {self._clients.servers} before "
                    f"its last record (offset {self._ends[where] - 1})"
                )
        page = list(buffer)
        buffer.clear()
        return page

    def _consume(self) -> bool:
        """One poll; whether it brought anything."""
        messages = self._consumer.consume(num_messages=PAGE, timeout=_POLL_SECONDS)
        for message in messages:
            where = (message.topic() or "", message.partition() or 0)
            if where in self._done or where not in self._ends:
                continue
            offset = message.offset() or 0
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise SinkUnavailableError(
                        f"kafka: reading {where[0]}[{where[1]}] from {self._clients.servers}: "
                        f"{self._clients.scrub(error.str())}"
                    )
                if offset >= self._ends[where]:  # the records up to its end are gone
                    self._finish(where)
                continue
            if offset < self._next[where]:
                continue  # already read (a fetch repeated after a resume)
            self._next[where] = offset + 1
            if offset < self._ends[where]:
                self._buffers[where].append(message)
            if offset + 1 >= self._ends[where]:
                self._finish(where)
        full = [
            where
            for where, buffer in self._buffers.items()
            if len(buffer) >= PAGE and where not in self._paused
        ]
        if full:
            self._pause(full)
        return bool(messages)

    def _finish(self, where: Where) -> None:
        self._done.add(where)
        if where not in self._paused:
            self._pause([where])

    def _pause(self, partitions: list[Where]) -> None:
        self._consumer.pause([TopicPartition(*where) for where in partitions])
        self._paused.update(partitions)
