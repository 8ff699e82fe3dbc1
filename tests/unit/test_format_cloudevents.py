"""The cloudevents format (docs/formats.md): every record read back with the CloudEvents SDK,
in both content modes, and by our own decoder."""

import base64
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote, urlsplit

import orjson
import pytest
from cloudevents.core.base import BaseCloudEvent

from bridge.events import (
    Event,
    EventType,
    OmittedBytes,
    Op,
    Position,
    SnapshotReason,
    snapshot_marker,
    values_omitted,
)
from bridge.formats import FormatContext, build_format
from bridge.formats.cloudevents import CloudEventsFormat, is_cloudevents_string
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings, ValuesMode
from tests.formats.cloudevents_consumer import (
    change_of,
    from_kafka,
    from_structured,
    read_kafka,
    read_structured,
)
from tests.formats.fields import canonical_json

PIPELINE = "orders"
CLUSTER = "prod-eu"
PREFIX = b"/app/"
SOURCE = "etcd://prod-eu//app/"


def cloudevents(
    values: ValuesMode = ValuesMode.BYTES, *, prefixes: tuple[bytes, ...] = (PREFIX,)
) -> CloudEventsFormat:
    context = FormatContext(
        pipeline=PIPELINE, cluster=CLUSTER, keyspace=KeySpace.of(prefixes), values=values
    )
    built = build_format(OutputSettings(format=FormatName.CLOUDEVENTS), context=context)
    assert isinstance(built, CloudEventsFormat)
    return built


def put(revision: int, key: bytes, value: bytes, **fields: object) -> Event:
    return Event(
        revision=revision,
        index=fields.pop("index", 0),  # type: ignore[arg-type]
        type=EventType.PUT,
        op=Op.CREATE,
        key=key,
        value=value,
        mod_revision=revision,
        create_revision=revision,
        version=1,
        **fields,  # type: ignore[arg-type]
    )


def update(revision: int, key: bytes, value: bytes, prev: bytes, **fields: object) -> Event:
    return Event(
        revision=revision,
        index=fields.pop("index", 0),  # type: ignore[arg-type]
        type=EventType.PUT,
        op=Op.UPDATE,
        key=key,
        value=value,
        prev_value=prev,
        mod_revision=revision,
        create_revision=3,
        version=2,
        lease=7587,
        prev_mod_revision=3,
        prev_create_revision=3,
        prev_version=1,
        prev_lease=7586,
        **fields,  # type: ignore[arg-type]
    )


def delete(revision: int, key: bytes, prev: bytes | None, **fields: object) -> Event:
    return Event(
        revision=revision,
        index=fields.pop("index", 0),  # type: ignore[arg-type]
        type=EventType.DELETE,
        op=Op.DELETE,
        key=key,
        prev_value=prev,
        mod_revision=revision,
        prev_mod_revision=4 if prev is not None else 0,
        prev_create_revision=3 if prev is not None else 0,
        prev_version=2 if prev is not None else 0,
        **fields,  # type: ignore[arg-type]
    )


def snapshot(revision: int, index: int, key: bytes, value: bytes) -> Event:
    return Event(revision, index, EventType.PUT, Op.SNAPSHOT, key, value, None, 5, 4, 2, 0)


def begin(revision: int, *, prefix: bytes = PREFIX) -> Event:
    return snapshot_marker(
        revision=revision,
        index=0,
        op=Op.SNAPSHOT_BEGIN,
        prefix=prefix,
        reason=SnapshotReason.INITIAL,
    )


def end(revision: int, index: int) -> Event:
    return snapshot_marker(
        revision=revision,
        index=index,
        op=Op.SNAPSHOT_END,
        prefix=PREFIX,
        reason=SnapshotReason.COMPACTED,
    )


