"""The ``file`` sink (``BRIDGE_FILE__*``)."""

from pathlib import Path

from pydantic import BaseModel, Field


class FileSettings(BaseModel):
    """Where the file sink appends its JSON lines, and how durably."""

    path: Path | None = Field(
        default=None, description="File the events are appended to (required by the file sink)."
    )
    fsync: bool = Field(
        default=True,
        description="fsync after every batch, so a power loss (not only a crash) keeps the "
        "position; turn off only for throwaway output.",
    )
