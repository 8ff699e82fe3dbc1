"""The tables of the ``postgres`` sink and every statement it runs on them.

Tables (``<prefix>`` is ``BRIDGE_POSTGRES__TABLE_PREFIX``, all in ``BRIDGE_POSTGRES__SCHEMA_NAME``;
docs/postgres.md shows the DDL a DBA can run instead):

- ``<prefix>changelog`` (changelog mode): one row per event, primary key (pipeline, revision,
  index), and an index on (pipeline, key, revision) for "the key at revision R".
- ``<prefix>mirror`` (mirror mode): one row per key, primary key (pipeline, key).
- ``<prefix>staging`` (mirror mode): what the mirror must not show yet: the entries of a
  snapshot in progress, or the first changes of a revision whose last change has not arrived.
- ``<prefix>positions``: one row per (pipeline, mode), the last event held (the sink's tail),
  updated in the same transaction as the data. Every write transaction locks it first
  (``SELECT ... FOR UPDATE``), so two writers of one pipeline (an old instance resuming after
  a pause) take turns, and each skips what the other already committed.

Names are composed with ``psycopg.sql`` from settings that were checked to need no quotes
(``sinks.postgres.settings``), so the names in the docs are the names in the database.
"""

from dataclasses import dataclass

from psycopg import sql

from sinks.postgres.settings import PostgresMode, PostgresSettings

CHANGELOG_COLUMNS = (
    "pipeline", "revision", "index", "type", "op", "key", "value", "prev_value", "mod_revision",
    "create_revision", "version", "lease", "reason", "more", "key_text", "value_text",
    "value_json", "prev_value_text", "prev_value_json",
)  # fmt: skip
"""In the order of ``rows.changelog_row``."""
CHANGELOG_TYPES = (
    "text", "bigint", "integer", "text", "text", "bytea", "bytea", "bytea", "bigint", "bigint",
    "bigint", "bigint", "text", "boolean", "text", "text", "jsonb", "text", "jsonb",
)  # fmt: skip
"""The type of each of ``CHANGELOG_COLUMNS``, as its DDL and ``format_type`` name it."""
STATE_COLUMNS = (
    "revision", "index", "op", "key", "value", "mod_revision", "create_revision", "version",
    "lease", "key_text", "value_text", "value_json",
)  # fmt: skip
"""In the order of ``rows.state_row``; the staging table has them all, after ``pipeline``."""
STATE_TYPES = (
    "bigint", "integer", "text", "bytea", "bytea", "bigint", "bigint", "bigint", "bigint",
    "text", "text", "jsonb",
)  # fmt: skip
"""The type of each of ``STATE_COLUMNS``."""
_MIRROR_VALUES = (
    "value", "mod_revision", "create_revision", "version", "lease", "key_text", "value_text",
    "value_json",
)  # fmt: skip
"""What a mirror row holds besides (pipeline, key)."""
MIRROR_COLUMNS = ("pipeline", "key", *_MIRROR_VALUES)
POSITION_COLUMNS = (
    "pipeline", "mode", "revision", "index", "event", "consistent_revision", "updated_at",
)  # fmt: skip