EVENTS = {
    "create": put(5, b"/app/a", b"1"),
    "update": update(6, b"/app/a", b"2", b"1"),
    "delete": delete(7, b"/app/a", b"2"),
    "delete without prev_kv": delete(8, b"/app/b", None),
    "snapshot": snapshot(9, 1, b"/app/a", b"2"),
    "snapshot_begin": begin(9),
    "snapshot_end": end(9, 2),
    "txn first": update(10, b"/app/a", b"3", b"2", index=0, more=True),
    "txn middle": put(10, b"/app/c", b"x", index=1, more=True),
    "txn last": delete(10, b"/app/b", b"y", index=2),
    "binary key": put(11, b"/app/\xff\xfe", b"v"),
    "binary value": update(12, b"/app/a", b"\x00\xff", b"\x80"),
    "control character in key": put(13, b"/app/line\nbreak", b"v"),
    "DEL in key": put(14, b"/app/\x7f", b"v"),
    "noncharacter in key": put(15, "/app/\U0001ffff".encode(), b"v"),
    "C1 control in key": put(16, "/app/\x85".encode(), b"v"),
    "quotes and backslashes": update(17, b'/app/"q"\\', b'{"a": "\\n"}', b'"'),
    "non-ASCII key and value": put(18, "/app/grüße/日本".encode(), "ünïcödé".encode()),
    "valid but not printable key": put(19, "/app/no\u00a0break\u200djoin".encode(), b"v"),
    "empty value": put(20, b"/app/e", b""),
    "revision past 2^31": update(3_000_000_000, b"/app/a", b"4", b"3", index=4),
    "lease": put(21, b"/app/l", b"v", lease=0x694D_8F5A_1234_0001),
    "value omitted": values_omitted(put(22, b"/app/big", b"x" * 100)),
    "values omitted": values_omitted(update(23, b"/app/big", b"x" * 100, b"y" * 50)),
    "prev_value omitted": values_omitted(delete(24, b"/app/big", b"y" * 50)),
}
TRANSACTION = ("txn first", "txn middle", "txn last")


def key_subject(key: bytes) -> tuple[str, bool]:
    """The subject docs/formats.md promises for ``key``: its text, or base64 and flagged."""
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return base64.b64encode(key).decode(), True
    forbidden = [
        char
        for char in text
        if ord(char) < 0x20
        or 0x7F <= ord(char) <= 0x9F
        or 0xFDD0 <= ord(char) <= 0xFDEF
        or ord(char) & 0xFFFE == 0xFFFE
    ]
    return (base64.b64encode(key).decode(), True) if forbidden else (text, False)


def expected_id(event: Event) -> str:
    snapshot_family = event.op in (Op.SNAPSHOT, Op.SNAPSHOT_BEGIN, Op.SNAPSHOT_END)
    return f"{PIPELINE}:{event.revision}-{'s' if snapshot_family else ''}{event.index}"


def check_attributes(sdk_event: BaseCloudEvent, event: Event) -> None:
    """The attributes of docs/formats.md, as the SDK read them."""
    assert sdk_event.get_specversion() == "1.0"
    assert sdk_event.get_id() == expected_id(event)
    assert sdk_event.get_source() == SOURCE
    assert sdk_event.get_type() == f"io.etcd.bridge.{event.op.value}"
    assert sdk_event.get_datacontenttype() == "application/json"
    subject, is_base64 = key_subject(event.key)
    assert sdk_event.get_subject() == subject
    assert sdk_event.get_extension("keyencoding") == ("base64" if is_base64 else None)
    # Binary mode carries every attribute as its canonical string.
    assert str(sdk_event.get_extension("revision")) == str(event.revision)
    assert str(sdk_event.get_extension("index")) == str(event.index)
    assert sdk_event.get_extension("pipeline") == PIPELINE
    reason = None if event.reason is None else event.reason.value
    assert sdk_event.get_extension("reason") == reason
    omitted = event.omitted_bytes or OmittedBytes(value=None, prev_value=None)
    for name, size in (("omittedbytes", omitted.value), ("omittedprevbytes", omitted.prev_value)):
        found = sdk_event.get_extension(name)
        assert (None if found is None else str(found)) == (None if size is None else str(size))
    stamp = sdk_event.get_time()
    assert stamp is not None and stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


def had_prev(event: Event) -> bool:
    """Whether etcd sent a previous value: carried, or left out (then its size is said)."""
    omitted = event.omitted_bytes
    return event.prev_value is not None or (omitted is not None and omitted.prev_value is not None)


