"""The native format: unchanged with ``values=bytes``; values embedded with ``values=json``."""

import orjson
import pytest

from bridge.events import Event, EventType, Op, values_omitted
from bridge.formats import EventFormat, FormatContext, build_format
from config.keyspace import KeySpace
from config.output import OutputSettings, ValuesMode


def native(values: ValuesMode) -> EventFormat:
    context = FormatContext(pipeline="p", cluster="c", keyspace=KeySpace.of([]), values=values)
    return build_format(OutputSettings(), context=context)


def update(value: bytes, prev: bytes, *, key: bytes = b"/app/a") -> Event:
    return Event(7, 0, EventType.PUT, Op.UPDATE, key, value, prev, 7, 5, 2, 0)


def test_bytes_values_are_the_event_json_itself() -> None:
    event = update(b'{"a": 1}', b"\xff")
    assert native(ValuesMode.BYTES).encode(event) == event.to_json()
    assert native(ValuesMode.BYTES).decode(event.to_json()) == event
    assert native(ValuesMode.BYTES).encode_batch([event, event]) == [event.to_json()] * 2


@pytest.mark.parametrize(
    ("raw", "embedded", "listed"),
    [
        (
            b'{"replicas": 3, "labels": {"app": "web"}}',
            {"replicas": 3, "labels": {"app": "web"}},
            None,
        ),
        (b'"quoted"', "quoted", None),
        (b"[1, 2]", [1, 2], None),
        (b"plain text", "plain text", "raw"),
        (b"null", "null", "raw"),
        (b"\xff\xfe", "//4=", "b64"),
    ],
)
def test_json_values_are_embedded_and_the_rest_named(
    raw: bytes, embedded: object, listed: str | None
) -> None:
    event = update(raw, b'{"replicas": 2}', key=b"/app/\xff")
    record = native(ValuesMode.JSON).encode(event)
    document = orjson.loads(record)
    assert document["value"] == embedded
    assert document["prev_value"] == {"replicas": 2}
    assert document["b64"][0] == "key", "the key is never embedded"
    names = {name: document.get(name, []) for name in ("b64", "raw")}
    assert [name for name, fields in names.items() if "value" in fields] == (
        [] if listed is None else [listed]
    )
    back = native(ValuesMode.JSON).decode(record)
    assert back.position == event.position and back.key == event.key
    assert back.prev_value == b'{"replicas":2}', "an embedded value comes back re-serialized"
    assert back.value == (raw if listed else orjson.dumps(embedded))


@pytest.mark.parametrize("values", list(ValuesMode))
@pytest.mark.parametrize("key", [b"/app/big", b"/app/\xff"], ids=["text key", "binary key"])
def test_an_event_delivered_without_its_values_says_their_sizes(
    values: ValuesMode, key: bytes
) -> None:
    whole = update(b"x" * 100, b"\xfe" * 7, key=key)
    event = values_omitted(whole)
    record = native(values).encode(event)
    document = orjson.loads(record)
    assert (document["value"], document["prev_value"]) == (None, None)
    assert document["omitted_bytes"] == {"value": 100, "prev_value": 7}
    assert native(values).decode(record) == event
    assert native(values).decode(record) != whole, "the mark is part of the event"
    assert "omitted_bytes" not in orjson.loads(native(values).encode(whole))


def test_a_create_left_out_says_it_had_no_previous_value() -> None:
    create = Event(9, 0, EventType.PUT, Op.CREATE, b"/app/c", b"v" * 10, None, 9, 9, 1, 0)
    document = orjson.loads(values_omitted(create).to_json())
    assert document["omitted_bytes"] == {"value": 10, "prev_value": None}
