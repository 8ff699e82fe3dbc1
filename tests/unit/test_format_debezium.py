"""The Debezium format: the envelope of every op, snapshot flags, markers, record keys, binary
and JSON values, the Kafka Connect schemas, and decoding every record back."""

import importlib.metadata
import sys
import threading
import time
from typing import Any

import orjson
import pytest

from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker, values_omitted
from bridge.formats import FormatContext, build_format
from bridge.formats.debezium import DebeziumFormat
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings, ValuesMode

PREFIX = b"/app/"
LEASE = 0x1234ABCD5678


def context(values: ValuesMode = ValuesMode.BYTES) -> FormatContext:
    return FormatContext(
        pipeline="orders", cluster="prod-1", keyspace=KeySpace.of([PREFIX]), values=values
    )


def debezium(*, values: ValuesMode = ValuesMode.BYTES, schemas: bool = False) -> DebeziumFormat:
    output = OutputSettings(format=FormatName.DEBEZIUM, debezium_schemas=schemas)
    built = build_format(output, context=context(values))
    assert isinstance(built, DebeziumFormat)
    return built


def create(key: bytes = b"/app/a", value: bytes = b"1", *, revision: int = 5) -> Event:
    return Event(
        revision=revision,
        index=0,
        type=EventType.PUT,
        op=Op.CREATE,
        key=key,
        value=value,
        mod_revision=revision,
        create_revision=revision,
        version=1,
        lease=LEASE,
    )


def update(key: bytes = b"/app/a", value: bytes = b"2", prev: bytes | None = b"1") -> Event:
    return Event(
        revision=7,
        index=0,
        type=EventType.PUT,
        op=Op.UPDATE,
        key=key,
        value=value,
        prev_value=prev,
        mod_revision=7,
        create_revision=5,
        version=2,
        lease=0,
        prev_mod_revision=5 if prev is not None else 0,
        prev_create_revision=5 if prev is not None else 0,
        prev_version=1 if prev is not None else 0,
        prev_lease=LEASE if prev is not None else 0,
    )


def delete(key: bytes = b"/app/a", prev: bytes | None = b"2") -> Event:
    return Event(
        revision=8,
        index=0,
        type=EventType.DELETE,
        op=Op.DELETE,
        key=key,
        prev_value=prev,
        mod_revision=8,
        prev_mod_revision=7 if prev is not None else 0,
        prev_create_revision=5 if prev is not None else 0,
        prev_version=2 if prev is not None else 0,
    )


def snapshot(keys: int, *, revision: int = 20) -> list[Event]:
    """A whole snapshot: begin marker, ``keys`` keys, end marker."""
    reason = SnapshotReason.COMPACTED
    events = [
        snapshot_marker(
            revision=revision, index=0, op=Op.SNAPSHOT_BEGIN, prefix=PREFIX, reason=reason
        )
    ]
    for index in range(1, keys + 1):
        events.append(
            Event(
                revision=revision,
                index=index,
                type=EventType.PUT,
                op=Op.SNAPSHOT,
                key=b"/app/k%d" % index,
                value=b"v%d" % index,
                mod_revision=3 + index,
                create_revision=3,
                version=index,
                lease=0,
                opens_snapshot=index == 1,
                closes_snapshot=index == keys,
            )
        )
    events.append(
        snapshot_marker(
            revision=revision,
            index=keys + 1,
            op=Op.SNAPSHOT_END,
            prefix=PREFIX,
            reason=reason,
        )
    )
    return events


def transaction() -> list[Event]:
    """Three changes of one revision, as the watch numbers them."""
    events = [update(b"/app/t%d" % index, b"new", b"old") for index in range(3)]
    for index, event in enumerate(events):
        event.revision = event.mod_revision = 30
        event.index = index
        event.more = index < 2
    return events


def payload_of(record: bytes) -> dict[str, Any]:
    document = orjson.loads(record)
    assert isinstance(document, dict)
    return document


# -- the envelope ---------------------------------------------------------------------------


