"""The ``postgres`` sink: etcd changes into PostgreSQL, as a changelog or a mirror.

This is the only module that connects to PostgreSQL (psycopg 3). Each flush is one
transaction that (1) locks the pipeline's row of ``<prefix>positions`` (``FOR UPDATE``), (2)
skips every event at or below the position it holds, (3) writes the rest, and (4) saves the
position of the last one, then commits. Data and position are therefore never apart, which
makes the sink exactly once across a ``kill -9`` of the bridge, a lost reply to a commit that
went through (the rewrite skips it) and a second writer of the same pipeline (an old instance
resuming after a pause waits for the lock, then skips what the other committed). The
connection is in autocommit mode and the transaction explicit, so that (1) and ``BEGIN`` go in
one round trip, and (4) and ``COMMIT`` in another: each wait for the server hands the GIL to the
pipeline's reader thread, which may keep it for a switch interval (5 ms) before the sink runs
again, so a flush costs about that per round trip when the reader is busy.

Modes (docs/postgres.md has the consumer's view):

- ``changelog``: one row per event, written with ``COPY`` in binary format
  (``sinks.postgres.rows`` says why).
- ``mirror``: one row per key. A revision is applied whole at its last change (the one whose
  ``Event.more`` is unset) and the changes of several revisions in one transaction are reduced
  to the last per key first (nothing between them is visible to readers anyway); the changes
  of a revision that continues past the transaction wait in ``<prefix>staging``, with the
  position, and are applied from there by the transaction that brings its last change. A
  snapshot is staged the same way and replaces the pipeline's rows at ``snapshot_end``, in
  that marker's transaction: readers see the old mirror or the new one, never a mix, and a
  resync drops the keys deleted during the gap. Readers therefore always see etcd's state at
  one revision, which ``<prefix>positions.consistent_revision`` names.

One pipeline, one writer: ``open`` takes a session-level advisory lock on the pipeline's
rows (``sinks.postgres.owner``), so that a second bridge of the same pipeline started without
HA is refused naming the first; PostgreSQL releases it with the session.

Timeouts: libpq has none for a server that accepts a query and then stops answering (a paused
VM, SIGSTOP: its kernel still acknowledges TCP), so ``TimedConnection`` bounds every wait of
psycopg for the server by ``BRIDGE_POSTGRES__TIMEOUT``; the server's own ``statement_timeout``
and ``idle_in_transaction_session_timeout`` end what a vanished client left behind.

Errors: an unreachable, restarting, read-only, full or silent server becomes
``SinkUnavailableError`` (the pump reopens and rewrites from the durable tail); a wrong
password, a missing privilege, a table of another shape become ``SinkRejectedError`` with one
line naming the role, privilege, table or setting. No message holds the DSN's password: they
show ``PostgresSettings.safe_dsn``.
"""

import logging
import re
from collections.abc import Iterable, Sequence
from typing import LiteralString, Self

import psycopg
import psycopg.errors
from psycopg.abc import RV, PQGen
from psycopg.rows import TupleRow

from bridge.encoding import printable_key
from bridge.errors import SinkError, SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Op, past
from bridge.ownership import Claimant, Owner
from bridge.reader import SinkReader
from bridge.sink import Sink, SinkContext
from sinks.postgres import rows
from sinks.postgres.owner import KEEPALIVES, PipelineLock, session_name
from sinks.postgres.schema import Schema, Table
from sinks.postgres.settings import PostgresMode, PostgresSettings

log = logging.getLogger(__name__)

_TRANSIENT_CLASSES = ("08", "53", "57", "58")
"""SQLSTATE classes worth a retry: connection, resources (disk full, out of memory, too many
connections), operator intervention (shutdown, canceled), system errors."""
_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03", "25006"})
"""Serialization failure, deadlock, lock not available, read-only transaction (a standby, or a
primary being demoted)."""
_LOGIN_REFUSALS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "does not exist",
    "permission denied for database",
)
_TLS_REFUSALS = (
    "certificate verify failed",
    "server does not support SSL",
    "root certificate file",
    "certificate file",
)
_WAIT_INTERVAL = 0.1
"""How often psycopg wakes up while waiting (its own default), seconds."""


