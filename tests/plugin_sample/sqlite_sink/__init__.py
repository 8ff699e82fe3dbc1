"""The ``sqlite`` sink, a sample plug-in: events as rows of a SQLite table, exactly once.

It lives outside etcd-bridge's code and is found like any third-party sink, through its
``etcd_bridge.sinks`` entry point (this directory's pyproject.toml); it reads only its own
``BRIDGE_SQLITE__*`` variables (``SqliteSettings``).

Exactly once comes from the table being its own checkpoint: ``flush`` inserts the buffered
batch in one transaction, and ``open`` returns the event of the row with the highest position,
so after a ``kill -9`` the tail is the last committed batch's last event and the pump rewrites
only what was lost. ``write`` only buffers (and refuses a value over ``max_value_bytes``), so
that a flush is the one place that touches the database.
"""

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt

from bridge.encoding import printable_key
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event
from bridge.sink import Sink, SinkContext

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    key BLOB NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (revision, idx)
) WITHOUT ROWID
"""


class SqliteSettings(BaseModel):
    """Where the sqlite sink writes (``BRIDGE_SQLITE__*``)."""

    path: Path = Field(description="The SQLite database file; the table is 'events'.")
    max_value_bytes: PositiveInt = Field(
        default=1024 * 1024,
        description="A larger value (or previous value) stops the bridge naming its key.",
    )
    timeout: PositiveFloat = Field(
        default=5.0, description="How long a flush waits for a lock held by a reader, seconds."
    )


class SqliteSink(Sink):
    """Rows ``(revision, idx, key, event)``; the last row is the durable position."""

    name = "sqlite"
    settings_model = SqliteSettings

    def __init__(self, settings: SqliteSettings) -> None:
        self._settings = settings
        self._connection: sqlite3.Connection | None = None
        self._pending: list[Event] = []

    @classmethod
    def from_settings(cls, settings: SqliteSettings, *, context: SinkContext) -> Self:
        return cls(settings)

    def open(self) -> Event | None:
        self.close()
        path = self._settings.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=self._settings.timeout, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(_SCHEMA)
            row = connection.execute(
                "SELECT event FROM events ORDER BY revision DESC, idx DESC LIMIT 1"
            ).fetchone()
        except (OSError, sqlite3.OperationalError) as error:
            raise SinkUnavailableError(f"sqlite: cannot open {path}: {error}") from None
        self._connection = connection
        return None if row is None else Event.from_json(row[0])

    def write(self, batch: Sequence[Event]) -> None:
        limit = self._settings.max_value_bytes
        for event in batch:
            if max(len(event.value or b""), len(event.prev_value or b"")) > limit:
                raise SinkRejectedError(
                    f"sqlite: the value of key {printable_key(event.key)!r} at revision "
                    f"{event.revision} is over BRIDGE_SQLITE__MAX_VALUE_BYTES ({limit})",
                    key=event.key,
                    revision=event.revision,
                    position=event.position,
                )
            self._pending.append(event)

    def flush(self) -> None:
        connection = self._connection
        if connection is None:
            raise SinkUnavailableError("sqlite: the sink is not open")
        rows = [(e.revision, e.index, e.key, e.to_json()) for e in self._pending]
        try:
            connection.execute("BEGIN IMMEDIATE")  # one transaction: the whole batch, or none
            connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(error, sqlite3.IntegrityError):
                raise SinkRejectedError(f"sqlite: a position is there already: {error}") from None
            raise SinkUnavailableError(f"sqlite: flush failed: {error}") from None
        self._pending.clear()

    def close(self) -> None:
        self._pending.clear()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
