"""The ``kafka`` sink: one record per event, exactly once, without Kafka transactions.

Only this module imports ``confluent_kafka``. docs/kafka.md is the operator's view (settings,
record layout, the guarantee and its limits); this docstring is why the code looks like this.

**Records.** Key = the etcd key, value = ``Event.to_json()``, headers ``revision``, ``index``,
``type``, ``op`` and ``pipeline``. With ``BRIDGE_KAFKA__TOMBSTONES`` a DELETE is followed by a
null-value record for its key. We pick every record's partition ourselves (Java's murmur2, as
Kafka's default partitioner does) because skipping, below, must know it before producing, and
because librdkafka may reorder records that mix explicit and partitioner-chosen partitions.
Markers (``snapshot_begin``/``snapshot_end``, whose key is the watched prefix) go to *every*
partition of every topic of the pipeline, so a consumer of any subset of partitions sees each
resync; a topic a template routes to for the first time in the middle of a snapshot first gets
that snapshot's ``snapshot_begin``, so every partition holds whole ``begin..end`` frames.

**Where we stopped.** The broker here (Tansu) has no working transactions or
``read_committed``, so correctness rests on two facts only:

1. *Per partition, the topic holds a prefix of what we produced to it.* The producer is
   idempotent (the broker de-duplicates retries by sequence number) with
   ``enable.gapless.guarantee`` and ``message.timeout.ms=0``: a record is never dropped while
   later ones in its partition go through (a refused record is fatal for the producer; a
   record never times out). So if a partition's last record has position L, every record we
   meant for that partition up to L is there, once, in order.
2. *A checkpoint C, written only after a flush's records were all acknowledged*, in a
   single-partition topic of its own (one record per flush, key = pipeline name, value = the
   last event of the batch as JSON plus the topics used). Everything up to C is in Kafka.

``open()`` reads C and the tail (last record) of every partition, and returns C: the pump
re-sends everything after C, and ``write()`` skips, per partition, each record whose position
is at or below that partition's tail. The maximum over the tails would *not* do: after a crash
partition A may hold revision 100 while revision 99, bound for B, was never acknowledged.
Positions compare as ``(revision, is-snapshot, index, is-tombstone)``: a snapshot taken at a
revision whose watched changes were already produced (etcd compacted past C before the
restart) must not be mistaken for them, and a DELETE whose tombstone was lost gets it.

The broker's high watermark is wrong here (the last batch's base offset + 1), so a tail is read
from ``high - 1`` until every partition showed a record or its end and a poll then returns
nothing; when that finds nothing it steps further back.

**Failures.** Delivery reports and error callbacks only record; the owning thread raises from
``flush``. A record the broker (or librdkafka's size check) refuses for good raises
``SinkRejectedError`` naming key and revision; nothing after it is checkpointed, and in its
partition nothing after it is written (gapless). Anything else is ``SinkUnavailableError``:
records stay queued in the producer, which is *kept* across ``close``/``open`` while it holds
unacknowledged records: dropping it would let its in-flight requests land after the next
``open()`` read the tails.
"""

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
    murmur2,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bridge.encoding import printable_key
from bridge.errors import ConfigError, SinkRejectedError, SinkUnavailableError
from bridge.events import SNAPSHOT_OPS, Event, EventType, Op, SnapshotReason
from config.kafka import PLACEHOLDER, KafkaSettings, is_template
from config.settings import Settings
from sinks.base import Sink

log = logging.getLogger(__name__)


class _ScrubSecrets(logging.Filter):
    """librdkafka's own log lines may quote property values (a CONFWARN does): mask them."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message, self.secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


_SCRUBBER = _ScrubSecrets()
librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
"""Where librdkafka's own log lines go, property values masked."""
librdkafka_log.addFilter(_SCRUBBER)

HEADER_REVISION = "revision"
HEADER_INDEX = "index"
HEADER_TYPE = "type"
HEADER_OP = "op"
HEADER_PIPELINE = "pipeline"

CHECKPOINT_VERSION = 1
_CHECKPOINT_VALUES_LIMIT = 256 * 1024
"""A checkpoint whose event would exceed this drops the event's value and prev_value."""

_TAIL_QUIET_SECONDS = 0.3
"""A tail read ends with a poll this long that returns nothing."""

