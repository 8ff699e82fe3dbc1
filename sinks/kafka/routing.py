"""Where a record goes: its topic (the configured name, or a template filled from the key) and
its partition.

We pick every record's partition ourselves, with Java's murmur2 as Kafka's default partitioner
does, for two reasons: the sink skips what a partition already holds (``sinks.kafka.sink``),
so it must know a record's partition before producing it; and librdkafka may reorder records
that mix explicit and partitioner-chosen partitions.
"""

import re

from confluent_kafka import murmur2

from bridge.errors import SinkRejectedError
from bridge.keytemplate import KeyTemplate
from config.keyspace import KeySpace


def partition_for(key: bytes, *, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``."""
    return 0 if partitions == 1 else murmur2(key, partitions)


_UNSAFE_TOPIC_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


def _topic_safe(segment: bytes) -> bytes:
    """A key segment as topic-name characters: each character a topic cannot hold (or each
    undecodable byte sequence) becomes one ``_``."""
    text = segment.decode("utf-8", errors="replace")
    return _UNSAFE_TOPIC_CHARACTERS.sub("_", text).encode("ascii")


class TopicRouter:
    """The topic of a key: the configured name, or the template filled from the key
    (``bridge.keytemplate``), with characters a topic name cannot hold mapped to ``_``."""

    def __init__(self, template: KeyTemplate, *, keyspace: KeySpace) -> None:
        self.template = template
        self.topic = template.source
        self.keyspace = keyspace
        self.is_template = template.routed
        self._cache: dict[tuple[bytes, ...], str] = {}

    def topic_for(self, key: bytes) -> str:
        if not self.is_template:
            return self.topic
        segments = self.template.segments(key, keyspace=self.keyspace)
        topic = self._cache.get(segments)
        if topic is None:
            topic = self._fill(segments)
            if len(self._cache) < 100_000:
                self._cache[segments] = topic
        return topic

    def _fill(self, segments: tuple[bytes, ...]) -> str:
        topic = self.template.fill(segments, clean=_topic_safe).decode("ascii")
        if len(topic) > 249 or topic in (".", ".."):
            raise SinkRejectedError(
                f"kafka: the topic template {self.topic!r} gives {topic[:60]!r}..., which is "
                "not a Kafka topic name (at most 249 characters)"
            )
        return topic
