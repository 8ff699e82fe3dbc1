"""Events as table rows: the raw bytes, plus text and JSONB views where the bytes allow.

etcd keys and values are bytes, so every table stores them as ``bytea``, exact. Beside each one
sits a ``*_text`` column, set when the bytes are UTF-8 that PostgreSQL's ``text`` can hold (no
NUL byte), and for values a ``*_json`` column, set when that text is also a JSON document that
``jsonb`` accepts (``jsonb`` refuses ``\\u0000``, which JSON allows). Both are computed here,
in the bridge, because PostgreSQL 15 has no way to test either without raising an error that
would abort the whole transaction.

The column order of each tuple is the column list of ``sinks.postgres.schema`` it feeds. Rows
go out by ``COPY`` in PostgreSQL's binary format, each column sent as the type
``schema.CHANGELOG_TYPES`` or ``schema.STATE_TYPES`` names: bytes travel as they are (text
``COPY`` doubles them into hex, which both sides then pay for), and the changelog row hands
``type``, ``op`` and ``reason`` over as the ``StrEnum`` members themselves, which the ``text``
dumper encodes as their values (psycopg's default dumper for an ``Enum``, used where the
type is not given, would send its name). ``JsonbText`` sends a JSON view.
"""

from collections.abc import Sequence

import orjson
from psycopg import postgres
from psycopg.abc import Buffer
from psycopg.types.string import StrBinaryDumper

from bridge.events import Event, EventType, Op, SnapshotReason

_NUL_ESCAPE = "\\u0000"
_JSON_STARTS = frozenset('{["-0123456789tfn \t\r\n')
"""The first characters a JSON document can have: most other values are refused without
raising (orjson's error derives from json's, whose construction is slow)."""


def text_view(raw: bytes | None) -> str | None:
    """``raw`` as ``text``, or None when it is not UTF-8 or holds a NUL byte (looked for in
    the decoded text: three times faster than in the bytes, for values of 100 bytes)."""
    if raw is None:
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def json_view(text: str | None) -> str | None:
    """``text`` when it is a JSON document ``jsonb`` accepts, else None."""
    if not text or text[0] not in _JSON_STARTS or _NUL_ESCAPE in text:
        return None
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return text


class JsonbText(StrBinaryDumper):
    """A JSON view (``json_view``) as a ``jsonb`` value of binary ``COPY``: a version byte,
    then the text, which PostgreSQL parses as it would in text format. Registered for the
    ``jsonb`` type only (``register_dumper(None, ...)``): psycopg's own ``jsonb`` dumper would
    serialize the string as a JSON string."""

    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> Buffer:
        return b"\x01" + obj.encode(self._encoding)


ChangelogRow = tuple[
    str, int, int, EventType, Op, bytes, bytes | None, bytes | None, int, int, int, int,
    SnapshotReason | None, bool, str | None, str | None, str | None, str | None, str | None,
]  # fmt: skip


def changelog_row(pipeline: str, event: Event) -> ChangelogRow:
    """The changelog row of ``event`` (``schema.CHANGELOG_COLUMNS``)."""
    value_text = text_view(event.value)
    prev_text = text_view(event.prev_value)
    return (
        pipeline,
        event.revision,
        event.index,
        event.type,
        event.op,
        event.key,
        event.value,
        event.prev_value,
        event.mod_revision,
        event.create_revision,
        event.version,
        event.lease,
        event.reason,
        event.more,
        text_view(event.key),
        value_text,
        json_view(value_text),
        prev_text,
        json_view(prev_text),
    )


StateRow = tuple[
    int, int, str, bytes, bytes | None, int, int, int, int, str | None, str | None, str | None
]


def state_row(event: Event) -> StateRow:
    """What the mirror (and its staging table) keeps of a change or a snapshot entry
    (``schema.STATE_COLUMNS``): its position and op, then the key's state after it."""
    value_text = text_view(event.value)
    return (
        event.revision,
        event.index,
        event.op.value,
        event.key,
        event.value,
        event.mod_revision,
        event.create_revision,
        event.version,
        event.lease,
        text_view(event.key),
        value_text,
        json_view(value_text),
    )


def columns(rows: Sequence[StateRow]) -> list[list[object]]:
    """Rows turned into one list per column: the arrays an ``unnest`` statement takes."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else []