def check_data(data: object, event: Event) -> None:
    """``data`` with ``values=bytes``: every field of docs/formats.md, bytes exact."""
    assert isinstance(data, dict)
    encoded = set(data.get("b64", ()))
    for name in ("key", "value", "prev_value"):
        raw = getattr(event, name)
        if raw is None:
            assert data[name] is None
        elif name in encoded:
            assert base64.b64decode(data[name]) == raw
        else:
            assert data[name].encode() == raw
    assert data["create_revision"] == event.create_revision
    assert data["mod_revision"] == event.mod_revision
    assert data["version"] == event.version
    assert data["lease"] == event.lease
    prev_fields = ("prev_create_revision", "prev_mod_revision", "prev_version", "prev_lease")
    if event.op in (Op.UPDATE, Op.DELETE) and had_prev(event):
        assert [data[name] for name in prev_fields] == [getattr(event, n) for n in prev_fields]
    else:
        assert not set(prev_fields) & set(data)
    assert data.get("more", False) is event.more
    assert "raw" not in data


@pytest.mark.parametrize("name", EVENTS)
def test_structured_record_reads_back_with_the_sdk(name: str) -> None:
    event = EVENTS[name]
    record = cloudevents().encode(event)
    document = orjson.loads(record)
    assert (document["revision"], document["index"]) == (str(event.revision), event.index)
    sdk_event = from_structured(record)
    check_attributes(sdk_event, event)
    check_data(sdk_event.get_data(), event)
    change = change_of(sdk_event)
    assert (change.position, change.op, change.key) == (event.position, event.op, event.key)
    assert change.value == event.value


@pytest.mark.parametrize("name", EVENTS)
def test_binary_record_reads_back_with_the_sdk(name: str) -> None:
    event = EVENTS[name]
    record_format = cloudevents()
    headers, value = record_format.binary(event)
    key = record_format.record_key(event)
    sdk_event = from_kafka(headers, value, key=key)
    check_attributes(sdk_event, event)
    check_data(sdk_event.get_data(), event)
    change = change_of(sdk_event)
    assert (change.position, change.op, change.key) == (event.position, event.op, event.key)
    assert change.value == event.value
    if key_subject(key)[1] is False:
        assert sdk_event.get_extension("partitionkey") == key.decode()


@pytest.mark.parametrize("name", EVENTS)
def test_binary_record_follows_the_kafka_binding(name: str) -> None:
    event = EVENTS[name]
    headers, value = cloudevents().binary(event)
    names = [header for header, _ in headers]
    assert len(names) == len(set(names))
    assert all(header.startswith("ce_") or header == "content-type" for header in names)
    attributes = dict(headers)
    assert attributes["content-type"] == b"application/json"
    assert attributes["ce_specversion"] == b"1.0"
    assert attributes["ce_revision"] == str(event.revision).encode()
    assert attributes["ce_index"] == str(event.index).encode()
    for raw in attributes.values():
        raw.decode("utf-8")  # header values are UTF-8 strings
    assert value, "a null value would be a tombstone"
    structured = orjson.loads(cloudevents().encode(event))
    assert orjson.loads(value) == structured["data"], "both modes carry the same data"
    for header, raw in headers:
        if header.startswith("ce_") and header != "ce_time":
            assert str(structured[header.removeprefix("ce_")]).encode() == raw


@pytest.mark.parametrize("name", EVENTS)
def test_decode_recovers_the_event(name: str) -> None:
    event = EVENTS[name]
    record_format = cloudevents()
    for decoded in (
        record_format.decode(record_format.encode(event)),
        record_format.decode_binary(*record_format.binary(event)),
    ):
        assert decoded == event
        assert decoded.more is event.more
        if event.op in (Op.UPDATE, Op.DELETE) and had_prev(event):
            assert decoded.prev_mod_revision == event.prev_mod_revision
            assert decoded.prev_create_revision == event.prev_create_revision
            assert decoded.prev_version == event.prev_version
            assert decoded.prev_lease == event.prev_lease


def test_structured_layout() -> None:
    record = cloudevents().encode(EVENTS["update"])
    assert orjson.loads(record) == {
        "specversion": "1.0",
        "id": "orders:6-0",
        "source": SOURCE,
        "type": "io.etcd.bridge.update",
        "subject": "/app/a",
        "time": orjson.loads(record)["time"],
        "datacontenttype": "application/json",
        "revision": "6",
        "index": 0,
        "pipeline": "orders",
        "data": {
            "key": "/app/a",
            "value": "2",
            "prev_value": "1",
            "create_revision": 3,
            "mod_revision": 6,
            "version": 2,
            "lease": 7587,
            "prev_create_revision": 3,
            "prev_mod_revision": 3,
            "prev_version": 1,
            "prev_lease": 7586,
        },
    }
    assert b"\n" not in record
    assert CloudEventsFormat.content_type == "application/cloudevents+json"