_DDL = {
    "changelog": """
        CREATE TABLE IF NOT EXISTS {table} (
            pipeline text NOT NULL,
            revision bigint NOT NULL,
            index integer NOT NULL,
            type text NOT NULL,
            op text NOT NULL,
            key bytea NOT NULL,
            value bytea,
            prev_value bytea,
            mod_revision bigint NOT NULL,
            create_revision bigint NOT NULL,
            version bigint NOT NULL,
            lease bigint NOT NULL,
            reason text,
            more boolean NOT NULL,
            key_text text,
            value_text text,
            value_json jsonb,
            prev_value_text text,
            prev_value_json jsonb,
            PRIMARY KEY (pipeline, revision, index)
        );
        CREATE INDEX IF NOT EXISTS {key_index} ON {table} (pipeline, key, revision)
    """,
    "mirror": """
        CREATE TABLE IF NOT EXISTS {table} (
            pipeline text NOT NULL,
            key bytea NOT NULL,
            value bytea NOT NULL,
            mod_revision bigint NOT NULL,
            create_revision bigint NOT NULL,
            version bigint NOT NULL,
            lease bigint NOT NULL,
            key_text text,
            value_text text,
            value_json jsonb,
            PRIMARY KEY (pipeline, key)
        )
    """,
    "staging": """
        CREATE TABLE IF NOT EXISTS {table} (
            pipeline text NOT NULL,
            revision bigint NOT NULL,
            index integer NOT NULL,
            op text NOT NULL,
            key bytea NOT NULL,
            value bytea,
            mod_revision bigint NOT NULL,
            create_revision bigint NOT NULL,
            version bigint NOT NULL,
            lease bigint NOT NULL,
            key_text text,
            value_text text,
            value_json jsonb,
            PRIMARY KEY (pipeline, revision, index)
        )
    """,
    "positions": """
        CREATE TABLE IF NOT EXISTS {table} (
            pipeline text NOT NULL,
            mode text NOT NULL,
            revision bigint,
            index integer,
            event bytea,
            consistent_revision bigint,
            updated_at timestamptz,
            PRIMARY KEY (pipeline, mode)
        )
    """,
}
_COLUMNS = {
    "changelog": CHANGELOG_COLUMNS,
    "mirror": MIRROR_COLUMNS,
    "staging": ("pipeline", *STATE_COLUMNS),
    "positions": POSITION_COLUMNS,
}
_COPIED = {
    "changelog": dict(zip(CHANGELOG_COLUMNS, CHANGELOG_TYPES, strict=True)),
    "staging": dict(zip(("pipeline", *STATE_COLUMNS), ("text", *STATE_TYPES), strict=True)),
}
"""The tables written by ``COPY`` in PostgreSQL's binary format, and their column types: a
value in that format is only read as the type it was written for (an ``integer`` column
refuses a ``bigint``), so these must be exact."""
_TABLES_OF = {
    PostgresMode.CHANGELOG: ("changelog", "positions"),
    PostgresMode.MIRROR: ("mirror", "staging", "positions"),
}
_PRIVILEGES = {
    "changelog": ("INSERT",),
    "mirror": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "staging": ("SELECT", "INSERT", "DELETE"),
    "positions": ("SELECT", "INSERT", "UPDATE"),
}
"""What the sink does to each table (``FOR UPDATE`` and ``ON CONFLICT`` need UPDATE/SELECT)."""


