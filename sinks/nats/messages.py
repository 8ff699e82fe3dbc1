"""The sink's messages as JetStream holds them, and one read back (the stream's last, on open,
or any, by a reader).

One message per event: the subject from ``sinks.nats.subjects``, the payload one record of
the sink's format (``BRIDGE_NATS__FORMAT``, docs/formats.md; native by default: docs/events.md)
and headers:

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

``Framer`` writes the header block as the server reads it (``NATS/1.0``, one ``Name: value``
line per header, a blank line), by one %-format per message: the publisher sends it as it is
(``sinks.nats.publisher``), and its length plus the payload's is exactly what the server
compares with its ``max_payload``. Every value is a number, an enum's value or the pipeline's
name, which ``Framer`` checks once: none can hold a line break.
"""

import re
from collections.abc import Callable, Mapping

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op

HEADER_REVISION = "revision"
HEADER_INDEX = "index"
HEADER_TYPE = "type"
HEADER_OP = "op"
HEADER_PIPELINE = "pipeline"
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"

_BLOCK = (
    f"NATS/1.0\r\n{HEADER_REVISION}: %d\r\n{HEADER_INDEX}: %d\r\n{HEADER_TYPE}: %s\r\n"
    f"{HEADER_OP}: %s\r\n{HEADER_PIPELINE}: %s\r\n{MSG_ID}: %s\r\n"
    f"{EXPECTED_LAST_SEQUENCE}: %d\r\n"
).encode()
_PREVIOUS = f"{EXPECTED_LAST_MSG_ID}: %s\r\n\r\n".encode()
_END = b"\r\n"
_TYPES = {member: member.value.encode() for member in EventType}
_OPS = {member: member.value.encode() for member in Op}
_PIPELINE = re.compile(r"[!-~]+")
"""What a header value may hold here: printable ASCII, no whitespace (``BRIDGE_NAME`` is
narrower still)."""


def msg_id(event: Event, *, pipeline: str) -> str:
    """``<pipeline>:<revision>-<index>``: one id per event of a pipeline."""
    return f"{pipeline}:{event.revision}-{event.index}"


class Framer:
    """The header blocks of one pipeline's messages, as bytes on the wire."""

    def __init__(self, pipeline: str) -> None:
        if not _PIPELINE.fullmatch(pipeline):
            raise ValueError(f"pipeline name {pipeline!r} cannot be a header value")
        self.pipeline = pipeline.encode("ascii")

    def msg_id(self, event: Event) -> bytes:
        """``msg_id`` as bytes."""
        return b"%s:%d-%d" % (self.pipeline, event.revision, event.index)

    def header_block(
        self, event: Event, *, msg_id: bytes, expected_sequence: int, previous_id: bytes | None
    ) -> bytes:
        """The header block of ``event``'s message (whose id is ``msg_id``), published after
        stream sequence ``expected_sequence`` and, within a session, right after message
        ``previous_id``."""
        block = _BLOCK % (
            event.revision,
            event.index,
            _TYPES[event.type],
            _OPS[event.op],
            self.pipeline,
            msg_id,
            expected_sequence,
        )
        return block + (_END if previous_id is None else _PREVIOUS % previous_id)


def read_tail(
    *,
    stream: str,
    sequence: int,
    headers: Mapping[str, str] | None,
    data: bytes | None,
    pipeline: str,
    decode: Callable[[bytes], Event],
) -> Event:
    """The event the stream's last message (at ``sequence``) holds, its payload read with
    ``decode`` (the sink's format); SinkRejectedError when the message is not one of this
    pipeline's (another pipeline's, not etcd-bridge's, or of another format)."""
    return read_message(
        where=f"nats: the last message of stream {stream!r} (sequence {sequence})",
        headers=headers,
        data=data,
        pipeline=pipeline,
        decode=decode,
    )


def read_message(
    *,
    where: str,
    headers: Mapping[str, str] | None,
    data: bytes | None,
    pipeline: str,
    decode: Callable[[bytes], Event],
) -> Event:
    """The event one of the pipeline's messages holds (``where`` names the message in
    errors): the tail read back on open, or a message a reader meets. SinkRejectedError when
    it is not one of this pipeline's, or its id disagrees with what its payload holds."""
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
        event = decode(data or b"")
    except (ValueError, KeyError, TypeError) as error:
        raise SinkRejectedError(
            f"{where} does not hold an etcd-bridge record of BRIDGE_NATS__FORMAT's format ({error})"
        ) from error
    if found[MSG_ID] != msg_id(event, pipeline=pipeline):
        raise SinkRejectedError(
            f"{where} has id {found[MSG_ID]!r} but holds the event at {event.position}; the "
            "stream was not written by etcd-bridge"
        )
    return event
