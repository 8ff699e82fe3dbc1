"""Batching and buffering between etcd and each sink (``BRIDGE_PUMP__*``)."""

from typing import Final

from pydantic import BaseModel, Field

LOG_FED_QUEUE: Final = {"queue_depth": 1, "queue_bytes": 1024 * 1024}
"""The queue bounds of a sink that reads the local log, where the user set none."""


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
        "watch response) before the watch is slowed down. With the local log on: 1 unless set.",
    )
    queue_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Most bytes of keys and values (previous values included) buffered per "
        "sink before the watch is slowed down (soft: the buffer always takes one chunk). "
        "Large values reach it before queue_depth does. With the local log on: 1 MiB unless "
        "set.",
    )
    shutdown_timeout: float = Field(
        default=10.0, gt=0, description="On SIGTERM, seconds allowed to drain and flush."
    )

    def reading_the_log(self) -> "PumpSettings":
        """These bounds for a sink that reads the local log (``LOG_FED_QUEUE`` where the user
        set no queue bound). The log already holds whatever the sink has not taken, so a deep
        queue there only adds memory: in four interleaved pairs of ``bench.fanout`` (three
        sinks reading the log in one process), 8 MiB queues peaked at 231-246 MiB, 1 MiB
        queues at 218-233, and the fan-out replayed faster in each pair (0.59-0.68 -> 0.67-0.79
        of the slowest sink alone; BENCHMARKS.md). One batch in the queue still lets the log be
        read while the sink writes."""
        unset = {
            name: bound
            for name, bound in LOG_FED_QUEUE.items()
            if name not in self.model_fields_set
        }
        return self.model_copy(update=unset)
