"""The NATS sink's messages: headers, ids, size, and recognizing its own last message."""

import pytest

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op
from sinks.nats.messages import (
    EXPECTED_LAST_MSG_ID,
    EXPECTED_LAST_SEQUENCE,
    MSG_ID,
    Framer,
    msg_id,
    read_tail,
)

EVENT = Event(
    revision=12, index=3, type=EventType.DELETE, op=Op.DELETE, key=b"/app/k", prev_value=b"x"
)


def parse_block(block: bytes) -> dict[str, str]:
    """A header block as the server reads it: the status line, ``Name: value`` lines, a blank
    line; every line ends with CRLF."""
    status, _, rest = block.partition(b"\r\n")
    assert status == b"NATS/1.0"
    assert rest.endswith(b"\r\n\r\n")
    lines = rest[:-4].decode("ascii").split("\r\n")
    return dict(line.split(": ", 1) for line in lines)


def test_headers_carry_the_position_and_the_chain() -> None:
    framer = Framer("main")
    ident = framer.msg_id(EVENT)
    assert ident.decode() == msg_id(EVENT, pipeline="main") == "main:12-3"
    first = framer.header_block(EVENT, msg_id=ident, expected_sequence=40, previous_id=None)
    assert parse_block(first) == {
        "revision": "12",
        "index": "3",
        "type": "DELETE",
        "op": "delete",
        "pipeline": "main",
        MSG_ID: "main:12-3",
        EXPECTED_LAST_SEQUENCE: "40",
    }
    later = framer.header_block(EVENT, msg_id=ident, expected_sequence=41, previous_id=b"main:12-2")
    assert parse_block(later)[EXPECTED_LAST_MSG_ID] == "main:12-2"
    assert parse_block(later)[EXPECTED_LAST_SEQUENCE] == "41"


@pytest.mark.parametrize("pipeline", ["", "two words", "line\r\nbreak", "ключ"])
def test_a_pipeline_name_that_cannot_be_a_header_value_is_refused(pipeline: str) -> None:
    with pytest.raises(ValueError, match="cannot be a header value"):
        Framer(pipeline)


def tail(**headers: str) -> Event:
    return read_tail(
        stream="s",
        sequence=9,
        headers=headers,
        data=EVENT.to_json(),
        pipeline="main",
        decode=Event.from_json,
    )


def test_the_last_message_of_the_pipeline_is_its_tail() -> None:
    assert tail(pipeline="main", **{MSG_ID: "main:12-3"}) == EVENT


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({}, "was not written by etcd-bridge"),
        ({"pipeline": "other", MSG_ID: "other:12-3"}, "belongs to pipeline 'other'"),
        ({"pipeline": "main", MSG_ID: "main:12-4"}, "holds the event at 12-3"),
    ],
)
def test_a_foreign_last_message_is_refused(headers: dict[str, str], problem: str) -> None:
    with pytest.raises(SinkRejectedError, match=problem):
        tail(**headers)


def test_a_last_message_that_is_not_an_event_is_refused() -> None:
    with pytest.raises(SinkRejectedError, match="does not hold an etcd-bridge record"):
        read_tail(
            stream="s",
            sequence=1,
            headers={"pipeline": "main", MSG_ID: "main:1-0"},
            data=b"hello",
            pipeline="main",
            decode=Event.from_json,
        )