class TimedConnection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose every wait for the server ends after ``reply_timeout``.

    psycopg runs each exchange with the server as a generator and waits for the socket in
    ``wait``; a deadline there is the one place that bounds them all (statements, COPY,
    commit). It raises psycopg's ``OperationalError`` subclass for timeouts, after which the
    connection is mid-exchange and must be closed.
    """

    reply_timeout: float | None = None

    def wait(
        self, gen: PQGen[RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None
    ) -> RV:
        if timeout is None:
            timeout = self.reply_timeout
        return super().wait(gen, interval=interval, timeout=timeout)


def _one_line(error: psycopg.Error) -> str:
    """PostgreSQL's primary message, or libpq's text on one line."""
    primary = error.diag.message_primary
    text = primary if primary else str(error)
    return re.sub(r"\s+", " ", text.replace("FATAL:", "")).strip().rstrip(".")


def _consistent_revision(events: Sequence[Event]) -> int | None:
    """The last revision that ``events`` complete (a change without ``more``, or a snapshot's
    end), or None when they complete none."""
    for event in reversed(events):
        if event.op is Op.SNAPSHOT_END or (event.op in _CHANGES and not event.more):
            return event.revision
    return None


_CHANGES = frozenset({Op.CREATE, Op.UPDATE, Op.DELETE})


class _Writer:
    """What one mode writes in a flush's transaction, after the position was locked."""

    def __init__(self, schema: Schema, *, pipeline: str) -> None:
        self.schema = schema
        self.pipeline = pipeline

    def write(
        self, cursor: psycopg.Cursor[TupleRow], events: Sequence[Event], *, held: Event | None
    ) -> None:
        raise NotImplementedError

    def _copy(self, cursor: psycopg.Cursor[TupleRow], rows: Iterable[Sequence[object]]) -> None:
        """``rows`` into the mode's ``COPY`` table, in binary format (``sinks.postgres.rows``
        says why), each column as the type the schema gives it."""
        with cursor.copy(self.schema.copy) as copy:
            copy.set_types(self.schema.copy_types)
            for row in rows:
                copy.write_row(row)


class _ChangelogWriter(_Writer):
    """One row per event, by COPY."""

    def write(
        self, cursor: psycopg.Cursor[TupleRow], events: Sequence[Event], *, held: Event | None
    ) -> None:
        self._copy(cursor, (rows.changelog_row(self.pipeline, event) for event in events))


class _MirrorWriter(_Writer):
    """One row per key, whole revisions at a time; see the module docstring."""

    def write(
        self, cursor: psycopg.Cursor[TupleRow], events: Sequence[Event], *, held: Event | None
    ) -> None:
        # A tail inside a revision means its first changes wait in the staging table.
        revision_staged = held is not None and held.op in _CHANGES and held.more
        applies: dict[bytes, Event] = {}  # each key's last change in complete revisions
        staged: list[Event] = []  # snapshot entries, or the changes of an unfinished revision
        for event in events:
            if event.op is Op.SNAPSHOT_BEGIN:
                # A resync replaces whatever an earlier snapshot or revision left staged.
                self._apply(cursor, applies)
                applies, staged, revision_staged = {}, [], False
                cursor.execute(self.schema.clear_staging, self._named)
            elif event.op is Op.SNAPSHOT_END:
                self._stage(cursor, staged)
                staged = []
                cursor.execute(self.schema.delete_unstaged, self._named)
                self._unstage(cursor)
            elif event.op is Op.SNAPSHOT or event.more:
                staged.append(event)
            else:  # the last change of its revision: the whole revision lands now
                if revision_staged:  # its first part, staged by earlier transactions
                    cursor.execute(self.schema.delete_staged, self._named)
                    self._unstage(cursor)
                    revision_staged = False
                for change in staged:
                    applies[change.key] = change
                applies[event.key] = event
                staged = []
        self._apply(cursor, applies)
        self._stage(cursor, staged)

    @property
    def _named(self) -> dict[str, str]:
        return {"pipeline": self.pipeline}

    def _apply(self, cursor: psycopg.Cursor[TupleRow], applies: dict[bytes, Event]) -> None:
        """Set each key to its latest state: delete the deleted ones, upsert the others."""
        deleted = [key for key, event in applies.items() if event.op is Op.DELETE]
        if deleted:
            cursor.execute(self.schema.delete_keys, (self.pipeline, deleted))
        kept = [rows.state_row(event) for event in applies.values() if event.op is not Op.DELETE]
        if kept:
            cursor.execute(self.schema.upsert_rows, (self.pipeline, *rows.columns(kept)))

    def _stage(self, cursor: psycopg.Cursor[TupleRow], staged: list[Event]) -> None:
        if staged:
            self._copy(cursor, ((self.pipeline, *rows.state_row(event)) for event in staged))

    def _unstage(self, cursor: psycopg.Cursor[TupleRow]) -> None:
        """Upsert what the staging table holds into the mirror, then empty it."""
        cursor.execute(self.schema.upsert_staged, self._named)
        cursor.execute(self.schema.clear_staging, self._named)


