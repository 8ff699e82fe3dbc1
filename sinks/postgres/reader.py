"""What the ``postgres`` sink holds, read back without changing anything (``bridge.reader``).

- ``changelog`` mode: ``ChangelogReader``, a ``StreamReader`` of the pipeline's rows in
  position order, by keyset pagination on the primary key (``WHERE pipeline = ... AND
  (revision, index) > (last seen) ORDER BY revision, index LIMIT n``): each page is one index
  range scan, however deep into the table it starts, and holds at most ``page_rows`` rows.
  Each page is its own short read-only transaction, so a long read holds no snapshot that
  keeps vacuum from a busy table; positions only grow, so pages read beside a live bridge
  still follow one another, and the iteration ends with the first page that is not full
  (what the table held then). Every event is rebuilt from the ``bytea`` columns exactly (the
  ``*_text`` and ``*_json`` views are for SQL, not for this); what the changelog does not
  store (``Event.prev_mod_revision`` and the like, outside equality) stays at its default.
- ``mirror`` mode: ``MirrorReader``, a ``StateReader``: the revision is the positions
  table's ``consistent_revision`` (the mirror is etcd's state at that revision, see
  ``sinks.postgres.sink``) and the items are the pipeline's rows in key order, keyset-paged on
  the primary key (``key`` is ``bytea``, so ``ORDER BY key`` is byte order, as etcd orders
  keys). Both are read in one ``REPEATABLE READ`` transaction, opened at the first call and
  kept until ``close()``, so that the items are the state at exactly the revision reported,
  whatever the bridge commits meanwhile.

Read-only: every transaction is ``READ ONLY`` (psycopg starts each with ``BEGIN ... READ
ONLY``; statements outside one are never run), the reader creates nothing, and a table that
does not exist holds nothing. It needs ``SELECT`` on the mode's tables and nothing else.

Connections and errors are the sink's own (``PostgresSink``): the same libpq options, the
same deadline on every reply (``BRIDGE_POSTGRES__TIMEOUT``), the same one-line messages
naming the setting to fix (an unreachable server, a refused login, a missing privilege),
never the password.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql
from psycopg.rows import TupleRow

from bridge.events import Event, EventType, Op, Position, SnapshotReason
from bridge.reader import SinkReader, StateReader, StreamReader
from sinks.postgres.schema import Schema, Table
from sinks.postgres.settings import PostgresMode, PostgresSettings
from sinks.postgres.sink import PostgresSink, TimedConnection

PAGE_ROWS = 1000
"""The most rows one page holds: etcd limits a value to its request size (1.5 MiB by default),
so a page of the largest events stays within a few GiB, and one of ordinary ones a few MiB."""
_BEFORE_EVERY_POSITION = Position(-1, -1)
"""Where a changelog read from the start resumes after: below every position etcd gives."""
_BEFORE_EVERY_KEY = b""
"""Where a mirror read starts after: etcd has no empty key, every key sorts after it."""

_CHANGELOG_COLUMNS = (
    "revision", "index", "type", "op", "key", "value", "prev_value", "mod_revision",
    "create_revision", "version", "lease", "reason", "more",
)  # fmt: skip
"""What an event is rebuilt from, in ``_changelog_event``'s order."""
_MIRROR_COLUMNS = ("key", "value", "mod_revision", "create_revision", "version", "lease")
"""What a key's state is rebuilt from, in ``MirrorReader.items``' order."""


def reader_of(settings: PostgresSettings, *, pipeline: str) -> SinkReader:
    """The reader of what the sink holds in ``settings``' mode for ``pipeline``."""
    if settings.mode is PostgresMode.CHANGELOG:
        return ChangelogReader(settings=settings, pipeline=pipeline)
    return MirrorReader(settings=settings, pipeline=pipeline)


