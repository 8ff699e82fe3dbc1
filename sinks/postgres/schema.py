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
STATE_COLUMNS = (
    "revision", "index", "op", "key", "value", "mod_revision", "create_revision", "version",
    "lease", "key_text", "value_text", "value_json",
)  # fmt: skip
"""In the order of ``rows.state_row``; the staging table has them all, after ``pipeline``."""
_STATE_TYPES = (
    "bigint", "integer", "text", "bytea", "bytea", "bigint", "bigint", "bigint", "bigint",
    "text", "text", "jsonb",
)  # fmt: skip
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
        positions = by_suffix["positions"]
        where = sql.SQL("WHERE pipeline = %(pipeline)s AND mode = %(mode)s")
        self.create_schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(self.name)
        )
        self.add_position = sql.SQL(
            "INSERT INTO {} (pipeline, mode) VALUES (%(pipeline)s, %(mode)s) ON CONFLICT DO NOTHING"
        ).format(positions)
        self.read_position = sql.SQL("SELECT event FROM {} {}").format(positions, where)
        self.lock_position = sql.SQL("SELECT event FROM {} {} FOR UPDATE").format(positions, where)
        self.save_position = sql.SQL(
            "UPDATE {} SET revision = %(revision)s, index = %(index)s, event = %(event)s, "
            "consistent_revision = coalesce(%(consistent)s, consistent_revision), "
            "updated_at = now() {}"
        ).format(positions, where)
        if settings.mode is PostgresMode.CHANGELOG:
            self.copy_changelog = sql.SQL("COPY {} ({}) FROM STDIN").format(
                by_suffix["changelog"], _names(CHANGELOG_COLUMNS)
            )
        else:
            self._mirror_statements(mirror=by_suffix["mirror"], staging=by_suffix["staging"])

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
        arrays = sql.SQL(", ").join(
            sql.SQL("%s::{}[]").format(sql.SQL(kind)) for kind in _STATE_TYPES
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
            "DELETE FROM {} WHERE pipeline = %s AND key = ANY(%s::bytea[])"
        ).format(mirror)
        self.copy_staging = sql.SQL("COPY {} ({}) FROM STDIN").format(
            staging, _names(("pipeline", *STATE_COLUMNS))
        )
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
