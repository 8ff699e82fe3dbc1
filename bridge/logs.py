"""Log lines: one JSON object per line for machines, or readable text for a terminal.

The bridge logs state changes (connected, snapshot start and end, watching from R, resync,
sink reopened), never one line per event at INFO. Fields passed as ``extra=`` become JSON
keys (or ``key=value`` in text); ``error_fields`` makes those of an error, so that every line
about an error carries the same fields. Secrets never reach a log line because settings hold
them as ``SecretStr`` and no code logs a settings object whole.
"""

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.errors import BridgeError
from config.logging import LogFormat, LogSettings

_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)

_CAUSE_CHARACTERS = 200
"""Most characters of a cause's first line in a log line: a gRPC error's text is long."""


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES}


def error_fields(error: BaseException) -> dict[str, object]:
    """The ``extra=`` of a line about ``error``: its class (``error``), its one-line message
    (``detail``), its context (``sink``, ``key``, ``revision``, ``endpoint``, where known) and
    the first line of its cause, if any and not already in the message (``cause``), so that a
    JSON reader can filter on them and the operator still reads one line."""
    fields: dict[str, object] = {"error": type(error).__name__, "detail": str(error)}
    if isinstance(error, BridgeError):
        fields.update(error.fields)
    cause = error.__cause__
    if cause is not None and str(cause) not in str(error):  # else the message already says it
        first = next(iter(str(cause).strip().splitlines()), "")
        fields["cause"] = f"{type(cause).__name__}: {first[:_CAUSE_CHARACTERS]}".rstrip(": ")
    return fields


class JsonFormatter(logging.Formatter):
    """``{"time": ..., "level": ..., "logger": ..., "message": ..., **extra}``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    """``12:00:00.123 INFO  message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{moment} {record.levelname:<7} {record.getMessage()} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(settings: LogSettings) -> None:
    """Send the bridge's logs to stderr (stdout may carry the events) in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.value)