def test_create_has_an_after_row_and_no_before() -> None:
    before_ms = time.time_ns() // 1_000_000
    document = payload_of(debezium().encode(create()))
    after_ms = time.time_ns() // 1_000_000
    assert list(document) == ["before", "after", "source", "op", "ts_ms", "transaction"]
    assert document["op"] == "c"
    assert document["before"] is None
    assert document["transaction"] is None
    assert document["after"] == {
        "key": "/app/a",
        "value": "1",
        "create_revision": 5,
        "mod_revision": 5,
        "version": 1,
        "lease": LEASE,
    }
    assert before_ms <= document["ts_ms"] <= after_ms
    assert document["source"] == {
        "version": importlib.metadata.version("etcd-bridge"),
        "connector": "etcd",
        "name": "orders",
        "ts_ms": document["ts_ms"],
        "snapshot": "false",
        "db": "prod-1",
        "cluster": "prod-1",
        "prefix": "/app/",
        "revision": 5,
        "index": 0,
        "reason": None,
    }


def test_update_carries_the_whole_prev_kv_as_before() -> None:
    document = payload_of(debezium().encode(update()))
    assert document["op"] == "u"
    assert document["before"] == {
        "key": "/app/a",
        "value": "1",
        "create_revision": 5,
        "mod_revision": 5,
        "version": 1,
        "lease": LEASE,
    }
    assert document["after"] == {
        "key": "/app/a",
        "value": "2",
        "create_revision": 5,
        "mod_revision": 7,
        "version": 2,
        "lease": 0,
    }
    assert document["source"]["revision"] == 7


def test_delete_has_the_full_before_row_and_no_after() -> None:
    document = payload_of(debezium().encode(delete()))
    assert document["op"] == "d"
    assert document["after"] is None
    assert document["before"] == {
        "key": "/app/a",
        "value": "2",
        "create_revision": 5,
        "mod_revision": 7,
        "version": 2,
        "lease": 0,
    }
    assert "key" not in document["source"], "the before row names the key"


def test_before_is_null_when_etcd_sent_no_prev_kv() -> None:
    updated = payload_of(debezium().encode(update(prev=None)))
    assert updated["op"] == "u"
    assert updated["before"] is None
    assert updated["after"]["value"] == "2"
    deleted = payload_of(debezium().encode(delete(b"/app/\xff", prev=None)))
    assert deleted["op"] == "d"
    assert deleted["before"] is None
    assert deleted["after"] is None
    assert deleted["source"]["key"] == "L2FwcC//", "only the source block can name the key"
    assert deleted["source"]["b64"] == ["key"]


def test_the_update_before_row_equals_the_row_the_previous_change_left() -> None:
    """What Flink's retraction needs: the ``before`` of a change is exactly the ``after`` of
    the key's previous change."""
    format_ = debezium()
    created = payload_of(format_.encode(create()))
    updated = payload_of(format_.encode(update()))
    deleted = payload_of(format_.encode(delete()))
    assert updated["before"] == created["after"]
    assert deleted["before"] == updated["after"]


def test_snapshot_flags_first_true_last_and_false() -> None:
    format_ = debezium()
    records = [payload_of(format_.encode(event)) for event in snapshot(3)]
    assert [record["op"] for record in records] == ["m", "r", "r", "r", "m"]
    assert [record["source"]["snapshot"] for record in records] == [
        "true",
        "first",
        "true",
        "last",
        "true",
    ]
    reads = records[1:-1]
    assert all(record["before"] is None for record in reads)
    assert [record["after"]["key"] for record in reads] == ["/app/k1", "/app/k2", "/app/k3"]
    assert {record["source"]["revision"] for record in records} == {20}
    assert [record["source"]["index"] for record in records] == [0, 1, 2, 3, 4]
    assert payload_of(format_.encode(update()))["source"]["snapshot"] == "false"


def test_a_one_key_snapshot_is_last() -> None:
    format_ = debezium()
    only = snapshot(1)[1]
    assert only.index == 1 and only.closes_snapshot
    assert payload_of(format_.encode(only))["source"]["snapshot"] == "last"


def test_snapshot_records_carry_their_reason() -> None:
    event = snapshot(2)[1]
    event.reason = SnapshotReason.COMPACTED
    document = payload_of(debezium().encode(event))
    assert document["source"]["reason"] == "compacted"
    assert debezium().decode(debezium().encode(event)).reason is SnapshotReason.COMPACTED


def test_a_transaction_keeps_its_positions_and_no_transaction_block() -> None:
    format_ = debezium()
    records = [payload_of(record) for record in format_.encode_lines(transaction()).splitlines()]
    assert [(r["source"]["revision"], r["source"]["index"]) for r in records] == [
        (30, 0),
        (30, 1),
        (30, 2),
    ]
    assert all(record["transaction"] is None for record in records)
    assert all("more" not in record and "more" not in record["source"] for record in records)


