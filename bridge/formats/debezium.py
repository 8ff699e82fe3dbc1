"""Debezium's change-event envelope (docs/formats.md#debezium), for Flink, RisingWave and
Kafka Connect.

One record per event. A change is ``{"before", "after", "source", "op", "ts_ms",
"transaction"}``, with etcd's key-values as rows; ``before`` is etcd's whole ``prev_kv``,
because Flink's ``debezium-json`` retracts it on every update and delete and fails on a null
one. A snapshot marker is a Debezium message event (``"op": "m"``) where the record stands
alone (file, stdout, Redis, NATS); a keyed record of one has no value (``record_value``),
which Flink skips, so the marker travels in the sink's headers there. With
``debezium_schemas`` each record is wrapped in ``{"schema", "payload"}`` as Kafka Connect's
JsonConverter writes it with ``schemas.enable=true``.

``decode`` reads back what ``encode`` wrote, wrapped or not: positions, op, key and reason
exactly, values as carried. A delete's row is its ``before``; when etcd sent no ``prev_kv``
(see docs) neither row names the key, so ``source`` carries it then (``key``, and ``b64``
when base64). An event delivered without its values (its sink refused it whole) keeps its rows
with null values, each row saying the size of its own left out in ``omitted_bytes``; having no
value, such an event never takes the fast path below, which therefore never looks for it.

Speed: ``encode`` is on the hot path, and the envelope is half as large again as the native
document, with three times the fields (``bench/encode.py`` measures both). The common case
(values=bytes, UTF-8 key and values) is one ``try`` around the three decodes, as in
``Event.to_json``, and fills in place the dicts of a per-thread, per-op template record
(``_templates``), which orjson then serializes in one call. Building and serializing dicts is
what costs, so the template holds as few as it can: the source block's constant fields are
serialized once and spliced in as ``orjson.Fragment`` values of a flat record, whose
fragments open and close the block around the fields that vary:

    {"before": row, "after": row,
     "source": F('{"version":…,"connector":…,"name":…,"ts_ms":T'),   (once per millisecond)
     "snapshot": F('"false","db":…,"cluster":…,"prefix":…'),        (one per flag)
     "revision": R, "index": I,
     "reason": F('null},"op":"u"'),                                  (one per reason and op)
     "ts_ms": T, "transaction": None}

which orjson writes as the envelope, byte for byte (the unit tests hold it to ``_change``,
which builds the same record by the book). The schemas are spliced in the same way, and the
clock is read once per record (``encode``) or per batch (``encode_lines``). Alternatives
measured and dropped: fresh dicts per event (a fifth slower: a dict costs more to build than
to fill), bytes %-formatting, joins and f-strings of pre-escaped pieces (slower than orjson's
dict path).
"""

import importlib.metadata
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from bridge.encoding import encode_field
from bridge.events import Event, EventType, OmittedBytes, Op, SnapshotReason
from bridge.formats.base import (
    EventFormat,
    FormatContext,
    MillisecondClock,
    json_members,
)
from bridge.formats.values import embed_fields, extract_fields
from config.output import FormatName, OutputSettings, ValuesMode

CONNECTOR = "etcd"
MESSAGE_PREFIX = "etcd-bridge"
"""``message.prefix`` of the marker message events."""

# Module constants, not ``EventType.MARKER`` in the hot path: reading an enum member through
# its class costs about 0.2 µs on Python 3.11, a tenth of a native record.
_MARKER = EventType.MARKER
_SNAPSHOT = Op.SNAPSHOT
_OP_CODES = {Op.CREATE: "c", Op.UPDATE: "u", Op.DELETE: "d", Op.SNAPSHOT: "r"}
_CODE_OPS = {code: op for op, code in _OP_CODES.items()}
_CODE_TYPES = {"c": EventType.PUT, "u": EventType.PUT, "r": EventType.PUT, "d": EventType.DELETE}
_NO_BEFORE = frozenset({Op.CREATE, Op.SNAPSHOT})
_MARKER_CODE = "m"
_SNAPSHOT_FLAGS = frozenset({"first", "true", "last", "false"})
_REASONS: tuple[SnapshotReason | None, ...] = (None, *SnapshotReason)
_Row = dict[str, Any]
_Clock = tuple[int, orjson.Fragment]
"""``ts_ms`` and the source block's head, which holds it (``MillisecondClock.now``)."""
_Templates = dict[
    str,
    tuple[
        _Row | None,
        _Row | None,
        dict[str, Any],
        dict[SnapshotReason | None, orjson.Fragment],
        dict[str, Any],
    ],
]
"""Per op code: the ``before`` and ``after`` rows, the flat record, its source block's
closing fragment per reason, and the document to serialize (the record, wrapped)."""
_NOTHING_OMITTED = OmittedBytes(value=None, prev_value=None)
_VALUE = ("value",)
_KEY = ("key",)