def test_markers_are_events_of_their_own_type() -> None:
    record_format = cloudevents()
    for marker, kind, reason in (
        (EVENTS["snapshot_begin"], "io.etcd.bridge.snapshot_begin", "initial"),
        (EVENTS["snapshot_end"], "io.etcd.bridge.snapshot_end", "compacted"),
    ):
        document = orjson.loads(record_format.encode(marker))
        assert (document["type"], document["reason"], document["subject"]) == (
            kind,
            reason,
            "/app/",
        )
        assert document["data"]["value"] is None
    assert "reason" not in orjson.loads(record_format.encode(EVENTS["update"]))


def test_a_marker_over_the_whole_keyspace_has_no_subject() -> None:
    record_format = cloudevents(prefixes=(b"",))
    marker = begin(4, prefix=b"")
    document = orjson.loads(record_format.encode(marker))
    assert "subject" not in document, "a subject must not be empty"
    assert document["source"] == "etcd://prod-eu/"
    assert "ce_subject" not in dict(record_format.binary(marker)[0])
    sdk_event = from_structured(record_format.encode(marker))
    assert sdk_event.get_subject() is None
    assert change_of(sdk_event).key == b""
    assert record_format.decode(record_format.encode(marker)) == marker
    assert record_format.decode_binary(*record_format.binary(marker)) == marker


def test_a_transaction_is_complete_at_its_change_without_more() -> None:
    records = [orjson.loads(cloudevents().encode(EVENTS[name])) for name in TRANSACTION]
    assert [record["data"].get("more") for record in records] == [True, True, None]
    assert [record["id"] for record in records] == ["orders:10-0", "orders:10-1", "orders:10-2"]


def test_id_is_stable_and_unique() -> None:
    record_format = cloudevents()
    again = cloudevents()
    ids = set()
    for event in EVENTS.values():
        document = orjson.loads(record_format.encode(event))
        assert orjson.loads(again.encode(event))["id"] == document["id"], "same on replay"
        ids.add((document["source"], document["id"]))
    assert len(ids) == len(EVENTS)
    # A snapshot after a resync can sit at the position of a change already delivered.
    change, read = update(9, b"/app/a", b"2", b"1", index=1), EVENTS["snapshot"]
    assert change.position == read.position
    assert record_format.decode(record_format.encode(change)).op is Op.UPDATE
    assert (
        orjson.loads(record_format.encode(change))["id"]
        != orjson.loads(record_format.encode(read))["id"]
    )


def test_revision_is_a_string_and_index_an_integer() -> None:
    """CloudEvents Integers are 32-bit; etcd revisions are not."""
    document = orjson.loads(cloudevents().encode(EVENTS["revision past 2^31"]))
    assert document["revision"] == "3000000000"
    assert document["index"] == 4
    assert document["data"]["mod_revision"] == 3_000_000_000


def test_time_is_rfc3339_utc_at_encoding() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    stamp = orjson.loads(cloudevents().encode(EVENTS["create"]))["time"]
    after = datetime.now(UTC)
    assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00.000Z")
    assert before <= datetime.fromisoformat(stamp) <= after
    time.sleep(0.002)  # the stamp is formatted once per millisecond; let one pass
    assert orjson.loads(cloudevents().encode(EVENTS["create"]))["time"] != stamp


def test_source_names_cluster_and_prefixes() -> None:
    several = cloudevents(prefixes=(b"/b/", b"/a/"))
    assert several.source == "etcd://prod-eu//a/,/b/"
    odd = cloudevents(prefixes=("/ä b%/".encode(), b"/\xff"))
    parts = urlsplit(odd.source)
    assert (parts.scheme, parts.netloc) == ("etcd", "prod-eu")
    assert parts.path == "//%C3%A4%20b%25/,/%FF"
    assert unquote(parts.path[1:]) == "/ä b%/,/\ufffd"
    assert odd.source.isascii() and " " not in odd.source


