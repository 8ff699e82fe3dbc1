"""Byte fields survive JSON exactly, and the event document round-trips."""

import random

import orjson
import pytest

from bridge.encoding import decode_field, encode_field, printable_key
from bridge.events import Event, EventType, Op, Position, SnapshotReason, snapshot_marker


@pytest.mark.parametrize(
    "raw", [b"", b"plain", "ünïcödé ✓".encode(), b"\xff\xfe", b"\x00\x01\x02", b"a\xc3"]
)
def test_fields_round_trip(raw: bytes) -> None:
    text, is_base64 = encode_field(raw)
    assert decode_field(text, is_base64=is_base64) == raw
    assert is_base64 == (raw != raw.decode("utf-8", "replace").encode("utf-8"))


def test_random_bytes_round_trip() -> None:
    generator = random.Random(11)  # noqa: S311 - test data
    for _ in range(2000):
        raw = generator.randbytes(generator.randrange(0, 40))
        text, is_base64 = encode_field(raw)
        assert decode_field(text, is_base64=is_base64) == raw


def test_marked_base64_that_is_not_fails_clearly() -> None:
    with pytest.raises(ValueError, match="marked base64"):
        decode_field("not base64!", is_base64=True)


def test_event_json_round_trips_and_lists_binary_fields() -> None:
    event = Event(
        revision=9,
        index=2,
        type=EventType.PUT,
        op=Op.UPDATE,
        key=b"/k/\xff",
        value=b"new",
        prev_value=b"\x80old",
        mod_revision=9,
        create_revision=3,
        version=4,
        lease=7587,
    )
    document = orjson.loads(event.to_json())
    assert document["b64"] == ["key", "prev_value"]
    assert document["value"] == "new"
    assert Event.from_json(event.to_json()) == event


def test_delete_has_null_value_and_no_b64_field() -> None:
    event = Event(revision=5, index=0, type=EventType.DELETE, op=Op.DELETE, key=b"/k", value=None)
    document = orjson.loads(event.to_json())
    assert document["value"] is None and document["prev_value"] is None
    assert "b64" not in document and "reason" not in document
    assert Event.from_json(event.to_json()) == event


def test_marker_carries_its_reason() -> None:
    marker = snapshot_marker(
        revision=4, index=0, op=Op.SNAPSHOT_BEGIN, prefix=b"/p/", reason=SnapshotReason.COMPACTED
    )
    assert orjson.loads(marker.to_json())["reason"] == "compacted"
    assert Event.from_json(marker.to_json()) == marker


def test_positions_order_by_revision_then_index() -> None:
    assert Position(3, 9) < Position(4, 0) < Position(4, 1)
    assert str(Position(4, 1)) == "4-1"


def test_printable_key_escapes_binary_and_truncates() -> None:
    assert printable_key(b"/a") == "/a"
    assert printable_key(b"\xff") == "b'\\xff'"
    assert printable_key(b"x" * 500).endswith("...")
