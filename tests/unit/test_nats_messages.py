"""The NATS sink's messages: headers, ids, size, and recognizing its own last message."""

import pytest

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op
from sinks.nats.messages import (
    EXPECTED_LAST_MSG_ID,
    EXPECTED_LAST_SEQUENCE,
    MSG_ID,
    headers_of,
    message_size,
    read_tail,
)

EVENT = Event(
    revision=12, index=3, type=EventType.DELETE, op=Op.DELETE, key=b"/app/k", prev_value=b"x"
)


def test_headers_carry_the_position_and_the_chain() -> None:
    first = headers_of(EVENT, pipeline="main", expected_sequence=40, previous_id=None)
    assert first == {
        "revision": "12",
        "index": "3",
        "type": "DELETE",
        "op": "delete",
        "pipeline": "main",
        MSG_ID: "main:12-3",
        EXPECTED_LAST_SEQUENCE: "40",
    }
    later = headers_of(EVENT, pipeline="main", expected_sequence=41, previous_id="main:12-2")
    assert later[EXPECTED_LAST_MSG_ID] == "main:12-2"


def test_message_size_counts_the_header_block_as_sent() -> None:
    headers = {"a": "1", "bc": "23"}
    block = b"NATS/1.0\r\na: 1\r\nbc: 23\r\n\r\n"
    assert message_size(headers, b"payload") == len(block) + len(b"payload")


def tail(**headers: str) -> Event:
    return read_tail(stream="s", sequence=9, headers=headers, data=EVENT.to_json(), pipeline="main")


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
    with pytest.raises(SinkRejectedError, match="does not hold an etcd-bridge event"):
        read_tail(
            stream="s",
            sequence=1,
            headers={"pipeline": "main", MSG_ID: "main:1-0"},
            data=b"hello",
            pipeline="main",
        )
