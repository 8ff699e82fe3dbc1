"""High availability: one active instance per pipeline, elected in etcd (``BRIDGE_HA__*``)."""

from pydantic import BaseModel, Field


class HaSettings(BaseModel):
    """The election: a key bound to a lease, held by the active instance."""

    enabled: bool = Field(
        default=False,
        description="Elect one active instance among those with the same BRIDGE_NAME.",
    )
    ttl: int = Field(
        default=10,
        ge=2,
        le=3600,
        description="Lease TTL, seconds: a dead active instance is replaced within about this.",
    )
    key_prefix: str = Field(
        default="/etcd-bridge/leader/",
        description="The election key is this plus BRIDGE_NAME; it must be outside the "
        "watched prefix.",
    )
