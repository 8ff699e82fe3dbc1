"""Batching and buffering between etcd and each sink (``BRIDGE_PUMP__*``)."""

from pydantic import BaseModel, Field


class PumpSettings(BaseModel):
    """Bounds that keep memory flat and batches efficient."""

    batch_events: int = Field(
        default=2000,
        ge=1,
        description="Most events handed to a sink in one batch (soft: a "
        "revision is never split, so a large transaction may exceed it).",
    )
    batch_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Most encoded bytes in one batch (soft)."
    )
    queue_depth: int = Field(
        default=8,
        ge=1,
        description="Events buffered per sink, in batches: the buffer holds up to "
        "queue_depth x batch_events events (and always one chunk: a snapshot page or part of a "
        "watch response) before the watch is slowed down.",
    )
    shutdown_timeout: float = Field(
        default=10.0, gt=0, description="On SIGTERM, seconds allowed to drain and flush."
    )