class _Session:
    """One connection of the sink's, in autocommit so that nothing runs outside the
    read-only transactions the readers open (psycopg starts them with ``BEGIN ... READ
    ONLY``)."""

    def __init__(self, settings: PostgresSettings, *, pipeline: str) -> None:
        self.pipeline = pipeline
        self.sink = PostgresSink(settings=settings, pipeline=pipeline)
        """Not opened: it connects and translates errors exactly as the bridge does."""
        self.tables = {table.suffix: table for table in Schema(settings).tables}
        self._connection: TimedConnection | None = None

    def connection(self) -> TimedConnection:
        if self._connection is None:
            connection = self.sink.connect()
            connection.autocommit = True
            connection.read_only = True
            self._connection = connection
        return self._connection

    def fetch(
        self, query: sql.SQL | sql.Composed, params: dict[str, Any], *, doing: str
    ) -> list[TupleRow]:
        """The rows of ``query``; the sink's ``SinkError`` for any failure."""
        try:
            return self.connection().execute(query, params).fetchall()
        except psycopg.Error as error:
            self.close()
            raise self.sink.translate(error, doing=doing) from error

    def exists(self, table: Table) -> bool:
        """Whether ``table`` exists (the reader never creates it)."""
        found = self.fetch(
            sql.SQL("SELECT to_regclass(%(table)s) IS NOT NULL"),
            {"table": table.qualified},
            doing=f"looking for {table.qualified}",
        )
        return bool(found[0][0])

    @contextlib.contextmanager
    def transaction(self, *, isolation: IsolationLevel | None = None) -> Iterator[None]:
        """A read-only transaction (at ``isolation``; None: the server's default); the
        sink's ``SinkError`` when it cannot begin or end."""
        connection = self.connection()
        connection.isolation_level = isolation
        try:
            with connection.transaction():
                yield
        except psycopg.Error as error:
            self.close()
            raise self.sink.translate(error, doing="reading in a transaction") from error

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class ChangelogReader(StreamReader):
    """The pipeline's events in the changelog, in position order; see the module docstring."""

    def __init__(
        self, *, settings: PostgresSettings, pipeline: str, page_rows: int = PAGE_ROWS
    ) -> None:
        self._session = _Session(settings, pipeline=pipeline)
        self._table = self._session.tables["changelog"]
        self.page_rows = page_rows
        self._page = sql.SQL(
            "SELECT {columns} FROM {table} WHERE pipeline = %(pipeline)s "
            "AND (revision, index) > (%(revision)s, %(index)s) "
            "ORDER BY revision, index LIMIT %(limit)s"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, _CHANGELOG_COLUMNS)),
            table=self._table.ident,
        )

    def events(self, *, after: Position | None = None) -> Iterator[Event]:
        """Every event of the pipeline past ``after``, a page (one read-only transaction) at a
        time."""
        session = self._session
        with session.transaction():
            if not session.exists(self._table):
                return
        last = _BEFORE_EVERY_POSITION if after is None else after
        while True:
            with session.transaction():
                rows = session.fetch(
                    self._page,
                    {
                        "pipeline": session.pipeline,
                        "revision": last.revision,
                        "index": last.index,
                        "limit": self.page_rows,
                    },
                    doing=f"reading {self._table.qualified} past {last}",
                )
            for row in rows:
                event = _changelog_event(row)
                yield event
                last = event.position
            if len(rows) < self.page_rows:
                return

    def close(self) -> None:
        self._session.close()


class MirrorReader(StateReader):
    """The mirror's state and its revision, from one snapshot of the database; see the
    module docstring."""

    def __init__(
        self, *, settings: PostgresSettings, pipeline: str, page_rows: int = PAGE_ROWS
    ) -> None:
        self._session = _Session(settings, pipeline=pipeline)
        self._mirror = self._session.tables["mirror"]
        self._positions = self._session.tables["positions"]
        self.page_rows = page_rows
        self._snapshot = contextlib.ExitStack()
        self._in_snapshot = False
        self._revision: int | None = None
        self._page = sql.SQL(
            "SELECT {columns} FROM {table} WHERE pipeline = %(pipeline)s AND key > %(after)s "
            "ORDER BY key LIMIT %(limit)s"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, _MIRROR_COLUMNS)),
            table=self._mirror.ident,
        )
        self._read_revision = sql.SQL(
            "SELECT consistent_revision FROM {} WHERE pipeline = %(pipeline)s AND mode = %(mode)s"
        ).format(self._positions.ident)

    def revision(self) -> int:
        """The revision the mirror's state is at, in this reader's snapshot (0: none yet)."""
        if self._revision is None:
            self._enter_snapshot()
            session = self._session
            found: list[TupleRow] = []
            if session.exists(self._positions):
                found = session.fetch(
                    self._read_revision,
                    {"pipeline": session.pipeline, "mode": PostgresMode.MIRROR.value},
                    doing=f"reading the position in {self._positions.qualified}",
                )
            self._revision = int(found[0][0]) if found and found[0][0] is not None else 0
        return self._revision

    def items(self) -> Iterator[Event]:
        """One ``snapshot`` event per key at ``revision()``, in key order, numbered from 1 as a
        snapshot's entries are."""
        revision = self.revision()
        session = self._session
        if not session.exists(self._mirror):
            return
        last, index = _BEFORE_EVERY_KEY, 0
        while True:
            rows = session.fetch(
                self._page,
                {"pipeline": session.pipeline, "after": last, "limit": self.page_rows},
                doing=f"reading {self._mirror.qualified}",
            )
            for key, value, mod_revision, create_revision, version, lease in rows:
                index += 1
                last = key
                yield Event(
                    revision=revision,
                    index=index,
                    type=EventType.PUT,
                    op=Op.SNAPSHOT,
                    key=key,
                    value=value,
                    mod_revision=mod_revision,
                    create_revision=create_revision,
                    version=version,
                    lease=lease,
                )
            if len(rows) < self.page_rows:
                return

    def _enter_snapshot(self) -> None:
        """Open the reader's one ``REPEATABLE READ`` read-only transaction, once."""
        if not self._in_snapshot:
            transaction = self._session.transaction(isolation=IsolationLevel.REPEATABLE_READ)
            self._snapshot.enter_context(transaction)
            self._in_snapshot = True

    def close(self) -> None:
        """End the snapshot and drop the connection; idempotent."""
        with contextlib.suppress(psycopg.Error):  # a broken connection rolls back anyway
            self._snapshot.close()
        self._in_snapshot = False
        self._revision = None
        self._session.close()


def _changelog_event(row: TupleRow) -> Event:
    """The event a changelog row stores (``_CHANGELOG_COLUMNS``), bytes exact."""
    (
        revision, index, kind, op, key, value, prev_value, mod_revision, create_revision,
        version, lease, reason, more,
    ) = row  # fmt: skip
    return Event(
        revision=revision,
        index=index,
        type=EventType(kind),
        op=Op(op),
        key=key,
        value=value,
        prev_value=prev_value,
        mod_revision=mod_revision,
        create_revision=create_revision,
        version=version,
        lease=lease,
        reason=None if reason is None else SnapshotReason(reason),
        more=more,
    )
