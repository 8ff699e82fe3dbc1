"""Logging (``BRIDGE_LOG__*``)."""

import enum

from pydantic import BaseModel, Field


class LogFormat(enum.StrEnum):
    """``json`` for machines (the default in a container), ``text`` for a terminal."""

    JSON = "json"
    TEXT = "text"


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogSettings(BaseModel):
    """Level and format of the bridge's own log lines (on stderr)."""

    level: LogLevel = Field(default=LogLevel.INFO, description="Least severe level logged.")
    format: LogFormat = Field(default=LogFormat.JSON, description="json or text.")
