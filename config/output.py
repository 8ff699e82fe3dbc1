"""What a sink's records look like (``BRIDGE_<NAME>__FORMAT``, ``BRIDGE_VALUES``).

The format is chosen per sink, because one pipeline may feed a Flink job through Kafka
(Debezium's envelope) and a Knative broker through NATS (CloudEvents) at once; how values are
embedded is chosen per pipeline (``BRIDGE_VALUES``), because it describes the data in etcd,
not a destination. The core adds ``OutputSettings``' fields to every sink's own section, so a
third-party sink gets them the same way as ours.
"""

import enum

from pydantic import BaseModel, Field


class FormatName(enum.StrEnum):
    """The record shapes a sink can write (docs/formats.md)."""

    NATIVE = "native"
    DEBEZIUM = "debezium"
    CLOUDEVENTS = "cloudevents"


class ValuesMode(enum.StrEnum):
    """How values and previous values are embedded in every format."""

    BYTES = "bytes"
    """UTF-8 text, or base64 and named in ``b64``."""
    JSON = "json"
    """A value that parses as JSON is embedded as a JSON value; one that does not is delivered
    as with ``bytes`` and named in ``raw``."""


class OutputSettings(BaseModel):
    """The fields every sink's section has besides its own (it keeps the sink model's
    configuration: unknown variables are refused by ``config.variables`` for all alike)."""

    format: FormatName = Field(
        default=FormatName.NATIVE,
        description="Record shape: native (docs/events.md), debezium (Debezium's change-event "
        "envelope) or cloudevents (CloudEvents 1.0); docs/formats.md. Changing it for an "
        "existing destination is like changing the prefix: give it a new one.",
    )
    debezium_schemas: bool = Field(
        default=False,
        description="With format=debezium: wrap each record in {schema, payload} as Kafka "
        "Connect's JsonConverter does with schemas.enable=true.",
    )