class PostgresSink(Sink):
    """Events into PostgreSQL, one transaction per flush; see the module docstring."""

    name = "postgres"
    settings_model = PostgresSettings

    def __init__(
        self, *, settings: PostgresSettings, pipeline: str, claimant: Claimant | None = None
    ) -> None:
        """``claimant``: who this instance is and whether HA fences it, for the pipeline's
        lock (``sinks.postgres.owner``; default: this process, without HA)."""
        self._settings = settings
        self._pipeline = pipeline
        self._schema = Schema(settings)
        self._claimant = claimant or Claimant(Owner.this_process(pipeline), ha=False)
        self._lock = PipelineLock(
            claimant=self._claimant,
            positions=self._schema.tables[-1].qualified,
            mode=settings.mode.value,
            where=self._where,
        )
        writer = _ChangelogWriter if settings.mode is PostgresMode.CHANGELOG else _MirrorWriter
        self._writer = writer(self._schema, pipeline=pipeline)
        self._begin_and_lock = self._schema.begin_and_lock(pipeline)
        self._connection: TimedConnection | None = None
        self._pending: list[Event] = []

    @classmethod
    def from_settings(cls, settings: PostgresSettings, *, context: SinkContext) -> Self:
        claimant = Claimant(Owner.this_process(context.pipeline), ha=context.ha)
        return cls(settings=settings, pipeline=context.pipeline, claimant=claimant)

    @classmethod
    def reader(cls, settings: PostgresSettings, *, context: SinkContext) -> SinkReader:
        """What the sink holds, read back read-only: a stream of the changelog, or the mirror's
        state (``sinks.postgres.reader``)."""
        from sinks.postgres.reader import reader_of  # it builds on this module

        return reader_of(settings, pipeline=context.pipeline)

    @property
    def mode(self) -> PostgresMode:
        return self._settings.mode

    @property
    def _where(self) -> str:
        return f"postgres at {self._settings.safe_dsn}"

    @property
    def _position_key(self) -> dict[str, str]:
        return {"pipeline": self._pipeline, "mode": self.mode.value}

    def open(self) -> Event | None:
        """Connect, create what is missing, check the tables and privileges, claim the
        pipeline's lock (``sinks.postgres.owner``), read the tail."""
        self.close()
        connection = self.connect(name=session_name(self._claimant.owner))
        self._connection = connection
        try:
            self._prepare(connection)
            self._lock.claim(connection)
            row = connection.execute(self._schema.read_position, self._position_key).fetchone()
        except psycopg.Error as error:
            self.close()
            raise self.translate(error, doing="opening the sink") from error
        except SinkError:
            self.close()
            raise
        tail = None if row is None or row[0] is None else Event.from_json(row[0])
        log.info(
            "postgres sink ready",
            extra={
                "dsn": self._settings.safe_dsn,
                "mode": self.mode.value,
                "position": None if tail is None else str(tail.position),
            },
        )
        return tail

    def peek(self) -> Event | None:
        """The tail, read without claiming the pipeline's lock or creating anything: beside a
        running bridge too."""
        connection = self.connect()
        try:
            positions = self._schema.tables[-1].qualified
            if _ask(connection, "SELECT to_regclass(%s)", positions) is None:
                return None
            row = connection.execute(self._schema.read_position, self._position_key).fetchone()
        except psycopg.Error as error:
            raise self.translate(error, doing="reading the position") from error
        finally:
            connection.close()
        return None if row is None or row[0] is None else Event.from_json(row[0])

    def write(self, batch: Sequence[Event]) -> None:
        """Buffer: the whole batch is written by ``flush``, in one transaction."""
        self._pending.extend(batch)

    def flush(self) -> None:
        """One transaction: lock the position, skip what it covers, write, save, commit."""
        if not self._pending:
            return
        connection = self._connection
        if connection is None:
            raise SinkUnavailableError("postgres: the sink is not open")
        pending, self._pending = self._pending, []
        try:
            written = self._commit(connection, pending)
        except psycopg.Error as error:
            self.close()
            first, last = pending[0], pending[-1]
            doing = (
                f"writing {first.position}..{last.position} (first key "
                f"{printable_key(first.key)!r}) to {self._schema.tables[0].qualified}"
            )
            raise self.translate(error, doing=doing) from error
        if written < len(pending):
            log.warning(
                "postgres sink skipped events it already held",
                extra={"skipped": len(pending) - written, "last": str(pending[-1].position)},
            )

    def close(self) -> None:
        """Drop the connection; an open transaction is rolled back by the server."""
        self._pending.clear()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def connect(self, *, name: str | None = None) -> TimedConnection:
        """A new connection with the sink's DSN, TLS and timeouts: the sink's, and its
        reader's (``sinks.postgres.reader``); ``name``: the session's application name
        (default ``etcd-bridge:<pipeline>``; the DSN's wins)."""
        own = self._settings
        name = name or f"etcd-bridge:{self._pipeline}"
        try:
            connection = TimedConnection.connect(
                own.dsn.get_secret_value(),
                autocommit=True,
                **own.connection_options(application_name=name),
            )
        except psycopg.Error as error:
            raise self.translate(error, doing="connecting") from error
        connection.reply_timeout = own.timeout
        connection.adapters.register_dumper(None, rows.JsonbText)
        return connection

    def _prepare(self, connection: TimedConnection) -> None:
        """Session timeouts and keepalives, then schema and tables (created if missing, under
        an advisory lock so that two bridges starting together do not race), their columns,
        the privileges the mode needs, and the pipeline's position row."""
        milliseconds = str(int(self._settings.timeout * 1000))
        connection.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false), "
            "set_config('tcp_keepalives_idle', %s, false), "
            "set_config('tcp_keepalives_interval', %s, false), "
            "set_config('tcp_keepalives_count', %s, false), "
            "set_config('tcp_user_timeout', %s, false)",
            (
                milliseconds,
                milliseconds,
                KEEPALIVES["tcp_keepalives_idle"],
                KEEPALIVES["tcp_keepalives_interval"],
                KEEPALIVES["tcp_keepalives_count"],
                KEEPALIVES["tcp_user_timeout"],
            ),
        )
        schema = self._schema
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema.name,))
            self._create_missing(connection)
        for table in schema.tables:
            self._check_columns(connection, table)
        missing = [
            f"{privilege} on {table.qualified}"
            for table in schema.tables
            for privilege in table.privileges
            if not _ask(
                connection, "SELECT has_table_privilege(%s, %s)", table.qualified, privilege
            )
        ]
        if missing:
            role = _ask(connection, "SELECT current_user")
            raise SinkRejectedError(
                f"{self._where}: role {role!r} lacks {', '.join(missing)}; grant it "
                f"(GRANT {missing[0].replace(' on ', ' ON ')} TO {role}; docs/postgres.md lists "
                "what each mode needs) or use another role in BRIDGE_POSTGRES__DSN"
            )
        connection.execute(schema.add_position, self._position_key)

    def _create_missing(self, connection: TimedConnection) -> None:
        schema = self._schema
        role = _ask(connection, "SELECT current_user")
        if not _ask(
            connection, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", schema.name
        ):
            if not _ask(connection, "SELECT has_database_privilege(current_database(), 'CREATE')"):
                raise SinkRejectedError(
                    f"{self._where}: schema {schema.name!r} does not exist and role {role!r} "
                    "may not create it (CREATE on the database); create it, or set "
                    "BRIDGE_POSTGRES__SCHEMA_NAME to an existing schema"
                )
            connection.execute(schema.create_schema)
        elif not _ask(connection, "SELECT has_schema_privilege(%s, 'USAGE')", schema.name):
            raise SinkRejectedError(
                f"{self._where}: role {role!r} lacks USAGE on schema {schema.name!r}; "
                f"GRANT USAGE ON SCHEMA {schema.name} TO {role}, or set "
                "BRIDGE_POSTGRES__SCHEMA_NAME"
            )
        missing = [
            table
            for table in schema.tables
            if _ask(connection, "SELECT to_regclass(%s)", table.qualified) is None
        ]
        if missing and not _ask(
            connection, "SELECT has_schema_privilege(%s, 'CREATE')", schema.name
        ):
            raise SinkRejectedError(
                f"{self._where}: table {missing[0].qualified} does not exist and role {role!r} "
                f"may not create it (CREATE on schema {schema.name}); create the tables as "
                "docs/postgres.md shows, or grant CREATE"
            )
        for table in missing:
            connection.execute(table.ddl)

    def _check_columns(self, connection: TimedConnection, table: Table) -> None:
        """Every column the sink uses is there, and those it writes by binary ``COPY`` have
        exactly the type it sends (a table a DBA created with another type would refuse
        every batch)."""
        found: dict[str, str] = dict(
            connection.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table.qualified,),
            ).fetchall()
        )
        absent = sorted(set(table.columns) - set(found))
        if absent:
            raise SinkRejectedError(
                f"{self._where}: table {table.qualified} is not etcd-bridge's (it has no column "
                f"{', '.join(absent)}); set BRIDGE_POSTGRES__TABLE_PREFIX or "
                "BRIDGE_POSTGRES__SCHEMA_NAME to tables of this sink"
            )
        for column, wanted in table.copy_types.items():
            if found[column] != wanted:
                raise SinkRejectedError(
                    f"{self._where}: column {column} of table {table.qualified} is "
                    f"{found[column]}, not {wanted} (binary COPY needs the type the sink "
                    "creates, docs/postgres.md); alter it "
                    f"(ALTER TABLE {table.qualified} ALTER COLUMN {column} TYPE {wanted}), or "
                    "set BRIDGE_POSTGRES__TABLE_PREFIX or BRIDGE_POSTGRES__SCHEMA_NAME to "
                    "tables of this sink"
                )

    def _commit(self, connection: TimedConnection, events: list[Event]) -> int:
        """Write ``events`` past the locked position and the new position in one
        transaction; return how many were written."""
        schema = self._schema
        with connection.cursor() as cursor:
            cursor.execute(self._begin_and_lock)
            cursor.nextset()
            row = cursor.fetchone()
            if row is None:
                raise SinkUnavailableError(
                    f"{self._where}: the position row of pipeline {self._pipeline!r} in "
                    f"{schema.tables[-1].qualified} was deleted; reopening recreates it"
                )
            held = None if row[0] is None else Event.from_json(row[0])
            fresh = past(events, None if held is None else held.position)
            if not fresh:
                cursor.execute("COMMIT")
                return 0
            self._writer.write(cursor, fresh, held=held)
            last = fresh[-1]
            cursor.execute(
                schema.save_and_commit(
                    self._pipeline,
                    last=last.to_json(),
                    revision=last.revision,
                    index=last.index,
                    consistent=_consistent_revision(fresh),
                )
            )
        return len(fresh)

    def translate(self, error: psycopg.Error, *, doing: str) -> SinkError:
        """One line for the operator; retryable or not. Never holds the password."""
        own = self._settings
        detail = _one_line(error)
        state = error.sqlstate or ""
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            return SinkRejectedError(
                f"{self._where}: {detail}, {doing}; grant the privilege to the role of "
                "BRIDGE_POSTGRES__DSN (docs/postgres.md lists what each mode needs)"
            )
        if state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES:
            return SinkUnavailableError(f"{self._where} is unavailable ({detail}), {doing}")
        if state:
            return SinkRejectedError(f"{self._where} refused ({detail}), {doing}")
        # No SQLSTATE: libpq failed to connect or lost the connection, or a wait timed out.
        if isinstance(error, psycopg.errors.ConnectionTimeout):
            return SinkUnavailableError(
                f"{self._where} did not accept a connection within {own.connect_timeout}s "
                f"(BRIDGE_POSTGRES__CONNECT_TIMEOUT), {doing}"
            )
        if isinstance(error, psycopg.errors.OperationalError) and "timeout expired" in detail:
            return SinkUnavailableError(
                f"{self._where} did not answer within {own.timeout:g}s "
                f"(BRIDGE_POSTGRES__TIMEOUT), {doing}"
            )
        if any(refusal in detail for refusal in _LOGIN_REFUSALS):
            return SinkRejectedError(
                f"{self._where}: login as {own.user!r} refused ({_last_reason(detail)}); check "
                "the user, password and database of BRIDGE_POSTGRES__DSN (or "
                "BRIDGE_POSTGRES__PASSWORD)"
            )
        if any(refusal in detail for refusal in _TLS_REFUSALS):
            return SinkRejectedError(
                f"{self._where}: TLS failed ({_last_reason(detail)}); check "
                "BRIDGE_POSTGRES__SSLMODE and BRIDGE_POSTGRES__CA_FILE"
            )
        return SinkUnavailableError(f"{self._where} is unreachable ({detail}), {doing}")


def _last_reason(detail: str) -> str:
    """libpq prefixes its reason with where it tried ('connection to server at ... failed:')."""
    return detail.rsplit("failed:", 1)[-1].strip()


def _ask(connection: TimedConnection, query: LiteralString, *params: object) -> object:
    """The one value a catalog query returns."""
    row = connection.execute(query, params or None).fetchone()
    return None if row is None else row[0]