@pytest.mark.parametrize(
    ("raw", "embedded", "listed"),
    [
        (b'{"replicas": 3, "labels": {"a": "b"}}', {"replicas": 3, "labels": {"a": "b"}}, None),
        (b'"a JSON string"', "a JSON string", None),
        (b"[1, 2.5, true]", [1, 2.5, True], None),
        (b"plain text", "plain text", "raw"),
        (b"null", "null", "raw"),
        (b"\xff\x00", base64.b64encode(b"\xff\x00").decode(), "b64"),
    ],
)
def test_json_values(raw: bytes, embedded: object, listed: str | None) -> None:
    record_format = cloudevents(ValuesMode.JSON)
    event = update(30, b"/app/j", raw, raw)
    document = orjson.loads(record_format.encode(event))
    data = document["data"]
    assert data["value"] == embedded and data["prev_value"] == embedded
    for name in ("b64", "raw"):
        assert data.get(name) == (["value", "prev_value"] if name == listed else None)
    headers, value = record_format.binary(event)
    assert orjson.loads(value) == data
    expected = raw if listed else canonical_json(raw)
    for sdk_event in (from_structured(record_format.encode(event)), from_kafka(headers, value)):
        check_attributes(sdk_event, event)
        change = change_of(sdk_event, values=ValuesMode.JSON)
        assert (change.position, change.key, change.value) == (event.position, b"/app/j", expected)
    for decoded in (
        record_format.decode(record_format.encode(event)),
        record_format.decode_binary(headers, value),
    ):
        assert decoded.position == event.position and decoded.key == event.key
        assert decoded.value == (raw if listed else orjson.dumps(embedded))


def test_json_values_with_a_binary_key() -> None:
    record_format = cloudevents(ValuesMode.JSON)
    event = put(31, b"/app/\xff", b'{"a": 1}')
    data = orjson.loads(record_format.encode(event))["data"]
    assert data["value"] == {"a": 1}
    assert data["b64"] == ["key"]
    assert record_format.decode(record_format.encode(event)).key == b"/app/\xff"


def test_record_key_is_the_etcd_key() -> None:
    record_format = cloudevents()
    for event in EVENTS.values():
        assert record_format.record_key(event) == event.key
        assert record_format.record_value(event) is not None


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[1, 2]",
        b'{"specversion": "1.0"}',
        b"{}",
    ],
)
def test_decode_refuses_what_is_not_a_record(record: bytes) -> None:
    with pytest.raises(ValueError):
        cloudevents().decode(record)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("specversion", "0.3"),
        ("type", "com.example.other"),
        ("revision", "7.5"),
        ("revision", " 7"),
        ("revision", None),
        ("index", True),
        ("index", "x"),
        ("subject", "/app/other"),
        ("keyencoding", "base64"),
        ("data", "text"),
        ("data", None),
    ],
)
def test_decode_refuses_a_damaged_record(attribute: str, value: object) -> None:
    record_format = cloudevents()
    document = orjson.loads(record_format.encode(EVENTS["update"]))
    document[attribute] = value
    with pytest.raises(ValueError):
        record_format.decode(orjson.dumps(document))
    with pytest.raises(ValueError):
        record_format.decode(record_format.encode(EVENTS["update"])[:-1])


@pytest.mark.parametrize("field", ["key", "mod_revision", "lease"])
def test_decode_refuses_damaged_data(field: str) -> None:
    record_format = cloudevents()
    document = orjson.loads(record_format.encode(EVENTS["binary key"]))
    del document["data"][field]
    with pytest.raises(ValueError):
        record_format.decode(orjson.dumps(document))


def test_decode_binary_refuses_what_is_not_ours() -> None:
    record_format = cloudevents()
    headers, value = record_format.binary(EVENTS["update"])
    with pytest.raises(ValueError):
        record_format.decode_binary(headers, None)
    with pytest.raises(ValueError):
        record_format.decode_binary([h for h in headers if h[0] != "ce_type"], value)
    with pytest.raises(ValueError):
        record_format.decode_binary(headers, b"[]")
    # A sink's own headers beside the binding's are ignored.
    assert (
        record_format.decode_binary([("revision", b"99"), ("op", b"delete"), *headers], value)
        == EVENTS["update"]
    )


def test_encode_lines_are_json_lines() -> None:
    events = [EVENTS[name] for name in TRANSACTION]
    lines = cloudevents().encode_lines(events).split(b"\n")
    assert lines[-1] == b""
    assert [cloudevents().decode(line) for line in lines[:-1]] == events
    assert cloudevents().encode_lines([]) == b""
    mixed = [EVENTS["binary key"], EVENTS["snapshot_begin"], EVENTS["update"]]
    assert cloudevents().encode_lines(mixed).count(b"\n") == 3
    assert [
        cloudevents().decode(line) for line in cloudevents().encode_lines(mixed).split(b"\n")[:-1]
    ] == mixed