@pytest.mark.parametrize("batched", ["encode_lines", "encode_batch"])
def test_a_batch_matches_encode_but_for_the_time(batched: str) -> None:
    format_ = debezium()
    events = [create(), update(), delete(), *snapshot(2), *transaction()]
    if batched == "encode_lines":
        lines = format_.encode_lines(events)
        assert lines.endswith(b"\n")
        encoded = lines.splitlines()
    else:
        encoded = format_.encode_batch(events)
    records = [payload_of(record) for record in encoded]
    assert len(records) == len(events)
    assert len({record["ts_ms"] for record in records}) == 1, "one clock read per batch"
    for record, event in zip(records, events, strict=True):
        alone = payload_of(format_.encode(event))
        for document in (record, alone):
            document["ts_ms"] = document["source"]["ts_ms"] = 0
        assert record == alone


@pytest.mark.parametrize("schemas", [False, True], ids=["plain", "schemas"])
def test_the_fast_path_writes_what_the_general_path_writes(schemas: bool) -> None:
    """``encode`` splices pre-serialized fragments into a flat template record for speed; the
    bytes must be those of the envelope built by the book (``_change``)."""
    format_ = debezium(schemas=schemas)
    one_key = snapshot(1, revision=21)[1]
    one_key.reason = SnapshotReason.INITIAL
    events = [create(), update(), delete(), *snapshot(3), one_key, *transaction()]
    for event in events:
        if event.type is EventType.MARKER:
            continue
        record = format_.encode(event)
        document = payload_of(record)
        payload = document["payload"] if schemas else document
        code = {Op.CREATE: "c", Op.UPDATE: "u", Op.DELETE: "d", Op.SNAPSHOT: "r"}[event.op]
        general = format_._change(event, code, payload["ts_ms"])
        if schemas:
            general = {"schema": document["schema"], "payload": general}
        assert record == orjson.dumps(general)


# -- markers and record keys ----------------------------------------------------------------


def test_markers_are_message_events_holding_the_native_marker() -> None:
    begin, *_, end = snapshot(2)
    for marker in (begin, end):
        document = payload_of(debezium().encode(marker))
        assert list(document) == ["op", "ts_ms", "source", "message"]
        assert document["op"] == "m"
        assert document["source"]["snapshot"] == "true"
        assert document["source"]["reason"] == "compacted"
        assert (document["source"]["revision"], document["source"]["index"]) == (
            marker.revision,
            marker.index,
        )
        assert document["message"] == {"prefix": "etcd-bridge", "content": marker.to_dict()}
        assert document["message"]["content"]["op"] == marker.op.value


def test_keyed_records_of_markers_have_no_value_and_a_marker_key() -> None:
    begin = snapshot(1)[0]
    for format_ in (debezium(), debezium(schemas=True)):
        assert format_.record_value(begin) is None
        assert format_.record_value(update()) is not None
    assert debezium().record_key(begin) == b'{"marker":"/app/"}'
    wrapped = payload_of(debezium(schemas=True).record_key(begin))
    assert wrapped["payload"] == {"marker": "/app/"}
    conforms(wrapped["schema"], wrapped["payload"])


def test_record_keys_have_debeziums_key_shape() -> None:
    assert debezium().record_key(update()) == b'{"key":"/app/a"}'
    assert payload_of(debezium().record_key(update(b"/app/\xfe"))) == {
        "key": "L2FwcC/+",
        "b64": ["key"],
    }
    for key in (b"/app/a", b"/app/\xfe"):
        wrapped = payload_of(debezium(schemas=True).record_key(update(key)))
        assert set(wrapped) == {"schema", "payload"}
        assert wrapped["payload"] == payload_of(debezium().record_key(update(key)))
        assert wrapped["schema"]["name"] == "prod-1.orders.Key"
        conforms(wrapped["schema"], wrapped["payload"])


def test_record_value_is_the_encoded_change() -> None:
    format_ = debezium()
    value = format_.record_value(update())
    assert value is not None
    document = payload_of(value)
    document["ts_ms"] = document["source"]["ts_ms"] = 0
    alone = payload_of(format_.encode(update()))
    alone["ts_ms"] = alone["source"]["ts_ms"] = 0
    assert document == alone


# -- binary and JSON values -----------------------------------------------------------------


