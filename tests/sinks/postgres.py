"""The PostgreSQL sink's destination: changelog tables of their own on a PostgreSQL 15.

Each destination has a ``table_prefix`` of its own (made from its tag), so that a reader
needs no pipeline name: everything in its changelog is one bridge's. Read back with SQL
(``tests.fixtures.postgres.changelog_events``), in primary-key order, which is the order a
consumer reads; a row of another pipeline is a flaw. Its tail is the changelog's last row.
The server is Debian's, started as the ``postgres`` user (``LocalPostgres``) with its data
in a directory of its own under /tmp (PostgreSQL cannot enter root's temporary
directories), removed when the process that made it exits; it keeps its data across a
restart.

A benchmark counts the rows past the last one it saw (a range of the primary key, once the
pipeline is known from the first row), or follows them by polling every ``POLL_SECONDS``.
Its bare client (``PostgresBareClient``) is psycopg's ``COPY`` of the bridge's rows into a
table like the bridge's.
"""

import atexit
import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psycopg
import psycopg.errors
from psycopg import sql

from bridge.events import Event
from sinks.postgres.schema import CHANGELOG_COLUMNS
from tests.fixtures.postgres import Connection, LocalPostgres, changelog_events, changelog_tail
from tests.sinks.base import Destination, Flaw, Progress, Seen, SinkServer

POLL_SECONDS = 0.002
PREFIX_CHARACTERS = 40
"""Of a table prefix made from a tag; the sink allows 50 (63 bytes with its longest suffix)."""


def table_prefix(tag: str) -> str:
    """A table prefix of ``tag``'s own: lowercase, ``_`` for anything else, a hash of the tag
    when it had to be shortened."""
    plain = re.sub(r"[^a-z0-9]+", "_", tag.lower()).strip("_")
    if len(plain) > PREFIX_CHARACTERS:
        digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
        plain = f"{plain[: PREFIX_CHARACTERS - 9]}_{digest}"
    return f"t_{plain}_"


@dataclass
class PostgresDestination(Destination):
    name = "postgres"
    tail_creates = False
    restartable = True
    impatient = {"timeout": "3", "connect_timeout": "3"}
    bare_client = "psycopg COPY"

    dsn: str
    table_prefix: str

    @classmethod
    def server(cls, workdir: Path, *, persistent: bool) -> LocalPostgres:
        """A server of its own, on disk whatever ``persistent`` says."""
        server = LocalPostgres(workdir=workdir)
        atexit.register(server.remove)
        return server

    @classmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        assert isinstance(server, LocalPostgres)
        return cls(dsn=server.dsn("postgres"), table_prefix=table_prefix(tag))

    def settings(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "table_prefix": self.table_prefix, "mode": "changelog"}

    def connect(self) -> Connection:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def streams(self, *, pipeline: str, flaw: Flaw) -> dict[str, list[Event]]:
        with self.connect() as connection:
            try:
                events = changelog_events(
                    connection, pipeline=pipeline, table_prefix=self.table_prefix
                )
            except psycopg.errors.UndefinedTable:
                return {"postgres": []}
            others = connection.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE pipeline <> %s").format(self._changelog),
                (pipeline,),
            ).fetchone()
        if others and others[0]:
            flaw(f"{others[0]} rows of another pipeline than {pipeline!r}")
        return {"postgres": events}

    @property
    def _changelog(self) -> sql.Identifier:
        return sql.Identifier(f"{self.table_prefix}changelog")

    def tail(self, *, pipeline: str, prefix: bytes) -> Event | None:
        with self.connect() as connection:
            try:
                return changelog_tail(connection, pipeline=pipeline, table_prefix=self.table_prefix)
            except psycopg.errors.UndefinedTable:
                return None

    def reader(self) -> "PostgresReader":
        return PostgresReader(self.connect(), table=self._changelog)

    def bare(self, source: Self, *, pipeline: str, from_revision: int) -> "PostgresBareClient":
        return PostgresBareClient(
            source=source, target=self, pipeline=pipeline, from_revision=from_revision
        )