_SETTLE_SLICE_SECONDS = 0.2

C = TypeVar("C")
Headers = list[tuple[str, str | bytes | None]]

Rank = tuple[int, int, int, int]
"""A record's place in its partition: (revision, is-snapshot, index, is-tombstone)."""

_PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.INVALID_CONFIG,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._INVALID_ARG,
    }
)
"""Errors a retry cannot cure: the record, the topic or our credentials must change."""

_ADVICE = {
    KafkaError.MSG_SIZE_TOO_LARGE: "raise the topic's max.message.bytes and the producer's "
    "message.max.bytes (BRIDGE_KAFKA__PROPERTIES__MESSAGE_MAX_BYTES), or store a smaller value",
    KafkaError.RECORD_LIST_TOO_LARGE: "raise the topic's max.message.bytes",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "grant the bridge's principal WRITE on the topic",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "grant the bridge's principal IDEMPOTENT_WRITE",
}


# --- partitioning and routing ---------------------------------------------------------------


def partition_for(key: bytes, *, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``."""
    return 0 if partitions == 1 else murmur2(key, partitions)


_UNSAFE_TOPIC_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


class TopicRouter:
    """The topic of a key: the configured name, or the template filled from the key.

    ``{n}`` is the n-th ``/``-separated segment of the key below the watched prefix (leading
    ``/`` ignored); characters a topic name cannot hold become ``_``, and a missing or empty
    segment is ``_``.
    """

    def __init__(self, topic: str, *, prefix: bytes) -> None:
        self.topic = topic
        self.prefix = prefix
        self.is_template = is_template(topic)
        self._parts = PLACEHOLDER.split(topic)
        self._highest = max((int(n) for n in PLACEHOLDER.findall(topic)), default=0)
        self._cache: dict[tuple[bytes, ...], str] = {}

    def topic_for(self, key: bytes) -> str:
        if not self.is_template:
            return self.topic
        relative = key[len(self.prefix) :] if key.startswith(self.prefix) else key
        segments = tuple(relative.lstrip(b"/").split(b"/", self._highest)[: self._highest])
        topic = self._cache.get(segments)
        if topic is None:
            topic = self._fill(segments)
            if len(self._cache) < 100_000:
                self._cache[segments] = topic
        return topic

    def _fill(self, segments: tuple[bytes, ...]) -> str:
        pieces: list[str] = []
        for position, part in enumerate(self._parts):
            if position % 2 == 0:
                pieces.append(part)
                continue
            number = int(part)
            raw = segments[number - 1] if number <= len(segments) else b""
            text = _UNSAFE_TOPIC_CHARACTERS.sub("_", raw.decode("utf-8", errors="replace"))
            pieces.append(text or "_")
        topic = "".join(pieces)
        if len(topic) > 249 or topic in (".", ".."):
            raise SinkRejectedError(
                f"kafka: the topic template {self.topic!r} gives {topic[:60]!r}..., which is "
                "not a Kafka topic name (at most 249 characters)"
            )
        return topic


# --- records --------------------------------------------------------------------------------


def rank_of(event: Event, *, tombstone: bool = False) -> Rank:
    return (event.revision, event.op in SNAPSHOT_OPS, event.index, tombstone)


def headers_of(event: Event, *, pipeline: bytes) -> Headers:
    # The enums are StrEnums: encoding the member itself skips the slow ``.value`` lookup.
    return [
        (HEADER_REVISION, b"%d" % event.revision),
        (HEADER_INDEX, b"%d" % event.index),
        (HEADER_TYPE, event.type.encode()),
        (HEADER_OP, event.op.encode()),
        (HEADER_PIPELINE, pipeline),
    ]


@dataclass(frozen=True, slots=True)
class TailRecord:
    """The last record of one partition, as read back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def rank(self, *, pipeline: str) -> Rank:
        """This record's rank; SinkRejectedError if etcd-bridge's ``pipeline`` did not write it."""
        owner = self.headers.get(HEADER_PIPELINE)
        if owner is None:
            raise SinkRejectedError(
                f"kafka: the last record of {self.where()} was not written by etcd-bridge "
                f"(no {HEADER_PIPELINE!r} header); give the pipeline a topic of its own"
            )
        if owner.decode(errors="replace") != pipeline:
            raise SinkRejectedError(
                f"kafka: the last record of {self.where()} belongs to pipeline "
                f"{owner.decode(errors='replace')!r}, not {pipeline!r}; each pipeline "
                "(BRIDGE_NAME) needs topics of its own"
            )
        try:
            revision = int(self.headers[HEADER_REVISION])
            index = int(self.headers[HEADER_INDEX])
            op = Op(self.headers[HEADER_OP].decode())
        except (KeyError, ValueError) as error:
            raise SinkRejectedError(
                f"kafka: the last record of {self.where()} has malformed etcd-bridge headers "
                f"({error})"
            ) from None
        return (revision, op in SNAPSHOT_OPS, index, self.value is None)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the checkpoint topic holds: the last event of the last fully acknowledged flush."""

    event: Event
    snapshot_begin: Event | None
    topics: tuple[str, ...]

    def encode(self) -> bytes:
        event = self.event
        if len(event.value or b"") + len(event.prev_value or b"") > _CHECKPOINT_VALUES_LIMIT:
            event = dataclasses.replace(event, value=None, prev_value=None)
        return orjson.dumps(
            {
                "version": CHECKPOINT_VERSION,
                "event": event.to_dict(),
                "snapshot_begin": None
                if self.snapshot_begin is None
                else self.snapshot_begin.to_dict(),
                "topics": list(self.topics),
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> "Checkpoint":
        document = orjson.loads(value)
        begin = document.get("snapshot_begin")
        return cls(
            event=Event.from_dict(document["event"]),
            snapshot_begin=None if begin is None else Event.from_dict(begin),
            topics=tuple(str(topic) for topic in document.get("topics", ())),
        )


@dataclass(frozen=True, slots=True)
class _DeliveryFailure:
    """One delivery report with an error, as the callback recorded it."""

    error: KafkaError
    topic: str
    partition: int
    key: bytes | None
    headers: dict[str, bytes]

    @property
    def permanent(self) -> bool:
        return self.error.code() in _PERMANENT_ERRORS

    def rank(self) -> Rank:
        try:
            op = Op(self.headers.get(HEADER_OP, b"").decode())
            return (
                int(self.headers[HEADER_REVISION]),
                op in SNAPSHOT_OPS,
                int(self.headers[HEADER_INDEX]),
                False,
            )
        except (KeyError, ValueError):
            return (0, False, 0, False)

    def describe(self) -> str:
        record = "the checkpoint record" if HEADER_OP not in self.headers else "the record"
        revision = self.headers.get(HEADER_REVISION, b"?").decode(errors="replace")
        index = self.headers.get(HEADER_INDEX, b"?").decode(errors="replace")
        key = printable_key(self.key or b"")
        return (
            f"{record} of key {key!r} at revision {revision} (index {index}) for "
            f"{self.topic}[{self.partition}]: {self.error.str()} ({self.error.name()})"
        )


# --- the sink -------------------------------------------------------------------------------


class KafkaSink(Sink):
    """Events as Kafka records, exactly once per partition; see the module docstring."""

    name = "kafka"

    def __init__(self, *, settings: KafkaSettings, pipeline: str, prefix: bytes) -> None:
        if not settings.bootstrap_servers:
            raise ConfigError(
                "BRIDGE_KAFKA__BOOTSTRAP_SERVERS is required when BRIDGE_SINKS includes kafka"
            )
        try:
            self.checkpoint_topic = settings.checkpoint_topic_for(pipeline)
        except ValueError as error:
            raise ConfigError(f"BRIDGE_KAFKA__CHECKPOINT_TOPIC: {error}") from None
        self.settings = settings
        self.pipeline = pipeline
        self.prefix = prefix
        self.router = TopicRouter(settings.topic, prefix=prefix)
        self._servers: str = settings.bootstrap_servers
        self._pipeline_header = pipeline.encode()
        self._secrets = {v for v in settings.client_properties().values() if len(v) >= 3}
        _SCRUBBER.secrets.update(self._secrets)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._failures: list[_DeliveryFailure] = []
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
        self._tails: dict[tuple[str, int], Rank] = {}
        self._last: Event | None = None
        self._checkpointed: Event | None = None
        self._snapshot_begin: Event | None = None
        self.produced = 0
        self.skipped = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings=settings.kafka, pipeline=settings.name, prefix=settings.etcd.prefix_bytes
        )

    # --- the contract -----------------------------------------------------------------------

    def open(self) -> Event | None:
        self._opened = False
        self._settle_previous_producer()
        self._reset_session()
        if self._producer is None:
            self._producer = self._new_producer()
        if self._admin is None:
            self._admin = self._client(AdminClient, {})
        self._ensure_topics([self.checkpoint_topic], checkpoint=True)
        static = [] if self.router.is_template else [self.router.topic]
        created = self._ensure_topics(static, checkpoint=False) if static else set()
        wanted = [(self.checkpoint_topic, 0)] + [
            (topic, partition)
            for topic in static
            if topic not in created
            for partition in range(self._partitions[topic])
        ]
        tails = self._read_tails(wanted)
        checkpoint = self._decode_checkpoint(tails.pop((self.checkpoint_topic, 0)))
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
                    checkpoint.event, prefix=self.prefix
                )
        self._opened = True
        log.info(
            "kafka sink opened",
            extra={
                "servers": self._servers,
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
                partition = partition_for(event.key, partitions=self._partitions[topic])
                self._produce(topic, partition, event=event, value=event.to_json())
                if tombstones and event.type is EventType.DELETE:
                    self._produce(topic, partition, event=event, value=None, tombstone=True)
            if self._rejected is not None:
                return  # nothing after a refused record is produced
            self._last = event

    def flush(self) -> None:
        self._require_writable()
        try:
            self._settle(what="records")
            self._raise_failures()
            if self._rejected is not None:
                raise self._rejected
            if self._last is not None and self._last is not self._checkpointed:
                self._produce_checkpoint(self._last)
                self._settle(what="the checkpoint")
                self._raise_failures()
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
                extra={"records": remaining, "servers": self._servers},
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
        self._broken = False
        self._partitions = {}
        self._in_use = set()
        self._tails = {}
        self._last = self._checkpointed = self._snapshot_begin = None

    def _new_producer(self) -> Producer:
        return self._client(
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

    def _client(self, kind: Callable[[dict[str, Any]], C], extra: dict[str, Any]) -> C:
        configuration: dict[str, Any] = {
            **self.settings.client_properties(),
            **extra,
            "bootstrap.servers": self._servers,
            "error_cb": self._on_error,
            "logger": librdkafka_log,
        }
        try:
            return kind(configuration)
        except (KafkaException, ValueError, TypeError) as error:
            raise ConfigError(
                f"BRIDGE_KAFKA__PROPERTIES: librdkafka refused the configuration: "
                f"{self._scrub(str(error))}"
            ) from None

    def _ensure_topics(self, topics: Sequence[str], *, checkpoint: bool) -> set[str]:
        """Make ``topics`` exist, record their partition counts; return those we created."""
        existing = self._describe(topics)
        missing = [topic for topic in topics if topic not in existing]
        created: set[str] = set()
        if missing:
            created = self._create(missing, checkpoint=checkpoint)
            existing.update(self._wait_visible(missing))
        if not checkpoint:
            for topic in topics:
                self._partitions[topic] = existing[topic]
        return created

    def _describe(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition counts of those of ``topics`` that exist (all-topics metadata: no
        auto-creation by a metadata request)."""
        admin = self._require_admin()
        try:
            metadata = admin.list_topics(timeout=self.settings.timeout)
        except KafkaException as error:
            raise SinkUnavailableError(
                f"kafka: no metadata from {self._servers} within {self.settings.timeout}s "
                f"({self._scrub(str(error.args[0]))})"
            ) from None
        counts: dict[str, int] = {}
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                counts[topic] = len(found.partitions)
        return counts

    def _create(self, topics: Sequence[str], *, checkpoint: bool) -> set[str]:
        variable = "BRIDGE_KAFKA__CHECKPOINT_TOPIC" if checkpoint else "BRIDGE_KAFKA__TOPIC"
        if not self.settings.create_topics:
            raise SinkRejectedError(
                f"kafka: topic {topics[0]!r} ({variable}) does not exist and "
                "BRIDGE_KAFKA__CREATE_TOPICS is false: create it, or allow the bridge to"
            )
        settings = self.settings
        new_topics = [
            NewTopic(
                topic,
                num_partitions=1 if checkpoint else (settings.partitions or -1),
                replication_factor=settings.replication_factor or -1,
                config={"cleanup.policy": "compact" if checkpoint else settings.cleanup_policy},
            )
            for topic in topics
        ]
        futures = self._require_admin().create_topics(
            new_topics, request_timeout=settings.timeout, operation_timeout=settings.timeout
        )
        created: set[str] = set()
        for topic, future in futures.items():
            try:
                future.result()
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                message = (
                    f"kafka: topic {topic!r} ({variable}) does not exist and could not be "
                    f"created: {error.str()} ({error.name()})"
                )
                if error.retriable() or error.code() in (
                    KafkaError._TIMED_OUT,
                    KafkaError._TRANSPORT,
                    KafkaError.REQUEST_TIMED_OUT,
                ):
                    raise SinkUnavailableError(message) from None
                raise SinkRejectedError(
                    f"{message}; create it yourself or grant the bridge CREATE"
                ) from None
            created.add(topic)
            log.info(
                "kafka topic created",
                extra={"topic": topic, "partitions": 1 if checkpoint else settings.partitions},
            )
        return created

    def _wait_visible(self, topics: Sequence[str]) -> dict[str, int]:
        deadline = time.monotonic() + self.settings.timeout
        while True:
            counts = self._describe(topics)
            if len(counts) == len(topics):
                return counts
            if time.monotonic() >= deadline:
                raise SinkUnavailableError(
                    f"kafka: topics {sorted(set(topics) - counts.keys())} were created but "
                    f"have no partitions in the metadata after {self.settings.timeout}s"
                )
            time.sleep(0.05)

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
            self._read_tails(
                [
                    (topic, partition)
                    for topic in topics
                    if topic not in created
                    for partition in range(self._partitions[topic])
                ]
            )
        )

    def _start_using(self, topic: str) -> None:
        """A topic's first record of the session: in mid-snapshot, open the frame first."""
        self._in_use.add(topic)
        if self._snapshot_begin is not None:
            self._broadcast(self._snapshot_begin, topics=[topic])

    def _adopt_tails(self, tails: dict[tuple[str, int], TailRecord | None]) -> None:
        for where, record in tails.items():
            if record is not None:
                self._tails[where] = record.rank(pipeline=self.pipeline)

    def _read_tails(
        self, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], TailRecord | None]:
        """The last record of each partition (None: empty), read back from the broker.

        A high watermark here may be too low, so a tail is read from ``high - 1`` to the end;
        when that yields nothing although ``high > low``, from further back.
        """
        if not partitions:
            return {}
        deadline = time.monotonic() + self.settings.timeout
        consumer = self._client(
            Consumer,
            {
                "group.id": f"etcd-bridge-tails.{self.pipeline}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
            },
        )
        try:
            found: dict[tuple[str, int], TailRecord | None] = {}
            back = dict.fromkeys(partitions, 1)
            pending = list(partitions)
            while pending:
                starts: dict[tuple[str, int], int] = {}
                lows: dict[tuple[str, int], int] = {}
                for where in pending:
                    low, high = self._watermarks(consumer, where, deadline=deadline)
                    lows[where] = low
                    starts[where] = max(low, high - back[where]) if high > low else low
                read = self._read_from(consumer, starts, deadline=deadline)
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
        self, consumer: Consumer, where: tuple[str, int], *, deadline: float
    ) -> tuple[int, int]:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(*where), timeout=max(0.1, deadline - time.monotonic()), cached=False
            )
        except KafkaException as error:
            raise SinkUnavailableError(
                f"kafka: no offsets for {where[0]}[{where[1]}] from {self._servers}: "
                f"{self._scrub(str(error.args[0]))}"
            ) from None
        return int(low), int(high)

    def _read_from(
        self, consumer: Consumer, starts: dict[tuple[str, int], int], *, deadline: float
    ) -> dict[tuple[str, int], TailRecord | None]:
        """Read from ``starts`` until each partition showed a record or its end, then until a
        poll returns nothing; the last record of each partition."""
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
        last: dict[tuple[str, int], TailRecord | None] = dict.fromkeys(starts)
        heard: set[tuple[str, int]] = set()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise SinkUnavailableError(
                        f"kafka: reading the tails of {len(starts)} partitions from "
                        f"{self._servers} took longer than {self.settings.timeout}s"
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

    def _decode_checkpoint(self, record: TailRecord | None) -> Checkpoint | None:
        if record is None:
            return None
        where = f"the checkpoint topic {self.checkpoint_topic!r} ({record.where()})"
        owner = record.headers.get(HEADER_PIPELINE, b"").decode(errors="replace")
        if owner != self.pipeline or record.value is None:
            raise SinkRejectedError(
                f"kafka: {where} ends with a record of pipeline {owner!r}, not "
                f"{self.pipeline!r}; set BRIDGE_KAFKA__CHECKPOINT_TOPIC to a topic of its own"
            )
        try:
            return Checkpoint.decode(record.value)
        except (ValueError, KeyError, TypeError) as error:
            raise SinkRejectedError(
                f"kafka: {where} ends with a record that is not an etcd-bridge checkpoint ({error})"
            ) from None

    # --- write and flush --------------------------------------------------------------------

    def _broadcast(self, marker: Event, *, topics: Iterable[str] | None = None) -> None:
        """A marker goes to every partition of every topic in use (or of ``topics``)."""
        value = marker.to_json()
        for topic in sorted(self._in_use) if topics is None else topics:
            for partition in range(self._partitions[topic]):
                self._produce(topic, partition, event=marker, value=value)
                if self._rejected is not None:
                    return

    def _produce(
        self,
        topic: str,
        partition: int,
        *,
        event: Event,
        value: bytes | None,
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
        deadline: float | None = None
        while True:
            try:
                producer.produce(
                    topic, value=value, key=event.key, partition=partition, headers=headers
                )
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
                failure = _DeliveryFailure(error, topic, partition, event.key, header_map(headers))
                if failure.permanent:
                    self._rejected = _rejection(failure)
                    return
                raise SinkUnavailableError(f"kafka: producing {failure.describe()}") from None

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
                headers=[
                    (HEADER_REVISION, b"%d" % event.revision),
                    (HEADER_INDEX, b"%d" % event.index),
                    (HEADER_PIPELINE, self._pipeline_header),
                ],
            )
        except (KafkaException, BufferError) as error:
            raise SinkUnavailableError(f"kafka: producing the checkpoint: {error}") from None

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
                    f"kafka: {remaining} {what} not acknowledged by {self._servers} within "
                    f"{self.settings.flush_timeout}s{last}; they stay queued and are retried"
                )

    def _raise_failures(self) -> None:
        """Turn what the callbacks recorded into the error the pump acts on."""
        if not self._failures and self._fatal is None:
            return
        permanent = [failure for failure in self._failures if failure.permanent]
        if permanent:
            raise _rejection(min(permanent, key=_DeliveryFailure.rank))
        if self._failures:
            first = min(self._failures, key=_DeliveryFailure.rank)
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
                _DeliveryFailure(
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

    def _require_admin(self) -> AdminClient:
        if self._admin is None:
            raise SinkUnavailableError("kafka: the sink is not open")
        return self._admin

    def _scrub(self, text: str) -> str:
        """librdkafka quotes bad values in its messages: never let a property value through."""
        return scrub(text, self._secrets)


def header_map(
    headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None,
) -> dict[str, bytes]:
    """Headers as a dict of bytes (a repeated name keeps its last value)."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {
        name: value.encode() if isinstance(value, str) else value
        for name, value in items
        if value is not None
    }


def _tail_record(message: Message) -> TailRecord:
    return TailRecord(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=header_map(message.headers()),
    )


def _rejection(failure: _DeliveryFailure) -> SinkRejectedError:
    advice = _ADVICE.get(failure.error.code(), "fix the cause and restart: the bridge resumes here")
    return SinkRejectedError(
        f"kafka: refused for good: {failure.describe()}; nothing after it is checkpointed. "
        f"To go on: {advice}"
    )


def _begin_marker_for(event: Event, *, prefix: bytes) -> Event:
    return Event(
        revision=event.revision,
        index=0,
        type=EventType.MARKER,
        op=Op.SNAPSHOT_BEGIN,
        key=prefix,
        reason=event.reason or SnapshotReason.INITIAL,
    )