def test_cloudevents_strings() -> None:
    assert is_cloudevents_string("/app/a b")
    assert is_cloudevents_string("/app/\u00a0\u200d\ue000")
    assert is_cloudevents_string("/app/😀\U0010fffd")
    for bad in ("\x00", "a\tb", "\x7f", "\x9f", "\ufdd0", "\ufffe", "\U0001fffe", "\U0010ffff"):
        assert not is_cloudevents_string(bad), repr(bad)


def test_change_of_reads_positions_from_either_mode() -> None:
    record_format = cloudevents()
    event = EVENTS["revision past 2^31"]
    structured = change_of(from_structured(record_format.encode(event)))
    binary = change_of(from_kafka(*record_format.binary(event), key=event.key))
    assert structured == binary
    assert structured.position == Position(3_000_000_000, 4)


@pytest.mark.parametrize("name", EVENTS)
def test_the_fast_path_writes_what_the_general_path_writes(name: str) -> None:
    """``encode`` and ``binary`` build the common event inline, for speed."""
    record_format, event = cloudevents(), EVENTS[name]
    fast, general = (
        orjson.loads(record)
        for record in (record_format.encode(event), record_format._encode_any(event, stamp=""))
    )
    fast["time"] = general["time"]
    assert list(fast.items()) == list(general.items())
    (fast_headers, fast_value), (headers, value) = (
        record_format.binary(event),
        record_format._binary_any(event),
    )
    assert fast_value == value
    assert [h for h in fast_headers if h[0] != "ce_time"] == [
        h for h in headers if h[0] != "ce_time"
    ]


def test_a_structured_kafka_record_reads_back_with_the_sdk() -> None:
    """Kafka in structured mode: the binding's content-type header, the record as value."""
    record_format, event = cloudevents(), EVENTS["update"]
    headers = [("content-type", record_format.content_type.encode())]
    sdk_event = from_kafka(headers, record_format.encode(event), key=event.key)
    check_attributes(sdk_event, event)
    check_data(sdk_event.get_data(), event)
    assert sdk_event.get_extension("partitionkey") == "/app/a"
    assert read_kafka(headers, record_format.encode(event)) == read_structured(
        record_format.encode(event)
    )


@pytest.mark.parametrize("values", list(ValuesMode))
def test_a_batch_is_its_events_records_with_one_time(
    values: ValuesMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``encode_batch`` (the Redis and NATS sinks) reads the clock once: at one millisecond
    its records are ``encode``'s, byte for byte, the general path's events included."""
    events = list(EVENTS.values())
    record_format = cloudevents(values)
    assert len({orjson.loads(record)["time"] for record in record_format.encode_batch(events)}) == 1
    monkeypatch.setattr("bridge.formats.cloudevents.time_ns", lambda: 1_764_480_000_123_000_000)
    assert record_format.encode_batch(events) == [record_format.encode(e) for e in events]
    assert record_format.encode_batch([]) == []
    # The Kafka sink's batches, in each content mode.
    assert record_format.record_values(events) == [record_format.record_value(e) for e in events]
    assert record_format.binary_batch(events) == [record_format.binary(e) for e in events]


def test_the_fast_path_tells_printable_keys_as_the_general_path_does() -> None:
    """The fast path tells ASCII keys apart without ``isprintable``, by two byte searches:
    for every ASCII character (control characters, DEL, quotes, backslashes) and a few others,
    alone and in a key, its record (subject, ``keyencoding``) is the general path's, which
    asks ``is_cloudevents_string``."""
    record_format = cloudevents()
    for char in [*map(chr, range(128)), "\x85", "\u00a0", "ü", "\ufffe", "\U0001ffff"]:
        for text in (char, f"/app/{char}x"):
            event = dataclasses.replace(EVENTS["update"], key=text.encode())
            fast, general = (
                orjson.loads(record)
                for record in (
                    record_format.encode(event),
                    record_format._encode_any(event, stamp=""),
                )
            )
            fast["time"] = general["time"]
            assert fast == general, repr(text)
