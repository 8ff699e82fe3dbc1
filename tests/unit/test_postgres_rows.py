"""Events as PostgreSQL rows: bytes kept exact, text and JSON views only where PostgreSQL
would accept them (a wrong guess would abort the whole batch's transaction)."""

import pytest

from bridge.events import Event, EventType, Op
from sinks.postgres.rows import changelog_row, json_view, state_row, text_view
from sinks.postgres.schema import CHANGELOG_COLUMNS, STATE_COLUMNS


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain", "plain"),
        ("ключ".encode(), "ключ"),
        (b"", ""),
        (None, None),
        (b"\xff\xfe", None),  # not UTF-8
        (b"a\x00b", None),  # UTF-8, but text cannot hold NUL
    ],
)
def test_text_view(raw: bytes | None, text: str | None) -> None:
    assert text_view(raw) == text


@pytest.mark.parametrize(
    ("text", "json"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ("[1, 2]", "[1, 2]"),
        ("42", "42"),
        ("not json", None),
        ("", None),
        (None, None),
        ('"\\u0000"', None),  # JSON, but jsonb refuses it
    ],
)
def test_json_view(text: str | None, json: str | None) -> None:
    assert json_view(text) == json


def test_rows_follow_the_column_lists() -> None:
    event = Event(
        revision=9,
        index=2,
        type=EventType.PUT,
        op=Op.UPDATE,
        key=b"/app/k",
        value=b'{"x": true}',
        prev_value=b"\xff",
        mod_revision=9,
        create_revision=3,
        version=4,
        lease=77,
        more=True,
    )
    row = dict(zip(CHANGELOG_COLUMNS, changelog_row("p", event), strict=True))
    assert row == {
        "pipeline": "p",
        "revision": 9,
        "index": 2,
        "type": "PUT",
        "op": "update",
        "key": b"/app/k",
        "value": b'{"x": true}',
        "prev_value": b"\xff",
        "mod_revision": 9,
        "create_revision": 3,
        "version": 4,
        "lease": 77,
        "reason": None,
        "more": True,
        "key_text": "/app/k",
        "value_text": '{"x": true}',
        "value_json": '{"x": true}',
        "prev_value_text": None,
        "prev_value_json": None,
    }
    state = dict(zip(STATE_COLUMNS, state_row(event), strict=True))
    assert state["key"] == b"/app/k" and state["lease"] == 77 and state["op"] == "update"
    assert state["value_json"] == '{"x": true}'
