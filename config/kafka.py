"""The ``kafka`` sink (``BRIDGE_KAFKA__*``)."""

from pydantic import BaseModel, Field


class KafkaSettings(BaseModel):
    """Where the Kafka sink produces to."""

    bootstrap_servers: str | None = Field(
        default=None, description="Comma-separated host:port list of the Kafka brokers."
    )
    topic: str = Field(default="etcd-bridge", description="Topic the events are produced to.")
