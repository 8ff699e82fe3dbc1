"""``KafkaSink``: the ``bridge.sink`` contract on Kafka, exactly once, without transactions.

**Where we stopped.** The broker used in the tests (Tansu) has no working transactions or
``read_committed``, so correctness rests on two facts only:

1. *Per partition, the topic holds a prefix of what we produced to it.* The producer is
   idempotent (the broker de-duplicates retries by sequence number) with
   ``enable.gapless.guarantee`` and ``message.timeout.ms=0``: a record is never dropped while
   later ones in its partition go through (a refused record is fatal for the producer; a
   record never times out). So if a partition's last record has rank L, every record we
   meant for that partition up to L is there, once, in order.
2. *A checkpoint C is produced only after every record it covers was acknowledged*, so
   everything up to C is in Kafka. ``flush`` does not wait for the checkpoint's own
   acknowledgement (that would cost every batch a second round trip to the broker): it
   travels with the next flush's records, and that flush waits for both, as ``close`` does.
   So after a crash right after a flush, ``open()`` may return the previous flush's last
   event instead of this one's: a checkpoint behind the partitions, as after a crash between
   a flush's records and its checkpoint, and the rewrite from there is skipped (below).

``open()`` reads C and the tail (last record) of every partition, and returns C: the pump
re-sends everything after C, and ``write()`` skips, per partition, each record whose rank is
at or below that partition's tail (``sinks.kafka.records``). The maximum over the tails would
*not* do: after a crash partition A may hold revision 100 while revision 99, bound for B, was
never acknowledged.

**Markers** (``snapshot_begin``/``snapshot_end``, whose key is the watched prefix) go to
*every* partition of every topic of the pipeline, so a consumer of any subset of partitions
sees each resync; a topic a template routes to for the first time in the middle of a
snapshot first gets that snapshot's ``snapshot_begin``, so every partition holds whole
``begin..end`` frames. The topics in use are kept in the checkpoint.

**Failures.** Delivery reports and error callbacks only record; the owning thread raises from
``flush`` (``sinks.kafka.failures``). A record the broker (or librdkafka's size check) refuses
for good raises ``SinkRejectedError`` naming key and revision; nothing after it is
checkpointed, and in its partition nothing after it is written (gapless). Anything else is
``SinkUnavailableError``: records stay queued in the producer, which is *kept* across
``close``/``open`` while it holds unacknowledged records: dropping it would let its in-flight
requests land after the next ``open()`` read the tails.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Self

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op, SnapshotReason
from bridge.formats import EventFormat
from bridge.reader import SinkReader
from bridge.sink import NATIVE, Sink, SinkContext
from config.errors import ConfigError
from config.keyspace import KeySpace
from config.output import FormatName
from sinks.kafka.clients import Clients
from sinks.kafka.failures import DeliveryFailure, rejection
from sinks.kafka.reader import KafkaReader
from sinks.kafka.records import (
    Checkpoint,
    Rank,
    TailRecord,
    Where,
    binary_content,
    header_map,
    headers_of,
    rank_of,
    reason_header,
)
from sinks.kafka.routing import TopicRouter, partition_for
from sinks.kafka.settings import KafkaSettings
from sinks.kafka.tails import read_tails
from sinks.kafka.topics import TopicAdmin

log = logging.getLogger(__name__)

_SETTLE_SLICE_SECONDS = 0.2


class KafkaSink(Sink):
    """Events as Kafka records, exactly once per partition; see the module docstring."""

    name = "kafka"
    settings_model = KafkaSettings
    flushes_behind = 1  # the checkpoint travels with the next flush (see above)

    formats = frozenset(FormatName)

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        pipeline: str,
        keyspace: KeySpace,
        record_format: EventFormat = NATIVE,
    ) -> None:
        if not settings.bootstrap_servers:
            raise ConfigError(
                "BRIDGE_KAFKA__BOOTSTRAP_SERVERS is required when BRIDGE_SINKS includes kafka"
            )
        self.checkpoint_topic = settings.checked_checkpoint_topic(pipeline)
        self.settings = settings
        self.pipeline = pipeline
        self.keyspace = keyspace
        self.router = TopicRouter(settings.template, keyspace=keyspace)
        self._format = record_format
        self._binary = binary_content(settings, record_format)
        # A format with content modes names its media type in structured mode (the
        # CloudEvents Kafka binding's ``content-type`` header); one without has no header.
        self._structured_headers: Sequence[tuple[str, bytes]] = (
            [("content-type", record_format.content_type.encode())]
            if record_format.has_binary_mode and not self._binary
            else ()
        )
        self._clients = Clients(
            settings, servers=settings.bootstrap_servers, on_error=self._on_error
        )
        self._pipeline_header = pipeline.encode()
        self._producer: Producer | None = None
        self._admin: TopicAdmin | None = None
        self._failures: list[DeliveryFailure] = []
        self._fatal: KafkaError | None = None
        self._last_error: KafkaError | None = None
        self._rejected: SinkRejectedError | None = None
        self._opened = False
        self._broken = False
        # Per session (reset by open): the partitions of each topic ready for use (created,
        # tails read), the topics in use (markers go to them), the tail of every partition we
        # have not produced past yet, and what the next checkpoint will say.
        self._partitions: dict[str, int] = {}
        self._in_use: set[str] = set()
        self._tails: dict[Where, Rank] = {}
        self._last: Event | None = None
        self._checkpointed: Event | None = None
        self._snapshot_begin: Event | None = None
        self.produced = 0
        self.skipped = 0

    @classmethod
    def from_settings(cls, settings: KafkaSettings, *, context: SinkContext) -> Self:
        return cls(
            settings=settings,
            pipeline=context.pipeline,
            keyspace=context.keyspace,
            record_format=context.format,
        )

    @classmethod
    def reader(cls, settings: KafkaSettings, *, context: SinkContext) -> SinkReader:
        """Every partition of the pipeline's topics as one stream (``sinks.kafka.reader``)."""
        return KafkaReader(
            settings=settings,
            pipeline=context.pipeline,
            keyspace=context.keyspace,
            record_format=context.format,
        )

    # --- the contract -----------------------------------------------------------------------

    def open(self) -> Event | None:
        self._opened = False
        self._settle_previous_producer()
        self._reset_session()
        if self._producer is None:
            self._producer = self._new_producer()
        if self._admin is None:
            self._admin = TopicAdmin(self._clients)
        self._ensure_topics([self.checkpoint_topic], checkpoint=True)
        static = [] if self.router.is_template else [self.router.topic]
        created = self._ensure_topics(static, checkpoint=False) if static else set()
        wanted = [(self.checkpoint_topic, 0)] + [
            (topic, partition)
            for topic in static
            if topic not in created
            for partition in range(self._partitions[topic])
        ]
        tails = read_tails(wanted, clients=self._clients, pipeline=self.pipeline)
        last_checkpoint = tails.pop((self.checkpoint_topic, 0))
        checkpoint = (
            None
            if last_checkpoint is None
            else Checkpoint.read(last_checkpoint, pipeline=self.pipeline)
        )
        self._adopt_tails(tails)
        self._in_use.update(static)
        if checkpoint is not None:
            if self.router.is_template:  # a fixed topic ignores topics of an older setting
                recorded = [t for t in checkpoint.topics if t not in self._partitions]
                if recorded:
                    self._prepare_topics(recorded)
                self._in_use.update(checkpoint.topics)
            self._last = self._checkpointed = checkpoint.event
            if checkpoint.event.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
                self._snapshot_begin = checkpoint.snapshot_begin or _begin_marker_for(
                    checkpoint.event, keyspace=self.keyspace
                )
        self._opened = True
        log.info(
            "kafka sink opened",
            extra={
                "servers": self._clients.servers,
                "topics": ",".join(sorted(self._in_use)) or "(none yet)",
                "checkpoint_topic": self.checkpoint_topic,
                "position": "empty" if checkpoint is None else str(checkpoint.event.position),
                "partitions_ahead": len(self._tails),
                "properties": ",".join(sorted(self.settings.properties)),
            },
        )
        return None if checkpoint is None else checkpoint.event

    def write(self, batch: Sequence[Event]) -> None:
        self._require_writable()
        if self._rejected is not None or not batch:
            return
        if self.router.is_template:
            fresh = {
                self.router.topic_for(event.key)
                for event in batch
                if event.type is not EventType.MARKER
            } - self._partitions.keys()
            if fresh:
                self._prepare_topics(sorted(fresh))
        tombstones = self.settings.tombstones
        record_key = self._format.record_key
        # The changes' records, encoded for the batch at once (a format reads its clock and
        # looks its parts up once); markers are encoded as they are broadcast.
        records = iter(self._records([e for e in batch if e.type is not EventType.MARKER]))
        for event in batch:
            if event.type is EventType.MARKER:
                self._broadcast(event)
                if event.op is Op.SNAPSHOT_BEGIN:
                    self._snapshot_begin = event
                elif event.op is Op.SNAPSHOT_END:
                    self._snapshot_begin = None
            else:
                if event.op is not Op.SNAPSHOT:
                    self._snapshot_begin = None
                topic = self.router.topic_for(event.key)
                if topic not in self._in_use:
                    self._start_using(topic)
                # Partitioned by the record key, as Kafka's default partitioner would: with
                # a format whose key is not the etcd key (Debezium's), the topic stays
                # co-partitioned with others keyed the same way.
                key = record_key(event)
                partition = partition_for(key, partitions=self._partitions[topic])
                extra, value = next(records)
                self._produce(topic, partition, event=event, key=key, value=value, extra=extra)
                if tombstones and event.type is EventType.DELETE:
                    self._produce(
                        topic, partition, event=event, key=key, value=None, tombstone=True
                    )
            if self._rejected is not None:
                return  # nothing after a refused record is produced
            self._last = event

    def flush(self) -> None:
        """Return once every record written so far, and the previous flush's checkpoint, are
        acknowledged; then produce this flush's checkpoint without waiting for it."""
        self._require_writable()
        try:
            self._settle(what="records")
            self._raise_failures()
            if self._rejected is not None:
                raise self._rejected
            if self._last is not None and self._last is not self._checkpointed:
                self._produce_checkpoint(self._last)
                self._checkpointed = self._last
        except (SinkRejectedError, SinkUnavailableError):
            self._broken = True
            raise

    def close(self) -> None:
        self._opened = False
        self._admin = None
        producer = self._producer
        if producer is None:
            return
        remaining = producer.flush(min(self.settings.timeout, 5.0))
        if remaining and self._fatal is None and not self._rejected:
            # Keep it: its in-flight requests must not land after the next open() reads tails.
            log.warning(
                "kafka producer kept with unacknowledged records",
                extra={"records": remaining, "servers": self._clients.servers},
            )
            return
        self._producer = None

    # --- open: producer, topics, tails, checkpoint ------------------------------------------

    def _settle_previous_producer(self) -> None:
        """Wait for what a failed session left in flight; drop a producer that cannot go on."""
        producer = self._producer
        if producer is None:
            return
        if len(producer):
            self._settle(what="records of the previous session")
        failures, self._failures = self._failures, []
        fatal, self._fatal = self._fatal, None
        rejected, self._rejected = self._rejected, None
        permanent = [failure for failure in failures if failure.permanent]
        if permanent:
            self._failures = failures
            self._raise_failures()
        if rejected is not None:
            raise rejected
        if failures or fatal is not None:
            log.warning(
                "kafka producer replaced",
                extra={"reason": str(fatal or failures[0].error), "failed": len(failures)},
            )
            self._producer = None

    def _reset_session(self) -> None:
        """A new session forgets the last one's failures: a record refused then was reported
        by the flush that raised it, and the pump, reopening past it (``ON_REFUSED``), hands
        its replacement; raised again, the refusal would stop the pipeline. Whatever a kept
        producer still held was settled just before."""
        self._rejected = None
        self._failures = []
        self._broken = False
        self._partitions = {}
        self._in_use = set()
        self._tails = {}
        self._last = self._checkpointed = self._snapshot_begin = None

    def _new_producer(self) -> Producer:
        return self._clients.new(
            Producer,
            {
                "linger.ms": 5,
                **self.settings.client_properties(),
                "enable.idempotence": True,
                "enable.gapless.guarantee": True,
                "acks": "all",
                "message.timeout.ms": 0,
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
            },
        )

    def _ensure_topics(self, topics: Sequence[str], *, checkpoint: bool) -> set[str]:
        """Make ``topics`` exist, record the partitions of data topics; those we created."""
        counts, created = self._require_admin().ensure(topics, checkpoint=checkpoint)
        if not checkpoint:
            self._partitions.update(counts)
        return created

    def _prepare_topics(self, topics: Sequence[str]) -> None:
        """Make ``topics`` ready for use: create them if missing, learn their tails."""
        for topic in topics:
            if topic == self.checkpoint_topic:
                raise SinkRejectedError(
                    f"kafka: the template {self.router.topic!r} routes a key to the checkpoint "
                    f"topic {topic!r}; set BRIDGE_KAFKA__CHECKPOINT_TOPIC to another name"
                )
        created = self._ensure_topics(topics, checkpoint=False)
        self._adopt_tails(
            read_tails(
                [
                    (topic, partition)
                    for topic in topics
                    if topic not in created
                    for partition in range(self._partitions[topic])
                ],
                clients=self._clients,
                pipeline=self.pipeline,
            )
        )

    def _start_using(self, topic: str) -> None:
        """A topic's first record of the session: in mid-snapshot, open the frame first."""
        self._in_use.add(topic)
        if self._snapshot_begin is not None:
            self._broadcast(self._snapshot_begin, topics=[topic])

    def _adopt_tails(self, tails: dict[Where, TailRecord | None]) -> None:
        for where, record in tails.items():
            if record is not None:
                self._tails[where] = record.rank(pipeline=self.pipeline)

    # --- write and flush --------------------------------------------------------------------

    def _broadcast(self, marker: Event, *, topics: Iterable[str] | None = None) -> None:
        """A marker goes to every partition of every topic in use (or of ``topics``)."""
        ((extra, value),) = self._records([marker])
        extra = [*extra, *reason_header(marker)]
        key = self._format.record_key(marker)
        for topic in sorted(self._in_use) if topics is None else topics:
            for partition in range(self._partitions[topic]):
                self._produce(topic, partition, event=marker, key=key, value=value, extra=extra)
                if self._rejected is not None:
                    return

    def _records(
        self, events: Sequence[Event]
    ) -> Sequence[tuple[Sequence[tuple[str, bytes]], bytes | None]]:
        """The format's headers (binary content mode) and value of each event's record."""
        if self._binary:
            return self._format.binary_batch(events)
        headers = self._structured_headers
        return [(headers, value) for value in self._format.record_values(events)]

    def _produce(
        self,
        topic: str,
        partition: int,
        *,
        event: Event,
        key: bytes,
        value: bytes | None,
        extra: Sequence[tuple[str, bytes]] = (),
        tombstone: bool = False,
    ) -> None:
        where = (topic, partition)
        tail = self._tails.get(where) if self._tails else None
        if tail is not None:
            if rank_of(event, tombstone=tombstone) <= tail:
                self.skipped += 1
                return
            del self._tails[where]  # past the tail: every later record is too
        producer = self._require_producer()
        headers = headers_of(event, pipeline=self._pipeline_header)
        if extra:
            headers += extra
        deadline: float | None = None
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition, headers=headers)
                self.produced += 1
                return
            except BufferError:  # the local queue is full: let deliveries make room
                deadline = deadline or time.monotonic() + self.settings.flush_timeout
                if time.monotonic() > deadline:
                    raise SinkUnavailableError(
                        f"kafka: the producer queue stayed full for {self.settings.flush_timeout}s"
                    ) from None
                producer.poll(0.05)
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                failure = DeliveryFailure(error, topic, partition, event.key, header_map(headers))
                if failure.permanent:
                    self._rejected = rejection(failure)
                    return
                raise SinkUnavailableError(f"kafka: producing {failure.describe()}") from exception

    def _produce_checkpoint(self, event: Event) -> None:
        checkpoint = Checkpoint(
            event=event, snapshot_begin=self._snapshot_begin, topics=tuple(sorted(self._in_use))
        )
        try:
            self._require_producer().produce(
                self.checkpoint_topic,
                value=checkpoint.encode(),
                key=self._pipeline_header,
                partition=0,
                headers=checkpoint.headers(pipeline=self._pipeline_header),
            )
        except (KafkaException, BufferError) as error:
            raise SinkUnavailableError(f"kafka: producing the checkpoint: {error}") from error

    def _settle(self, *, what: str) -> None:
        """Serve delivery reports until nothing is outstanding; unavailable after the timeout."""
        producer = self._require_producer()
        deadline = time.monotonic() + self.settings.flush_timeout
        while True:
            remaining = producer.flush(
                max(0.0, min(_SETTLE_SLICE_SECONDS, deadline - time.monotonic()))
            )
            if remaining == 0 or self._fatal is not None:
                return
            if time.monotonic() >= deadline:
                last = (
                    "" if self._last_error is None else f" (last error: {self._last_error.str()})"
                )
                raise SinkUnavailableError(
                    f"kafka: {remaining} {what} not acknowledged by {self._clients.servers} "
                    f"within {self.settings.flush_timeout}s{last}; they stay queued and are "
                    "retried"
                )

    def _raise_failures(self) -> None:
        """Turn what the callbacks recorded into the error the pump acts on."""
        if not self._failures and self._fatal is None:
            return
        permanent = [failure for failure in self._failures if failure.permanent]
        if permanent:
            raise rejection(min(permanent, key=DeliveryFailure.rank))
        if self._failures:
            first = min(self._failures, key=DeliveryFailure.rank)
            raise SinkUnavailableError(
                f"kafka: {len(self._failures)} records not delivered, first "
                f"{first.describe()}; the producer is replaced and the batch rewritten"
            )
        raise SinkUnavailableError(
            f"kafka: the producer failed ({self._fatal}); it is replaced and the batch rewritten"
        )

    # --- callbacks: they only record (librdkafka calls them from poll/flush) -----------------

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(
                DeliveryFailure(
                    error,
                    message.topic() or "?",
                    message.partition() or 0,
                    message.key(),
                    header_map(message.headers()),
                )
            )

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = error
        if error.fatal():
            self._fatal = error

    # --- small helpers ----------------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self._opened:
            raise SinkUnavailableError("kafka: the sink is not open")
        if self._broken:
            raise SinkUnavailableError("kafka: a flush failed; reopen the sink first")

    def _require_producer(self) -> Producer:
        if self._producer is None:
            raise SinkUnavailableError("kafka: the sink is not open")
        return self._producer

    def _require_admin(self) -> TopicAdmin:
        if self._admin is None:
            raise SinkUnavailableError("kafka: the sink is not open")
        return self._admin


def _begin_marker_for(event: Event, *, keyspace: KeySpace) -> Event:
    return Event(
        revision=event.revision,
        index=0,
        type=EventType.MARKER,
        op=Op.SNAPSHOT_BEGIN,
        key=keyspace.describe(),
        reason=event.reason or SnapshotReason.INITIAL,
    )
