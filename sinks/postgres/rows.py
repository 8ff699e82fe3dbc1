"""Events as table rows: the raw bytes, plus text and JSONB views where the bytes allow.

etcd keys and values are bytes, so every table stores them as ``bytea``, exact. Beside each one
sits a ``*_text`` column, set when the bytes are UTF-8 that PostgreSQL's ``text`` can hold (no
NUL byte), and for values a ``*_json`` column, set when that text is also a JSON document that
``jsonb`` accepts (``jsonb`` refuses ``\\u0000``, which JSON allows). Both are computed here,
in the bridge, because PostgreSQL 15 has no way to test either without raising an error that
would abort the whole transaction.

The column order of each tuple is the column list of ``sinks.postgres.schema`` it feeds.
"""

from collections.abc import Sequence

import orjson

from bridge.events import Event

_NUL_ESCAPE = "\\u0000"
_JSON_STARTS = frozenset('{["-0123456789tfn \t\r\n')
"""The first characters a JSON document can have: most other values are refused without
raising (orjson's error derives from json's, whose construction is slow)."""


def text_view(raw: bytes | None) -> str | None:
    """``raw`` as ``text``, or None when it is not UTF-8 or holds a NUL byte."""
    if raw is None or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def json_view(text: str | None) -> str | None:
    """``text`` when it is a JSON document ``jsonb`` accepts, else None."""
    if not text or text[0] not in _JSON_STARTS or _NUL_ESCAPE in text:
        return None
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return text


ChangelogRow = tuple[
    str, int, int, str, str, bytes, bytes | None, bytes | None, int, int, int, int, str | None,
    bool, str | None, str | None, str | None, str | None, str | None,
]  # fmt: skip


def changelog_row(pipeline: str, event: Event) -> ChangelogRow:
    """The changelog row of ``event`` (``schema.CHANGELOG_COLUMNS``)."""
    value_text = text_view(event.value)
    prev_text = text_view(event.prev_value)
    return (
        pipeline,
        event.revision,
        event.index,
        event.type.value,
        event.op.value,
        event.key,
        event.value,
        event.prev_value,
        event.mod_revision,
        event.create_revision,
        event.version,
        event.lease,
        None if event.reason is None else event.reason.value,
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
