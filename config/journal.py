"""The local durable log between etcd and the sinks (``BRIDGE_JOURNAL__*``, bridge.journal)."""

from pathlib import Path

from pydantic import BaseModel, Field, model_validator


class JournalSettings(BaseModel):
    """Where the log lives, how much disk it may take, and how often it is made durable."""

    path: Path | None = Field(
        default=None,
        description="Directory of the local log: one reader follows etcd into it and every "
        "sink reads it at its own pace (docs/journal.md). Unset: each sink watches etcd itself.",
    )
    max_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1024 * 1024,
        description="Disk budget of the log, bytes. Past it the oldest segment goes, and a "
        "sink still reading it catches up from etcd (a resync if etcd compacted; counted).",
    )
    segment_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        description="Size at which the log starts a new segment file (at the next whole "
        "revision): the unit it is trimmed by.",
    )
    fsync_interval: float = Field(
        default=1.0,
        ge=0,
        description="Seconds between fsyncs of the log (0: after every write). The log is a "
        "cache of etcd's history: what a power loss takes from it is read from etcd again.",
    )

    @model_validator(mode="after")
    def _segments_fit_the_budget(self) -> "JournalSettings":
        if self.segment_bytes * 4 > self.max_bytes:
            raise ValueError(
                "BRIDGE_JOURNAL__SEGMENT_BYTES: at most a quarter of BRIDGE_JOURNAL__MAX_BYTES, "
                "so that trimming one segment frees room"
            )
        return self
