"""What a failed delivery means, and how it is reported.

librdkafka reports failures from its own threads, through callbacks that only record them
(``sinks.kafka.sink``); the owning thread turns them into the pump's errors. A failure a retry
cannot cure (the record, the topic or our credentials must change) is ``SinkRejectedError``,
naming the key and revision and what to do; anything else is ``SinkUnavailableError``.
"""

from dataclasses import dataclass

from confluent_kafka import KafkaError

from bridge.encoding import printable_key
from bridge.errors import SinkRejectedError
from bridge.events import Position
from sinks.kafka.records import HEADER_INDEX, HEADER_OP, HEADER_REVISION, Rank, rank_in

PERMANENT_ERRORS = frozenset(
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


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One record that was not delivered, as the callback (or ``produce``) recorded it."""

    error: KafkaError
    topic: str
    partition: int
    key: bytes | None
    headers: dict[str, bytes]

    @property
    def permanent(self) -> bool:
        return self.error.code() in PERMANENT_ERRORS

    def rank(self) -> Rank:
        """The record's rank, to report the first failure; the checkpoint record ranks first."""
        try:
            return rank_in(self.headers, tombstone=False)
        except (KeyError, ValueError):
            return (0, False, 0, False)

    def refused_position(self) -> Position | None:
        """The position of the event whose record is too large by itself: a refusal the
        pipeline's ``ON_REFUSED`` policy may go past. None for every other failure (a
        permission, the checkpoint record), which would meet any record."""
        if self.error.code() != KafkaError.MSG_SIZE_TOO_LARGE or HEADER_OP not in self.headers:
            return None
        try:
            rank = rank_in(self.headers, tombstone=False)
        except (KeyError, ValueError):
            return None
        return Position(rank[0], rank[2])

    def describe(self) -> str:
        record = "the checkpoint record" if HEADER_OP not in self.headers else "the record"
        revision = self.headers.get(HEADER_REVISION, b"?").decode(errors="replace")
        index = self.headers.get(HEADER_INDEX, b"?").decode(errors="replace")
        key = printable_key(self.key or b"")
        return (
            f"{record} of key {key!r} at revision {revision} (index {index}) for "
            f"{self.topic}[{self.partition}]: {self.error.str()} ({self.error.name()})"
        )


def rejection(failure: DeliveryFailure) -> SinkRejectedError:
    advice = _ADVICE.get(failure.error.code(), "fix the cause and restart: the bridge resumes here")
    revision = failure.headers.get(HEADER_REVISION, b"").decode(errors="replace")
    return SinkRejectedError(
        f"kafka: refused for good: {failure.describe()}; nothing after it is checkpointed. "
        f"To go on: {advice}",
        key=failure.key,
        revision=int(revision) if revision.isdigit() else None,
        position=failure.refused_position(),
    )