def test_binary_keys_and_values_are_base64_and_named_in_the_row() -> None:
    document = payload_of(debezium().encode(update(b"/app/\xff", b"\x00\xfe", b"ok")))
    assert document["after"]["key"] == "L2FwcC//"
    assert document["after"]["value"] == "AP4="
    assert document["after"]["b64"] == ["key", "value"]
    assert document["before"]["value"] == "ok"
    assert document["before"]["b64"] == ["key"]
    plain = payload_of(debezium().encode(update()))
    assert "b64" not in plain["after"] and "raw" not in plain["after"]


def test_json_values_are_embedded_and_other_values_named_raw() -> None:
    format_ = debezium(values=ValuesMode.JSON)
    cases = {
        b'{"replicas": 3, "labels": ["a"]}': ({"replicas": 3, "labels": ["a"]}, {}),
        b'"abc"': ("abc", {}),
        b"abc": ("abc", {"raw": ["value"]}),
        b"null": ("null", {"raw": ["value"]}),
        b"\xff\x00": ("/wA=", {"b64": ["value"]}),
    }
    for raw, (embedded, lists) in cases.items():
        after = payload_of(format_.encode(update(value=raw)))["after"]
        assert after["value"] == embedded, raw
        assert {name: after[name] for name in ("b64", "raw") if name in after} == lists, raw
    before = payload_of(format_.encode(update(value=b"1", prev=b"[1, 2]")))["before"]
    assert before["value"] == [1, 2]
    keyed = payload_of(format_.encode(update(b"/app/\xff", b"plain")))["after"]
    assert keyed["b64"] == ["key"] and keyed["raw"] == ["value"]


def test_json_values_with_schemas_travel_as_json_text() -> None:
    """Kafka Connect's schemas cannot type an arbitrary JSON value: as Debezium does with
    JSON columns, it is a string named ``io.debezium.data.Json``."""
    format_ = debezium(values=ValuesMode.JSON, schemas=True)
    document = payload_of(format_.encode(update(value=b'{"a": [1, 2]}', prev=b"text")))
    assert document["payload"]["after"]["value"] == '{"a": [1, 2]}'
    assert "raw" not in document["payload"]["after"]
    assert document["payload"]["before"]["value"] == "text"
    assert document["payload"]["before"]["raw"] == ["value"]
    after_schema = field_schema(document["schema"], "after")
    assert field_schema(after_schema, "value")["name"] == "io.debezium.data.Json"
    conforms(document["schema"], document["payload"])


# -- the Kafka Connect schemas --------------------------------------------------------------


def every_event() -> list[Event]:
    return [
        create(),
        update(),
        delete(),
        update(prev=None),
        delete(prev=None),
        delete(b"/app/\xff", prev=None),
        update(b"/app/\xff", b"\x00\xfe", b"\xfe"),
        update(value=b'{"a": 1}', prev=b"null"),
        *snapshot(3),
        *snapshot(1, revision=21),
        *transaction(),
        values_omitted(create()),
        values_omitted(update()),
        values_omitted(update(prev=None)),
        values_omitted(delete()),
    ]


def conforms(schema: dict[str, Any], value: Any, path: str = "$") -> None:
    """Fail unless ``value`` is what Kafka Connect's JsonConverter accepts for ``schema``
    (``convertToConnect``): every payload field is a schema field, an absent or null field is
    optional, and every value has the schema's type. Checks the schema's own shape too."""
    assert {"type", "optional"} <= set(schema), f"{path}: {schema}"
    if value is None:
        assert schema["optional"] or "default" in schema, f"{path} is required"
        return
    kind = schema["type"]
    if kind == "struct":
        assert isinstance(value, dict), path
        names = [field["field"] for field in schema["fields"]]
        assert len(names) == len(set(names)), f"{path}: duplicate fields"
        assert set(value) <= set(names), f"{path}: {set(value) - set(names)} not in the schema"
        for field in schema["fields"]:
            conforms(field, value.get(field["field"]), f"{path}.{field['field']}")
    elif kind == "array":
        assert isinstance(value, list), path
        for item in value:
            conforms(schema["items"], item, f"{path}[]")
    elif kind == "string":
        assert isinstance(value, str), path
    elif kind == "int64":
        assert isinstance(value, int) and not isinstance(value, bool), path
        assert -(2**63) <= value < 2**63, path
    elif kind == "boolean":
        assert isinstance(value, bool), path
    else:
        pytest.fail(f"{path}: a type this test does not know: {kind}")


