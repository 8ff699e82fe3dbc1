"""Topic metadata and creation, through the admin client.

Data topics are created with the configured partitions, replication and ``cleanup.policy``;
the checkpoint topic with one partition and ``compact`` (only its last record matters).
Metadata is always asked for all topics, so that a metadata request never auto-creates one.
A missing topic we may not create, or that the broker refuses to create for good, stops the
bridge naming the topic and the variable; a timeout is only "unavailable".
"""

import logging
import time
from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bridge.errors import SinkRejectedError, SinkUnavailableError
from sinks.kafka.clients import Clients

log = logging.getLogger(__name__)

_VISIBLE_POLL_SECONDS = 0.05


def partition_counts(
    client: AdminClient | Consumer, topics: Iterable[str], *, clients: Clients
) -> dict[str, int]:
    """Partition counts of those of ``topics`` that exist, from all-topics metadata (asking
    for a topic by name may create it); unavailable, naming the servers, without an answer."""
    try:
        metadata = client.list_topics(timeout=clients.settings.timeout)
    except KafkaException as error:
        raise SinkUnavailableError(
            f"kafka: no metadata from {clients.servers} within {clients.settings.timeout}s "
            f"({clients.scrub(str(error.args[0]))}); check BRIDGE_KAFKA__BOOTSTRAP_SERVERS "
            "and the security properties in BRIDGE_KAFKA__PROPERTIES"
        ) from error
    counts: dict[str, int] = {}
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            counts[topic] = len(found.partitions)
    return counts


class TopicAdmin:
    """Makes topics exist and tells their partition counts."""

    def __init__(self, clients: Clients) -> None:
        self._clients = clients
        self._settings = clients.settings
        self._admin = clients.new(AdminClient, {})

    def ensure(self, topics: Sequence[str], *, checkpoint: bool) -> tuple[dict[str, int], set[str]]:
        """Make ``topics`` exist; their partition counts, and the set of those we created."""
        existing = self._describe(topics)
        missing = [topic for topic in topics if topic not in existing]
        created: set[str] = set()
        if missing:
            created = self._create(missing, checkpoint=checkpoint)
            existing.update(self._wait_visible(missing))
        return existing, created

    def _describe(self, topics: Iterable[str]) -> dict[str, int]:
        return partition_counts(self._admin, topics, clients=self._clients)

    def _create(self, topics: Sequence[str], *, checkpoint: bool) -> set[str]:
        variable = "BRIDGE_KAFKA__CHECKPOINT_TOPIC" if checkpoint else "BRIDGE_KAFKA__TOPIC"
        settings = self._settings
        if not settings.create_topics:
            raise SinkRejectedError(
                f"kafka: topic {topics[0]!r} ({variable}) does not exist and "
                "BRIDGE_KAFKA__CREATE_TOPICS is false: create it, or allow the bridge to"
            )
        new_topics = [
            NewTopic(
                topic,
                num_partitions=1 if checkpoint else (settings.partitions or -1),
                replication_factor=settings.replication_factor or -1,
                config={"cleanup.policy": "compact" if checkpoint else settings.cleanup_policy},
            )
            for topic in topics
        ]
        futures = self._admin.create_topics(
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
                    raise SinkUnavailableError(message) from exception
                raise SinkRejectedError(
                    f"{message}; create it yourself or grant the bridge CREATE"
                ) from exception
            created.add(topic)
            log.info(
                "kafka topic created",
                extra={"topic": topic, "partitions": 1 if checkpoint else settings.partitions},
            )
        return created

    def _wait_visible(self, topics: Sequence[str]) -> dict[str, int]:
        deadline = time.monotonic() + self._settings.timeout
        while True:
            counts = self._describe(topics)
            if len(counts) == len(topics):
                return counts
            if time.monotonic() >= deadline:
                raise SinkUnavailableError(
                    f"kafka: topics {sorted(set(topics) - counts.keys())} were created but "
                    f"have no partitions in the metadata after {self._settings.timeout}s"
                )
            time.sleep(_VISIBLE_POLL_SECONDS)
