"""The sink's messages as JetStream holds them, and the stream's last one read back.

One message per event: the subject from ``sinks.nats.subjects``, the payload
``Event.to_json()`` (docs/events.md, bytes exact: non-UTF-8 fields are base64) and headers:

- ``revision``, ``index``, ``type``, ``op``, ``pipeline``: what a consumer filters on without
  parsing the payload (the Kafka sink's record headers, by the same names), and how the sink
  recognizes the stream's last message as its own;
- ``Nats-Msg-Id: <pipeline>:<revision>-<index>``: the event's identity; the server drops a
  second message with an id it saw within the stream's duplicate window;
- ``Nats-Expected-Last-Sequence``: the stream sequence the writer believes is the last one;
  the server refuses the message when another was stored since (``sinks.nats.sink`` says why
  this, and not the duplicate window, is what makes the sink exactly once);
- ``Nats-Expected-Last-Msg-Id``: the id of the writer's previous message, on every message of
  a session but its first (the server forgets the last id when it restarts; the first message
  relies on the sequence alone, read back with the tail on open).

The key is not a header: keys are arbitrary bytes, headers are text lines.
"""

from collections.abc import Mapping

from bridge.errors import SinkRejectedError
from bridge.events import Event

HEADER_REVISION = "revision"
HEADER_INDEX = "index"
HEADER_TYPE = "type"
HEADER_OP = "op"
HEADER_PIPELINE = "pipeline"
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"

_STATUS_LINE = b"NATS/1.0\r\n"


def msg_id(event: Event, *, pipeline: str) -> str:
    """``<pipeline>:<revision>-<index>``: one id per event of a pipeline."""
    return f"{pipeline}:{event.revision}-{event.index}"


def headers_of(
    event: Event, *, pipeline: str, expected_sequence: int, previous_id: str | None
) -> dict[str, str]:
    """The headers of ``event``'s message, published after stream sequence
    ``expected_sequence`` and, within a session, right after message ``previous_id``."""
    headers = {
        HEADER_REVISION: str(event.revision),
        HEADER_INDEX: str(event.index),
        HEADER_TYPE: event.type.value,
        HEADER_OP: event.op.value,
        HEADER_PIPELINE: pipeline,
        MSG_ID: msg_id(event, pipeline=pipeline),
        EXPECTED_LAST_SEQUENCE: str(expected_sequence),
    }
    if previous_id is not None:
        headers[EXPECTED_LAST_MSG_ID] = previous_id
    return headers


def message_size(headers: Mapping[str, str], payload: bytes) -> int:
    """What the server compares with its ``max_payload`` (and a stream with its
    ``max_msg_size``): the header block as sent, plus the payload."""
    block = len(_STATUS_LINE) + 2  # the status line, then the blank line ending the block
    for name, value in headers.items():
        block += len(name.encode()) + 2 + len(value.encode()) + 2
    return block + len(payload)


def read_tail(
    *,
    stream: str,
    sequence: int,
    headers: Mapping[str, str] | None,
    data: bytes | None,
    pipeline: str,
) -> Event:
    """The event the stream's last message (at ``sequence``) holds; SinkRejectedError when the
    message is not one of this pipeline's (another pipeline's, or not etcd-bridge's)."""
    where = f"nats: the last message of stream {stream!r} (sequence {sequence})"
    found = dict(headers or {})
    owner = found.get(HEADER_PIPELINE)
    if owner is None or MSG_ID not in found:
        raise SinkRejectedError(
            f"{where} was not written by etcd-bridge (no {HEADER_PIPELINE!r} or {MSG_ID!r} "
            "header); give the pipeline a stream of its own (BRIDGE_NATS__STREAM)"
        )
    if owner != pipeline:
        raise SinkRejectedError(
            f"{where} belongs to pipeline {owner!r}, not {pipeline!r}; each pipeline "
            "(BRIDGE_NAME) needs a stream of its own (BRIDGE_NATS__STREAM)"
        )
    try:
        event = Event.from_json(data or b"")
    except (ValueError, KeyError, TypeError) as error:
        raise SinkRejectedError(f"{where} does not hold an etcd-bridge event ({error})") from error
    if found[MSG_ID] != msg_id(event, pipeline=pipeline):
        raise SinkRejectedError(
            f"{where} has id {found[MSG_ID]!r} but holds the event at {event.position}; the "
            "stream was not written by etcd-bridge"
        )
    return event