def field_schema(struct: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [field for field in struct["fields"] if field["field"] == name]
    return found


@pytest.mark.parametrize("values", list(ValuesMode))
def test_every_wrapped_record_conforms_to_its_schema(values: ValuesMode) -> None:
    plain, wrapped = debezium(values=values), debezium(values=values, schemas=True)
    for event in every_event():
        document = payload_of(wrapped.encode(event))
        assert list(document) == ["schema", "payload"]
        schema, payload = document["schema"], document["payload"]
        conforms(schema, payload)
        if event.type is EventType.MARKER:
            assert schema["name"] == "etcd_bridge.MessageValue"
            assert [field["field"] for field in schema["fields"]] == list(payload)
        else:
            assert schema["name"] == "prod-1.orders.Envelope"
            assert [field["field"] for field in schema["fields"]] == list(payload)
            row_fields = [field["field"] for field in field_schema(schema, "after")["fields"]]
            for row in (payload["before"], payload["after"]):
                if row is not None:
                    assert [name for name in row_fields if name in row] == list(row)
                    assert set(row_fields) - set(row) <= {"omitted_bytes", "b64", "raw"}
        unwrapped = payload_of(plain.encode(event))
        for one in (payload, unwrapped):
            one["ts_ms"] = one["source"]["ts_ms"] = 0
        if values is ValuesMode.BYTES:
            assert payload == unwrapped, "the payload is the unwrapped record"


def test_the_envelope_schema_is_debeziums() -> None:
    schema = payload_of(debezium(schemas=True).encode(update()))["schema"]
    assert schema["type"] == "struct" and schema["optional"] is False
    assert [(f["field"], f["type"], f["optional"]) for f in schema["fields"]] == [
        ("before", "struct", True),
        ("after", "struct", True),
        ("source", "struct", False),
        ("op", "string", False),
        ("ts_ms", "int64", True),
        ("transaction", "struct", True),
    ]
    snapshot_field = field_schema(field_schema(schema, "source"), "snapshot")
    assert snapshot_field["name"] == "io.debezium.data.Enum"
    assert set(snapshot_field["parameters"]["allowed"].split(",")) == {
        "true",
        "first",
        "last",
        "false",
    }
    assert field_schema(schema, "transaction")["name"] == "event.block"


# -- decoding -------------------------------------------------------------------------------


def same_event(decoded: Event, event: Event, *, values: ValuesMode) -> None:
    """Field by field, as far as the format carries them (``more`` it does not)."""
    assert decoded.position == event.position
    assert (decoded.type, decoded.op, decoded.key, decoded.reason) == (
        event.type,
        event.op,
        event.key,
        event.reason,
    )
    assert (decoded.mod_revision, decoded.create_revision, decoded.version, decoded.lease) == (
        event.mod_revision,
        event.create_revision,
        event.version,
        event.lease,
    )
    if event.type is EventType.MARKER:
        return
    assert decoded.closes_snapshot == event.closes_snapshot
    # One flag per record: a one-key snapshot's only key is "last", not "first".
    assert decoded.opens_snapshot == (event.opens_snapshot and not event.closes_snapshot)
    prev = (event.prev_mod_revision, event.prev_create_revision, event.prev_version)
    assert (decoded.prev_mod_revision, decoded.prev_create_revision, decoded.prev_version) == prev
    assert decoded.prev_lease == event.prev_lease
    for got, sent in ((decoded.value, event.value), (decoded.prev_value, event.prev_value)):
        if values is ValuesMode.BYTES or got is None or sent is None:
            assert got == sent
        else:  # an embedded JSON value keeps its meaning, not its bytes
            assert got == sent or orjson.loads(got) == orjson.loads(sent)


@pytest.mark.parametrize("schemas", [False, True])
@pytest.mark.parametrize("values", list(ValuesMode))
def test_decode_reads_every_record_back(values: ValuesMode, schemas: bool) -> None:
    format_ = debezium(values=values, schemas=schemas)
    for event in every_event():
        for record in (format_.encode(event), *format_.encode_lines([event]).splitlines()):
            decoded = format_.decode(record)
            same_event(decoded, event, values=values)
            if values is ValuesMode.BYTES or schemas:
                assert decoded == event, "bytes exact"


def test_decode_reads_both_wrapped_and_unwrapped_records() -> None:
    plain, wrapped = debezium(), debezium(schemas=True)
    for event in every_event():
        assert plain.decode(wrapped.encode(event)) == event
        assert wrapped.decode(plain.encode(event)) == event


def test_decode_is_bytes_exact_for_binary_keys_and_values() -> None:
    event = update(b"/app/\x00\xff", bytes(range(256)), b"\xc3\x28")
    for format_ in (debezium(), debezium(schemas=True), debezium(values=ValuesMode.JSON)):
        decoded = format_.decode(format_.encode(event))
        assert (decoded.key, decoded.value, decoded.prev_value) == (
            event.key,
            event.value,
            event.prev_value,
        )


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[1, 2]",
        b"null",
        b"{}",
        create().to_json(),
        b'{"schema": {}, "payload": {"op": "c"}}',
    ],
)
def test_decode_refuses_what_is_not_a_record_of_this_format(record: bytes) -> None:
    with pytest.raises(ValueError):
        debezium().decode(record)