def package_version() -> str:
    """``source.version``: the installed etcd-bridge's version."""
    try:
        return importlib.metadata.version("etcd-bridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def snapshot_flag(event: Event) -> str:
    """``source.snapshot`` as Debezium sets it: ``first``, ``true`` and ``last`` within a
    snapshot (a one-key snapshot's only record is ``last``), ``false`` for watched changes."""
    if event.op is not _SNAPSHOT:
        return "true" if event.type is _MARKER else "false"
    if event.closes_snapshot:
        return "last"
    return "first" if event.opens_snapshot else "true"


class DebeziumFormat(EventFormat):
    """docs/formats.md#debezium."""

    name = FormatName.DEBEZIUM

    def __init__(self, context: FormatContext, output: OutputSettings) -> None:
        self._values = context.values
        self._fast = context.values is ValuesMode.BYTES
        # With schemas, an embedded JSON value travels as JSON text (see ``_row``).
        self._json_text = output.debezium_schemas and context.values is ValuesMode.JSON
        self._version = package_version()
        self._pipeline = context.pipeline
        self._cluster = context.cluster
        self._prefix = context.keyspace.describe().decode("utf-8", "backslashreplace")
        self._local = threading.local()
        # ``ts_ms``: when the record was encoded (etcd keeps no commit time).
        self._clock = MillisecondClock(self._source_head)
        # The spliced parts of the source block (see the module docstring).
        constants = json_members({"db": self._cluster, "cluster": self._cluster})
        constants += b"," + json_members({"prefix": self._prefix})
        self._flags = {
            flag: orjson.Fragment(orjson.dumps(flag) + b"," + constants) for flag in _SNAPSHOT_FLAGS
        }
        self._closings = {
            code: {
                reason: orjson.Fragment(orjson.dumps(reason) + b"}," + json_members({"op": code}))
                for reason in _REASONS
            }
            for code in _CODE_OPS
        }
        # The schemas, pre-serialized: orjson splices them into every wrapped record.
        self._envelope_schema = self._message_schema = self._key_schema = None
        marker_key_schema = None
        if output.debezium_schemas:
            schemas = ConnectSchemas(context)
            self._envelope_schema = orjson.Fragment(orjson.dumps(schemas.envelope))
            self._message_schema = orjson.Fragment(orjson.dumps(schemas.message))
            self._key_schema = orjson.Fragment(orjson.dumps(schemas.key))
            marker_key_schema = orjson.Fragment(orjson.dumps(schemas.marker_key))
        self._marker_key = orjson.dumps(_wrap({"marker": self._prefix}, marker_key_schema))

    # -- encoding -------------------------------------------------------------------------

    def encode(self, event: Event) -> bytes:
        try:  # _own_templates inlined: a call costs a twentieth of an envelope
            templates = self._local.templates
        except AttributeError:
            templates = self._own_templates()
        return orjson.dumps(self._document(event, self._clock.now(), templates))

    def encode_batch(self, batch: Sequence[Event]) -> list[bytes]:
        """As the base, with one ``ts_ms`` for the whole batch: a clock read costs about a
        twentieth of an envelope."""
        clock, templates = self._clock.now(), self._own_templates()
        document, dumps = self._document, orjson.dumps
        return [dumps(document(event, clock, templates)) for event in batch]

    def encode_lines(self, batch: Sequence[Event]) -> bytes:
        """As ``encode_batch``, each record ending in a newline. (``+ b"\\n"`` measured faster
        than joining ``encode_batch``'s records with newlines, or orjson's
        ``OPT_APPEND_NEWLINE``: those results all stay allocated until the join.)"""
        clock, templates = self._clock.now(), self._own_templates()
        document, dumps = self._document, orjson.dumps
        return b"".join([dumps(document(event, clock, templates)) + b"\n" for event in batch])

    def record_key(self, event: Event) -> bytes:
        """Debezium's key shape: ``{"key": <etcd key>}`` (base64 and ``"b64": ["key"]`` when
        not UTF-8); a marker's is ``{"marker": <prefix>}``, which no etcd key's record has,
        so a compacted topic never deletes a key's records because of a marker."""
        if event.type is _MARKER:
            return self._marker_key
        payload: dict[str, Any]
        try:
            payload = {"key": event.key.decode()}
        except UnicodeDecodeError:
            payload = {"key": encode_field(event.key)[0], "b64": ["key"]}
        schema = self._key_schema
        return orjson.dumps(payload if schema is None else {"schema": schema, "payload": payload})

    def record_value(self, event: Event) -> bytes | None:
        """None for a marker: Flink's ``debezium-json`` skips a null value as it skips a
        tombstone, where a message event (``"op": "m"``) would fail it."""
        if event.type is _MARKER:
            return None
        try:  # as in ``encode``
            templates = self._local.templates
        except AttributeError:
            templates = self._own_templates()
        return orjson.dumps(self._document(event, self._clock.now(), templates))

    def record_values(self, batch: Sequence[Event]) -> Sequence[bytes | None]:
        """``encode_batch``'s records (one ``ts_ms``), unless the batch holds a marker, whose
        value ``record_value`` leaves out."""
        if any(event.type is _MARKER for event in batch):
            return list(map(self.record_value, batch))
        return self.encode_batch(batch)

    def _own_templates(self) -> "_Templates":
        """This thread's templates (``_templates``), made on its first call."""
        try:
            return self._local.templates  # type: ignore[no-any-return]
        except AttributeError:
            templates = self._local.templates = self._templates()
            return templates

    def _source_head(self, ts_ms: int) -> orjson.Fragment:
        """The source block up to ``ts_ms``, left open (see the module docstring)."""
        head = {"version": self._version, "connector": CONNECTOR, "name": self._pipeline}
        return orjson.Fragment(b"{" + json_members({**head, "ts_ms": ts_ms}))

    def _document(self, event: Event, clock: _Clock, templates: "_Templates") -> dict[str, Any]:
        """The JSON document of ``event``'s record, wrapped with its schema if enabled. On the
        fast path it is one of ``templates``, filled in: serialize it before the next call."""
        code = _OP_CODES.get(event.op)
        ts_ms = clock[0]
        if code is None:  # a marker
            return self._message(event, ts_ms)
        if not self._fast:
            return _wrap(self._change(event, code, ts_ms), self._envelope_schema)
        # The common case (see the module docstring).
        before, after, record, tails, document = templates[code]
        try:
            key = event.key.decode()
            if after is not None:
                value = event.value
                if value is None:  # not from etcd: a PUT always has a value
                    return _wrap(self._change(event, code, ts_ms), self._envelope_schema)
                after["key"] = key
                after["value"] = value.decode()
                after["create_revision"] = event.create_revision
                after["mod_revision"] = event.mod_revision
                after["version"] = event.version
                after["lease"] = event.lease
            if before is not None:
                prev = event.prev_value
                if prev is None:  # etcd sent no prev_kv
                    return _wrap(self._change(event, code, ts_ms), self._envelope_schema)
                before["key"] = key
                before["value"] = prev.decode()
                before["create_revision"] = event.prev_create_revision
                before["mod_revision"] = event.prev_mod_revision
                before["version"] = event.prev_version
                before["lease"] = event.prev_lease
        except UnicodeDecodeError:
            return _wrap(self._change(event, code, ts_ms), self._envelope_schema)
        record["source"] = clock[1]
        record["revision"] = event.revision
        record["index"] = event.index
        record["reason"] = tails[event.reason]
        record["ts_ms"] = ts_ms
        if code == "r":
            record["snapshot"] = self._flags[snapshot_flag(event)]
        return document

    def _templates(self) -> "_Templates":
        """One flat record per op code (see the module docstring), with its ``before`` and
        ``after`` rows (None where the op has none), that one thread's fast path fills in
        place: filling them costs less than building dicts per event, an op's own record
        leaves its constant fields (``op``, ``snapshot``, which rows) set, and a thread of
        its own keeps another thread's record intact."""
        templates: _Templates = {}
        for code in _CODE_OPS:
            before = _row_template() if code in "ud" else None
            after = _row_template() if code in "cur" else None
            tails = self._closings[code]
            record: dict[str, Any] = {"before": before, "after": after}
            record.update(source=self._clock.now()[1], snapshot=self._flags["false"])
            record.update(revision=0, index=0, reason=tails[None], ts_ms=0, transaction=None)
            templates[code] = (before, after, record, tails, _wrap(record, self._envelope_schema))
        return templates

    def _change(self, event: Event, code: str, ts_ms: int) -> dict[str, Any]:
        """The envelope of a change, for every case the fast path leaves out."""
        key, key_is_base64 = encode_field(event.key)
        omitted = event.omitted_bytes or _NOTHING_OMITTED
        before = (
            self._row(
                key,
                key_is_base64=key_is_base64,
                value=event.prev_value,
                omitted=omitted.prev_value,
                create_revision=event.prev_create_revision,
                mod_revision=event.prev_mod_revision,
                version=event.prev_version,
                lease=event.prev_lease,
            )
            if (event.prev_value is not None or omitted.prev_value is not None) and code in "ud"
            else None
        )
        after = (
            self._row(
                key,
                key_is_base64=key_is_base64,
                value=event.value,
                omitted=omitted.value,
                create_revision=event.create_revision,
                mod_revision=event.mod_revision,
                version=event.version,
                lease=event.lease,
            )
            if code != "d"
            else None
        )
        source = self._source(event, flag=snapshot_flag(event), ts_ms=ts_ms)
        if before is None and after is None:
            # A delete without prev_kv: no row names the key, so the source block does.
            source["key"] = key
            if key_is_base64:
                source["b64"] = ["key"]
        return {
            "before": before,
            "after": after,
            "source": source,
            "op": code,
            "ts_ms": ts_ms,
            "transaction": None,
        }

    def _row(
        self,
        key: str,
        *,
        key_is_base64: bool,
        value: bytes | None,
        omitted: int | None,
        create_revision: int,
        mod_revision: int,
        version: int,
        lease: int,
    ) -> dict[str, Any]:
        """A row; ``omitted``: the size of its value, which was left out (then None)."""
        row: dict[str, Any] = {"key": key}
        lists = embed_fields(row, {"value": value}, mode=self._values)
        if self._json_text and value is not None and not lists:
            # Kafka Connect's schemas cannot type an arbitrary JSON value: like Debezium's
            # JSON columns, it travels as its text (``io.debezium.data.Json``).
            row["value"] = value.decode()
        row["create_revision"] = create_revision
        row["mod_revision"] = mod_revision
        row["version"] = version
        row["lease"] = lease
        if omitted is not None:
            row["omitted_bytes"] = omitted
        base64 = ["key", *lists.get("b64", ())] if key_is_base64 else lists.get("b64")
        if base64:
            row["b64"] = base64
        if "raw" in lists:
            row["raw"] = lists["raw"]
        return row

    def _source(self, event: Event, *, flag: str, ts_ms: int) -> dict[str, Any]:
        return {
            "version": self._version,
            "connector": CONNECTOR,
            "name": self._pipeline,
            "ts_ms": ts_ms,
            "snapshot": flag,
            "db": self._cluster,
            "cluster": self._cluster,
            "prefix": self._prefix,
            "revision": event.revision,
            "index": event.index,
            "reason": event.reason,
        }

    def _message(self, event: Event, ts_ms: int) -> dict[str, Any]:
        """A marker as a Debezium message event; ``content`` is its native document."""
        message = {
            "op": _MARKER_CODE,
            "ts_ms": ts_ms,
            "source": self._source(event, flag=snapshot_flag(event), ts_ms=ts_ms),
            "message": {"prefix": MESSAGE_PREFIX, "content": event.to_dict()},
        }
        return _wrap(message, self._message_schema)

    # -- decoding -------------------------------------------------------------------------

    def decode(self, record: bytes) -> Event:
        try:
            document = orjson.loads(record)
            if not isinstance(document, dict):
                raise TypeError("not a JSON object")
            if "payload" in document and "schema" in document:
                # Wrapped values are always text (``_row``): read them as with bytes.
                return _event_of(document["payload"], values=ValuesMode.BYTES)
            return _event_of(document, values=self._values)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a Debezium record of etcd-bridge: {error!r}") from error


def _event_of(payload: dict[str, Any], *, values: ValuesMode) -> Event:
    """The event of one envelope or message event (``DebeziumFormat.decode``)."""
    source = payload["source"]
    if source["connector"] != CONNECTOR:
        raise ValueError(f"not a record of the etcd connector: {source['connector']!r}")
    revision, index = int(source["revision"]), int(source["index"])
    code = payload["op"]
    if code == _MARKER_CODE:
        event = Event.from_dict(payload["message"]["content"])
        if event.type is not EventType.MARKER or (event.revision, event.index) != (revision, index):
            raise ValueError(f"a message event that is no marker of its position: {payload}")
        return event
    op = _CODE_OPS.get(code)
    if op is None:
        raise ValueError(f"unknown op {code!r}")
    flag = source["snapshot"]
    if flag not in _SNAPSHOT_FLAGS:
        raise ValueError(f"unknown snapshot flag {flag!r}")
    before, after = payload["before"], payload["after"]
    if (after is None) != (op is Op.DELETE) or (before is not None and op in _NO_BEFORE):
        raise ValueError(f"an {code!r} record with before {before} and after {after}")
    named = after if after is not None else before if before is not None else source
    key = extract_fields(named, _KEY, mode=ValuesMode.BYTES)["key"]
    if key is None:
        raise ValueError("the record names no key")
    reason = source.get("reason")
    event = Event(
        revision=revision,
        index=index,
        type=_CODE_TYPES[code],
        op=op,
        key=key,
        reason=None if reason is None else SnapshotReason(reason),
        opens_snapshot=flag == "first",
        closes_snapshot=flag == "last",
    )
    if after is not None:
        event.value = extract_fields(after, _VALUE, mode=values)["value"]
        event.create_revision = int(after["create_revision"])
        event.mod_revision = int(after["mod_revision"])
        event.version = int(after["version"])
        event.lease = int(after["lease"])
    elif op is Op.DELETE:
        # etcd's delete event: the deleted key at the revision of the delete, no more.
        event.mod_revision = revision
    omitted_value = None if after is None else after.get("omitted_bytes")
    omitted_prev = None if before is None else before.get("omitted_bytes")
    if omitted_value is not None or omitted_prev is not None:
        event.omitted_bytes = OmittedBytes.from_dict(
            {"value": omitted_value, "prev_value": omitted_prev}
        )
    if before is not None:
        event.prev_value = extract_fields(before, _VALUE, mode=values)["value"]
        event.prev_create_revision = int(before["create_revision"])
        event.prev_mod_revision = int(before["mod_revision"])
        event.prev_version = int(before["version"])
        event.prev_lease = int(before["lease"])
    return event


def _row_template() -> dict[str, Any]:
    row: dict[str, Any] = {"key": "", "value": "", "create_revision": 0, "mod_revision": 0}
    row.update(version=0, lease=0)
    return row


def _wrap(payload: dict[str, Any], schema: orjson.Fragment | None) -> dict[str, Any]:
    """``payload`` as JsonConverter writes it with ``schemas.enable=true`` (if ``schema``)."""
    return payload if schema is None else {"schema": schema, "payload": payload}


class ConnectSchemas:
    """Kafka Connect's JSON schemas (JsonConverter, ``schemas.enable=true``) of the records:
    ``envelope`` of a change, ``message`` of a marker, ``key`` and ``marker_key`` of the
    record keys. Optional fields a record has no value for may be absent from its payload:
    JsonConverter reads an absent optional field as null."""

    def __init__(self, context: FormatContext) -> None:
        base = f"{context.cluster}.{context.pipeline}"
        value = (
            _field("value", "string", optional=True, name="io.debezium.data.Json", version=1)
            if context.values is ValuesMode.JSON
            else _field("value", "string", optional=True)
        )
        row = _struct(
            [
                _field("key", "string"),
                value,
                _field("create_revision", "int64"),
                _field("mod_revision", "int64"),
                _field("version", "int64"),
                _field("lease", "int64"),
                _field("omitted_bytes", "int64", optional=True),
                _names("b64"),
                _names("raw"),
            ],
            name=f"{base}.Value",
        )
        source = _struct(
            [
                _field("version", "string"),
                _field("connector", "string"),
                _field("name", "string"),
                _field("ts_ms", "int64"),
                _field(
                    "snapshot",
                    "string",
                    optional=True,
                    name="io.debezium.data.Enum",
                    version=1,
                    parameters={"allowed": "true,first,last,false"},
                    default="false",
                ),
                _field("db", "string"),
                _field("cluster", "string"),
                _field("prefix", "string"),
                _field("revision", "int64"),
                _field("index", "int64"),
                _field("reason", "string", optional=True),
                _field("key", "string", optional=True),
                _names("b64"),
            ],
            name="etcd_bridge.Source",
        )
        transaction = _struct(
            [
                _field("id", "string"),
                _field("total_order", "int64"),
                _field("data_collection_order", "int64"),
            ],
            name="event.block",
            optional=True,
            version=1,
        )
        self.envelope = _struct(
            [
                {**row, "optional": True, "field": "before"},
                {**row, "optional": True, "field": "after"},
                {**source, "field": "source"},
                _field("op", "string"),
                _field("ts_ms", "int64", optional=True),
                {**transaction, "field": "transaction"},
            ],
            name=f"{base}.Envelope",
            version=1,
        )
        content = _struct(
            [
                _field("revision", "int64"),
                _field("index", "int64"),
                _field("type", "string"),
                _field("op", "string"),
                _field("key", "string"),
                _field("value", "string", optional=True),
                _field("prev_value", "string", optional=True),
                _field("mod_revision", "int64"),
                _field("create_revision", "int64"),
                _field("version", "int64"),
                _field("lease", "int64"),
                _field("reason", "string", optional=True),
                _field("more", "boolean", optional=True),
                _names("b64"),
            ],
            name="etcd_bridge.Event",
        )
        message = _struct(
            [_field("prefix", "string"), {**content, "field": "content"}],
            name="etcd_bridge.Message",
        )
        self.message = _struct(
            [
                _field("op", "string"),
                _field("ts_ms", "int64", optional=True),
                {**source, "field": "source"},
                {**message, "field": "message"},
            ],
            name="etcd_bridge.MessageValue",
        )
        self.key = _struct([_field("key", "string"), _names("b64")], name=f"{base}.Key")
        self.marker_key = _struct([_field("marker", "string")], name=f"{base}.MarkerKey")


def _field(field: str, kind: str, *, optional: bool = False, **extra: Any) -> dict[str, Any]:
    """A field of a struct; ``extra``: ``name``, ``version``, ``parameters``, ``default``."""
    return {"type": kind, "optional": optional, **extra, "field": field}


def _names(field: str) -> dict[str, Any]:
    """An optional list of field names (``b64``, ``raw``)."""
    return {
        "type": "array",
        "items": {"type": "string", "optional": False},
        "optional": True,
        "field": field,
    }


def _struct(
    fields: list[dict[str, Any]], *, name: str, optional: bool = False, **extra: Any
) -> dict[str, Any]:
    return {"type": "struct", "fields": fields, "optional": optional, "name": name, **extra}
