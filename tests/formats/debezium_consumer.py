"""A Debezium changelog reader that applies records the way Flink's ``debezium-json`` does,
and checks what Flink takes on trust.

Flink's ``DebeziumJsonDeserializationSchema`` turns ``c`` and ``r`` into an insert of
``after``, ``u`` into a retraction of ``before`` followed by an insert of ``after``, and ``d``
into a retraction of ``before``; it fails on a ``u`` or ``d`` whose ``before`` is null and on
an op it does not know, and skips a null record (a Kafka tombstone, or a marker's null value).
A retraction is only right downstream if ``before`` is the row the consumer holds for that
key, which Flink cannot check; this reader does, and raises ``ChangelogError`` otherwise. It
accepts records with and without the ``{schema, payload}`` wrapper.

Rows are kept as the records carry them (values embedded as the format embedded them), keyed
by the etcd key's bytes. Message events (``"op": "m"``, the snapshot markers of the sinks
that write records without headers) fail like any unknown op unless ``messages=True``, when
they are collected in ``DebeziumTable.messages``.
"""

from collections.abc import Iterable
from typing import Any

import orjson

from bridge.encoding import decode_field
from bridge.events import Op, Position
from config.output import ValuesMode
from tests.formats.fields import Change, field_bytes

OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.SNAPSHOT}

Row = dict[str, Any]


class ChangelogError(Exception):
    """The changelog cannot be applied: Flink would fail on it, or it contradicts the rows
    already applied."""


def key_of(row: Row) -> bytes:
    """The etcd key a row (or a record key) names, bytes exact."""
    key = row.get("key")
    if not isinstance(key, str):
        raise ChangelogError(f"a row without a key: {row}")
    return decode_field(key, is_base64="key" in row.get("b64", ()))


class DebeziumTable:
    """The rows a Debezium consumer holds after applying records one by one."""

    def __init__(self, rows: dict[bytes, Row] | None = None, *, messages: bool = False) -> None:
        self.rows: dict[bytes, Row] = {} if rows is None else rows
        self.accept_messages = messages
        self.messages: list[dict[str, Any]] = []
        """The ``message`` of each message event applied (``messages=True``)."""
        self.skipped = 0
        """Null records skipped."""
        self.applied = 0

    def apply(self, record: bytes | None) -> None:
        if not record:
            self.skipped += 1
            return
        document = orjson.loads(record)
        if isinstance(document, dict) and set(document) == {"schema", "payload"}:
            document = document["payload"]
        if document is None:  # JsonConverter's null, wrapped
            self.skipped += 1
            return
        if not isinstance(document, dict):
            raise ChangelogError(f"not a JSON object: {record!r}")
        op = document.get("op")
        if op in ("c", "r"):
            after = self._row(document, "after", op)
            self.rows[key_of(after)] = after
        elif op == "u":
            before, after = self._row(document, "before", op), self._row(document, "after", op)
            key = self._retract(before)
            if key_of(after) != key:
                raise ChangelogError(f"an update that moves a row to another key: {document}")
            self.rows[key] = after
        elif op == "d":
            del self.rows[self._retract(self._row(document, "before", op))]
        elif op == "m" and self.accept_messages:
            self.messages.append(document["message"])
        else:
            raise ChangelogError(f'Unknown "op" value {op!r}')
        self.applied += 1

    def _row(self, document: dict[str, Any], name: str, op: str) -> Row:
        row = document.get(name)
        if not isinstance(row, dict):
            raise ChangelogError(f'The "{name}" field of a {op!r} message is null: {document}')
        return row

    def _retract(self, before: Row) -> bytes:
        """Check that ``before`` is the row held for its key; return the key."""
        key = key_of(before)
        held = self.rows.get(key)
        if held != before:
            raise ChangelogError(f"before {before} is not the row held for {key!r}: {held}")
        return key


def apply(
    records: Iterable[bytes | None], table: dict[bytes, Row], *, messages: bool = False
) -> dict[bytes, Row]:
    """Apply ``records`` in order to ``table`` (changed in place) and return it."""
    consumer = DebeziumTable(table, messages=messages)
    for record in records:
        consumer.apply(record)
    return table


def read(record: bytes | None, *, values: ValuesMode = ValuesMode.BYTES) -> Change | None:
    """The change one record describes, by docs/formats.md ("debezium") alone: the position
    from ``source``, the key and values from the rows; a message event's marker op from its
    content. None for a null record (a Kafka marker or tombstone)."""
    if not record:
        return None
    document = orjson.loads(record)
    if set(document) == {"schema", "payload"}:
        document = document["payload"]
    source = document["source"]
    position = Position(int(source["revision"]), int(source["index"]))
    if document["op"] == "m":
        content = document["message"]["content"]
        key = decode_field(content["key"], is_base64="key" in content.get("b64", ()))
        return Change(position, Op(content["op"]), key, None)
    before, after = document.get("before"), document.get("after")
    row = after if after is not None else before
    if row is None:
        raise ChangelogError(f"a change without rows: {document}")
    return Change(
        position=position,
        op=OPS[document["op"]],
        key=key_of(row),
        value=None if after is None else field_bytes(after, "value", values=values),
        prev_value=None if before is None else field_bytes(before, "value", values=values),
    )


def values_of(
    table: dict[bytes, Row], *, values: ValuesMode = ValuesMode.BYTES
) -> dict[bytes, bytes | None]:
    """Each key's value in ``table``, read back as ``read`` reads values."""
    return {key: field_bytes(row, "value", values=values) for key, row in table.items()}
