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
from config.keyspace import KeySpace
from sinks.kafka.settings import PLACEHOLDER, is_template


def partition_for(key: bytes, *, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``."""
    return 0 if partitions == 1 else murmur2(key, partitions)


_UNSAFE_TOPIC_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


class TopicRouter:
    """The topic of a key: the configured name, or the template filled from the key.

    ``{n}`` is the n-th ``/``-separated segment of the key below its watched prefix (leading
    ``/`` ignored); characters a topic name cannot hold become ``_``, and a missing or empty
    segment is ``_``.
    """

    def __init__(self, topic: str, *, keyspace: KeySpace) -> None:
        self.topic = topic
        self.keyspace = keyspace
        self.is_template = is_template(topic)
        self._parts = PLACEHOLDER.split(topic)
        self._highest = max((int(n) for n in PLACEHOLDER.findall(topic)), default=0)
        self._cache: dict[tuple[bytes, ...], str] = {}

    def topic_for(self, key: bytes) -> str:
        if not self.is_template:
            return self.topic
        relative = self.keyspace.relative(key)
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
