"""Batching and buffering between etcd and each sink (``BRIDGE_PUMP__*``)."""

from pydantic import BaseModel, Field


class PumpSettings(BaseModel):
    """Bounds that keep memory flat and batches efficient."""

    batch_events: int = Field(
        default=2000,
        ge=1,
        description="Most events handed to a sink in one batch (soft: a batch takes whole "
        "chunks of up to 2,000 events).",
    )
    batch_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Most bytes of keys and values (previous values included) in one batch "
        "(soft: a batch takes whole chunks).",
    )
    queue_depth: int = Field(
        default=8,
        ge=1,
        description="Events buffered per sink, in batches: the buffer holds up to "
        "queue_depth x batch_events events (and always one chunk: a snapshot page or part of a "
        "watch response) before the watch is slowed down.",
    )
    queue_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Most bytes of keys and values (previous values included) buffered per "
        "sink before the watch is slowed down (soft: the buffer always takes one chunk). "
        "Large values reach it before queue_depth does.",
    )
    shutdown_timeout: float = Field(
        default=10.0, gt=0, description="On SIGTERM, seconds allowed to drain and flush."
    )