Row = tuple[Any, ...]
"""A changelog row in ``CHANGELOG_COLUMNS`` order, JSON views as text."""
_JSON_COLUMNS = frozenset({"value_json", "prev_value_json"})


class PostgresBareClient:
    """psycopg alone: the source changelog's rows of the pipeline, read with a server-side
    cursor in position order (JSON views as text, as the sink sends them), copied into a
    table created ``LIKE`` the source's (its keys and indexes included) by one ``COPY`` per
    batch, each batch its own transaction, as the sink commits each of its batches."""

    def __init__(
        self,
        *,
        source: PostgresDestination,
        target: PostgresDestination,
        pipeline: str,
        from_revision: int,
    ) -> None:
        self._source = source
        self._pipeline = pipeline
        self._from_revision = from_revision
        self._connection = target.connect()
        self._connection.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                target._changelog, source._changelog
            )
        )
        columns = sql.SQL(", ").join(map(sql.Identifier, CHANGELOG_COLUMNS))
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(target._changelog, columns)

    def batches(self, size: int) -> Iterator[Sequence[Row]]:
        selected = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(column))
            if column in _JSON_COLUMNS
            else sql.Identifier(column)
            for column in CHANGELOG_COLUMNS
        )
        query = sql.SQL(
            "SELECT {} FROM {} WHERE pipeline = %s AND revision >= %s ORDER BY revision, index"
        ).format(selected, self._source._changelog)
        with (
            psycopg.connect(self._source.dsn, connect_timeout=10) as reader,
            reader.cursor(name="bare-copy") as cursor,
        ):
            cursor.itersize = size
            cursor.execute(query, (self._pipeline, self._from_revision))
            while rows := cursor.fetchmany(size):
                yield rows

    def write(self, batch: Sequence[Row]) -> None:
        with (
            self._connection.transaction(),
            self._connection.cursor() as cursor,
            cursor.copy(self._copy) as copy,
        ):
            for row in batch:
                copy.write_row(row)

    def close(self) -> None:
        self._connection.close()


class PostgresReader:
    """The changelog past the last row seen: counted, or followed by polling."""

    def __init__(self, connection: Connection, *, table: sql.Identifier) -> None:
        self._connection = connection
        self._table = table
        self._pipeline: str | None = None
        self._after = (-1, -1)
        self._progress = Progress()

    def _new_rows(self, *, limit: int) -> list[tuple[int, int, str]]:
        """(revision, index, op) of the rows past the last one seen, in order, at most
        ``limit``; none while the table does not exist."""
        try:
            if self._pipeline is None:
                first = self._connection.execute(
                    sql.SQL("SELECT pipeline FROM {} LIMIT 1").format(self._table)
                ).fetchone()
                if first is None:
                    return []
                self._pipeline = str(first[0])
            rows = self._connection.execute(
                sql.SQL(
                    "SELECT revision, index, op FROM {} WHERE pipeline = %s "
                    "AND (revision, index) > (%s, %s) ORDER BY revision, index LIMIT %s"
                ).format(self._table),
                (self._pipeline, *self._after, limit),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        found = [(int(r), int(i), str(op)) for r, i, op in rows]  # type: ignore[call-overload]
        if found:
            self._after = found[-1][:2]
        return found

    def progress(self) -> Progress:
        while rows := self._new_rows(limit=100_000):
            self._progress.records += len(rows)
            self._progress.last_revision, _, self._progress.last_op = rows[-1]
        return Progress(**vars(self._progress))

    def follow(self, *, timeout: float) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self._new_rows(limit=20_000)
            if rows:
                return [(revision, op) for revision, _, op in rows]
            if time.monotonic() >= deadline:
                return []
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        self._connection.close()
