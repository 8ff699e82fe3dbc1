"""The ``kafka`` sink (``BRIDGE_KAFKA__*``); docs/kafka.md explains every field.

Two fields need more than a type:

- ``topic`` is a topic name or a *template* (``bridge.keytemplate``): ``{1}``, ``{2}``... stand
  for the first, second... ``/``-separated segment of the key below the watched prefix, so
  ``etcd.{1}`` routes ``<prefix>billing/limits`` to ``etcd.billing``. The template is checked
  here, once, so a typo stops the bridge at start-up instead of at the first key.
- ``properties`` passes any librdkafka property through, for SASL/SSL, compression, linger...
  It is read either from ``BRIDGE_KAFKA__PROPERTIES__SASL_PASSWORD=...`` variables (the part
  after ``PROPERTIES__`` is lowercased and its ``_`` become ``.``) or from one JSON object in
  ``BRIDGE_KAFKA__PROPERTIES`` (names kept exactly; use it for a property whose name has an
  ``_``); pydantic-settings takes one form or the other, not both. Every value is a
  ``SecretStr``: we cannot know which of an open set of properties are secret, so none is ever
  printed. Properties exactly-once depends on are refused (see ``MANAGED_PROPERTIES``).
"""

import re
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, SecretStr, field_validator

from bridge.keytemplate import KeyTemplate
from config.errors import ConfigError

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""Kafka's rule for a topic name (and neither ``.`` nor ``..``)."""


MANAGED_PROPERTIES: dict[str, str] = {
    "bootstrap.servers": "set BRIDGE_KAFKA__BOOTSTRAP_SERVERS instead",
    "enable.idempotence": "the bridge needs the idempotent producer for exactly-once",
    "enable.gapless.guarantee": "the bridge needs it: a refused record must stop its partition",
    "acks": "the bridge needs acks=all",
    "request.required.acks": "the bridge needs acks=all",
    "message.timeout.ms": "records never time out: a timed-out record would leave a gap",
    "delivery.timeout.ms": "records never time out: a timed-out record would leave a gap",
    "transactional.id": "the bridge does not use transactions (see docs/kafka.md)",
    "isolation.level": "the bridge reads partition tails uncommitted",
    "group.id": "the bridge never joins a consumer group",
}
"""librdkafka properties the bridge sets itself; the reason is the error message."""


def normalize_property(name: str) -> str:
    """``sasl_password`` (from an environment variable) -> ``sasl.password``."""
    name = name.strip().lower()
    return name if "." in name else name.replace("_", ".")


class KafkaSettings(BaseModel):
    """Where and how the Kafka sink produces; see docs/kafka.md."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated host:port list of the Kafka brokers (required by the "
        "kafka sink).",
    )
    topic: str = Field(
        default="etcd-bridge",
        description="Topic the events are produced to, or a template: {1}, {2}... are the "
        "1st, 2nd... '/'-separated segment of the key below the prefix.",
    )
    tombstones: bool = Field(
        default=False,
        description="Follow each DELETE by a null-value record for the same key, so a "
        "compacted topic mirrors the prefix.",
    )
    content_mode: Literal["binary", "structured"] = Field(
        default="binary",
        description="With BRIDGE_KAFKA__FORMAT=cloudevents: binary (attributes in ce_ "
        "headers, the data as the value, the key as the partition key) or structured (the "
        "whole event as the value); the other formats have one mode.",
    )
    partitions: int | None = Field(
        default=None,
        ge=1,
        description="Partitions of a topic the bridge creates; unset: the broker's default.",
    )
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        description="Replication factor of a topic the bridge creates; unset: the broker's "
        "default.",
    )
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = Field(
        default="delete",
        description="cleanup.policy of a data topic the bridge creates; 'compact' with "
        "tombstones keeps a live mirror of the prefix.",
    )
    create_topics: bool = Field(
        default=True,
        description="Create missing topics (data and checkpoint); when false, or when the "
        "broker refuses, a missing topic stops the bridge with its name.",
    )
    checkpoint_topic: str | None = Field(
        default=None,
        description="Single-partition, compacted topic holding the pipeline's position; "
        "unset: '<topic>.<BRIDGE_NAME>.checkpoint' (template placeholders become '_').",
    )
    flush_timeout: PositiveFloat = Field(
        default=30.0,
        description="Seconds a flush waits for the broker's acknowledgements before "
        "reporting it unavailable (the records stay queued and are retried, never dropped).",
    )
    timeout: PositiveFloat = Field(
        default=10.0,
        description="Deadline of one metadata or admin request, and of reading the partition "
        "tails on open, seconds.",
    )
    properties: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="librdkafka properties passed to every client (producer, tail reader, "
        "admin): BRIDGE_KAFKA__PROPERTIES__SASL_PASSWORD=... or a JSON object. Never logged.",
    )

    @field_validator("topic")
    @classmethod
    def _topic_or_template(cls, topic: str) -> str:
        try:
            blank = KeyTemplate.parse(topic).fill(())
        except ValueError as error:
            raise ValueError(f"{topic!r}: {error}") from error
        _valid_topic_name(blank.decode("utf-8"))
        return topic

    @property
    def template(self) -> KeyTemplate:
        return KeyTemplate.parse(self.topic)

    @field_validator("checkpoint_topic")
    @classmethod
    def _checkpoint_is_a_name(cls, topic: str | None) -> str | None:
        return None if topic is None else _valid_topic_name(topic)

    @field_validator("properties")
    @classmethod
    def _pass_through(cls, properties: dict[str, SecretStr]) -> dict[str, SecretStr]:
        normalized: dict[str, SecretStr] = {}
        for raw_name, value in properties.items():
            name = normalize_property(raw_name)
            if name in MANAGED_PROPERTIES:
                raise ValueError(f"{name} cannot be set: {MANAGED_PROPERTIES[name]}")
            normalized[name] = value
        return normalized

    def checked_checkpoint_topic(self, pipeline: str) -> str:
        """``checkpoint_topic_for``, or ConfigError naming the variable when the name it makes
        is not a topic name."""
        try:
            return self.checkpoint_topic_for(pipeline)
        except ValueError as error:
            raise ConfigError(f"BRIDGE_KAFKA__CHECKPOINT_TOPIC: {error}") from error

    def checkpoint_topic_for(self, pipeline: str) -> str:
        """The checkpoint topic of pipeline ``pipeline`` (``BRIDGE_NAME``)."""
        if self.checkpoint_topic is not None:
            return self.checkpoint_topic
        blank = self.template.fill(()).decode("utf-8")
        return _valid_topic_name(f"{blank}.{pipeline}.checkpoint")

    def client_properties(self) -> dict[str, str]:
        """The pass-through properties with their values revealed: for librdkafka only."""
        return {name: value.get_secret_value() for name, value in self.properties.items()}


def _valid_topic_name(topic: str) -> str:
    if not TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise ValueError(
            f"{topic!r} is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')"
        )
    return topic