def edited(event: Event, edit: Any) -> bytes:
    document = payload_of(debezium().encode(event))
    edit(document)
    return orjson.dumps(document)


@pytest.mark.parametrize(
    ("event", "edit"),
    [
        (update(), lambda d: d.update(op="x")),
        (update(), lambda d: d["source"].update(connector="mysql")),
        (update(), lambda d: d["source"].update(snapshot="maybe")),
        (update(), lambda d: d["source"].pop("revision")),
        (update(), lambda d: d["after"].pop("version")),
        (update(), lambda d: d.update(after=None)),
        (create(), lambda d: d.update(before=d["after"])),
        (delete(), lambda d: d.update(after=d["before"])),
        (delete(prev=None), lambda d: d["source"].pop("key")),
        (snapshot(1)[0], lambda d: d["source"].update(index=5)),
        (snapshot(1)[0], lambda d: d["message"]["content"].update(type="PUT")),
    ],
)
def test_decode_refuses_damaged_records(event: Event, edit: Any) -> None:
    with pytest.raises(ValueError):
        debezium().decode(edited(event, edit))


# -- threads and construction ----------------------------------------------------------------


def test_threads_encoding_at_once_get_their_own_records() -> None:
    """The fast path fills per-thread templates: concurrent encoders must not mix them."""
    format_ = debezium()
    failures: list[str] = []

    def encode_many(number: int) -> None:
        events = [update(b"/app/%d/%d" % (number, i), b"v%d" % i, b"p") for i in range(3000)]
        for event in events:
            if format_.decode(format_.encode(event)) != event:
                failures.append(f"thread {number}: {event}")
        lines = format_.encode_lines(events).splitlines()
        if [format_.decode(line) for line in lines] != events:
            failures.append(f"thread {number}: a batch")

    threads = [
        threading.Thread(target=encode_many, args=(n,), name=f"encoder-{n}") for n in range(4)
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython can: mid-record
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures


def test_build_format_builds_debezium() -> None:
    assert isinstance(
        build_format(OutputSettings(format=FormatName.DEBEZIUM), context=context()),
        DebeziumFormat,
    )


def test_a_binary_prefix_is_readable_in_the_source_block() -> None:
    binary = FormatContext(pipeline="p", cluster="c", keyspace=KeySpace.of([b"/a\xff/", b"/b/"]))
    format_ = DebeziumFormat(binary, OutputSettings(format=FormatName.DEBEZIUM))
    document = payload_of(format_.encode(create(b"/b/x")))
    assert document["source"]["prefix"] == "/a\\xff/,/b/"


@pytest.mark.parametrize("with_marker", [False, True], ids=["changes", "with a marker"])
def test_record_values_are_each_events_record_value(with_marker: bool) -> None:
    """The Kafka sink's values of a batch: ``encode_batch``'s records, with one clock read,
    but a marker's value is left out (None) as ``record_value`` leaves it out."""
    format_ = debezium()
    events = [create(), update(), delete(), *transaction()]
    if with_marker:
        events = snapshot(2)[:1] + events
    values = format_.record_values(events)
    assert len(values) == len(events)
    for value, event in zip(values, events, strict=True):
        alone = format_.record_value(event)
        if alone is None:
            assert value is None
            continue
        assert value is not None
        documents = [payload_of(value), payload_of(alone)]
        for document in documents:
            document["ts_ms"] = document["source"]["ts_ms"] = 0
        assert documents[0] == documents[1]
    assert (None in values) is with_marker