def _names(names: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


@dataclass(frozen=True)
class Table:
    """One of the sink's tables: its suffix, its qualified name as text and as SQL."""

    suffix: str
    name: str
    """The table's name in its schema."""
    qualified: str
    """``schema.table``, for messages and ``to_regclass``."""
    ident: sql.Identifier

    @property
    def ddl(self) -> sql.Composed:
        """Creates the table (and its index) if missing."""
        return sql.SQL(_DDL[self.suffix]).format(
            table=self.ident, key_index=sql.Identifier(f"{self.name}_key")
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the sink reads or writes."""
        return _COLUMNS[self.suffix]

    @property
    def privileges(self) -> tuple[str, ...]:
        return _PRIVILEGES[self.suffix]

    @property
    def copy_types(self) -> dict[str, str]:
        """Column: type, for a table the sink writes by binary ``COPY``; else empty."""
        return _COPIED.get(self.suffix, {})

    @property
    def copy(self) -> sql.Composed:
        """Its binary ``COPY``, columns in the order of ``copy_types``."""
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.ident, _names(tuple(self.copy_types))
        )


class Schema:
    """The tables of one sink's mode and the statements it runs on them."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.name = settings.schema_name
        self.mode = settings.mode
        self.tables = [
            Table(
                suffix=suffix,
                name=settings.table(suffix),
                qualified=f"{settings.schema_name}.{settings.table(suffix)}",
                ident=sql.Identifier(settings.schema_name, settings.table(suffix)),
            )
            for suffix in _TABLES_OF[settings.mode]
        ]
        by_suffix = {table.suffix: table.ident for table in self.tables}
        positions = self._positions = by_suffix["positions"]
        where = sql.SQL("WHERE pipeline = %(pipeline)s AND mode = %(mode)s")
        self.create_schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(self.name)
        )
        self.add_position = sql.SQL(
            "INSERT INTO {} (pipeline, mode) VALUES (%(pipeline)s, %(mode)s) ON CONFLICT DO NOTHING"
        ).format(positions)
        self.read_position = sql.SQL("SELECT event FROM {} {}").format(positions, where)
        copied = next(table for table in self.tables if table.copy_types)
        self.copy = copied.copy
        """Rows into the mode's one table written by ``COPY``: changelog, or staging."""
        self.copy_types = tuple(copied.copy_types.values())
        if settings.mode is PostgresMode.MIRROR:
            self._mirror_statements(mirror=by_suffix["mirror"], staging=by_suffix["staging"])

    def _where(self, pipeline: str) -> sql.Composed:
        """The pipeline's position row, for statements of several parts, which take no
        parameters."""
        return sql.SQL("WHERE pipeline = {} AND mode = {}").format(
            sql.Literal(pipeline), sql.Literal(self.mode.value)
        )

    def begin_and_lock(self, pipeline: str) -> sql.Composed:
        """Opens a flush's transaction and locks the pipeline's position row (``FOR
        UPDATE``); its second result is the event that row holds. Two statements in one
        simple query: one round trip to the server instead of two."""
        return sql.SQL("BEGIN; SELECT event FROM {} {} FOR UPDATE").format(
            self._positions, self._where(pipeline)
        )

    def save_and_commit(
        self, pipeline: str, *, last: bytes, revision: int, index: int, consistent: int | None
    ) -> sql.Composed:
        """Saves the position of a flush's last event (``last``: its JSON) and commits, in one
        round trip like ``begin_and_lock``. ``consistent``, the last revision the flush
        completes, replaces ``consistent_revision`` unless it is None."""
        return sql.SQL(
            "UPDATE {} SET revision = {}, index = {}, event = {}, "
            "consistent_revision = coalesce({}::bigint, consistent_revision), "
            "updated_at = now() {}; COMMIT"
        ).format(
            self._positions,
            *map(sql.Literal, (revision, index, last, consistent)),
            self._where(pipeline),
        )

    def _mirror_statements(self, *, mirror: sql.Identifier, staging: sql.Identifier) -> None:
        upsert = sql.SQL(
            "ON CONFLICT (pipeline, key) DO UPDATE SET ({values}) = ({excluded}) "
            "WHERE ({current}) IS DISTINCT FROM ({excluded})"
        ).format(
            values=_names(_MIRROR_VALUES),
            excluded=sql.SQL(", ").join(
                sql.SQL("excluded.{}").format(sql.Identifier(name)) for name in _MIRROR_VALUES
            ),
            current=sql.SQL(", ").join(
                sql.SQL("m.{}").format(sql.Identifier(name)) for name in _MIRROR_VALUES
            ),
        )
        # Arrays go in binary format (``%b``): in text format psycopg quotes every element
        # in Python, a regular expression each, which cost the mirror two thirds of its CPU.
        arrays = sql.SQL(", ").join(
            sql.SQL("%b::{}[]").format(sql.SQL(kind)) for kind in STATE_TYPES
        )
        self.upsert_rows = sql.SQL(
            "INSERT INTO {mirror} AS m ({columns}) SELECT %s, {values} FROM unnest({arrays}) "
            "AS u({state}) {upsert}"
        ).format(
            mirror=mirror,
            columns=_names(MIRROR_COLUMNS),
            values=_names(("key", *_MIRROR_VALUES)),
            arrays=arrays,
            state=_names(STATE_COLUMNS),
            upsert=upsert,
        )
        self.delete_keys = sql.SQL(
            "DELETE FROM {} WHERE pipeline = %s AND key = ANY(%b::bytea[])"
        ).format(mirror)
        self.upsert_staged = sql.SQL(
            "INSERT INTO {mirror} AS m ({columns}) SELECT {columns} FROM {staging} "
            "WHERE pipeline = %(pipeline)s AND op <> 'delete' {upsert}"
        ).format(mirror=mirror, staging=staging, columns=_names(MIRROR_COLUMNS), upsert=upsert)
        self.delete_staged = sql.SQL(
            "DELETE FROM {mirror} m USING {staging} s WHERE s.pipeline = %(pipeline)s "
            "AND s.op = 'delete' AND m.pipeline = s.pipeline AND m.key = s.key"
        ).format(mirror=mirror, staging=staging)
        self.delete_unstaged = sql.SQL(
            "DELETE FROM {mirror} m WHERE m.pipeline = %(pipeline)s AND NOT EXISTS "
            "(SELECT FROM {staging} s WHERE s.pipeline = m.pipeline AND s.key = m.key)"
        ).format(mirror=mirror, staging=staging)
        self.clear_staging = sql.SQL("DELETE FROM {} WHERE pipeline = %(pipeline)s").format(staging)
