"""Publishing a session's messages as one chain, and reading the server's acknowledgements.

Every message names the stream sequence it must follow (and, after a session's first, the id
of the message it must follow; ``sinks.nats.messages``). The publisher keeps that chain:
``expected`` starts at the tail's sequence read on open and grows by one per message sent, so
message *n* of a session is stored only if the stream's last message is the session's message
*n - 1*, at the sequence the session gave it. An event at or below the last position stored
or sent (a replay) is skipped rather than sent again. Messages are pipelined (sent without waiting)
and acknowledged on one reply subject per session; ``settle`` waits for all of them.

Why not nats-py's ``publish_async``: in nats-py 2.16 an error acknowledgement (the very
"wrong last sequence" this sink relies on) raises inside the library's reply callback and
leaves the publish's future pending for ever. Here an acknowledgement is parsed into an
``Ack`` value, success or not, and ``verdict`` turns the first bad one into the pump's error.
"""

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg

from bridge.encoding import printable_key
from bridge.errors import SinkError, SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Position
from sinks.nats.connection import Connection
from sinks.nats.messages import headers_of, message_size, msg_id
from sinks.nats.subjects import SubjectRouter

WRONG_LAST_SEQUENCE = 10071
WRONG_LAST_MSG_ID = 10070
MESSAGE_TOO_LARGE = 10054
_NO_RESPONDERS = "503"
_CONFLICT_ADVICE = (
    "another writer appended to the stream (an instance that lost leadership, or a second "
    "bridge with the same BRIDGE_NAME); the sink reopens and resumes from the stream's tail"
)


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's answer to one publish: stored at ``sequence``, or refused."""

    stream: str = ""
    sequence: int = 0
    duplicate: bool = False
    code: int = 0
    err_code: int = 0
    description: str = ""

    @property
    def refused(self) -> bool:
        return self.code != 0

    @classmethod
    def parse(cls, message: Msg) -> "Ack":
        headers = message.headers or {}
        if not message.data and headers.get("Status") == _NO_RESPONDERS:
            return cls(code=503, description="no stream captures the subject")
        try:
            reply = json.loads(message.data)
        except ValueError:
            return cls(code=500, description=f"unreadable acknowledgement {message.data[:80]!r}")
        error = reply.get("error")
        if error is not None:
            return cls(
                code=int(error.get("code", 500)),
                err_code=int(error.get("err_code", 0)),
                description=str(error.get("description", "")),
            )
        return cls(
            stream=str(reply.get("stream", "")),
            sequence=int(reply.get("seq", 0)),
            duplicate=bool(reply.get("duplicate", False)),
        )


@dataclass(slots=True)
class _InFlight:
    event: Event
    subject: str
    sequence: int
    """The sequence the message must be stored at: the one before it, plus one."""
    ack: "asyncio.Future[Ack]"


class Publisher:
    """One session's chain of messages; runs on the sink's loop thread only."""

    def __init__(
        self,
        connection: Connection,
        *,
        stream: str,
        pipeline: str,
        router: SubjectRouter,
        sequence: int,
        tail: Position | None,
        max_message_bytes: int,
    ) -> None:
        self.connection = connection
        self.stream = stream
        self.pipeline = pipeline
        self.router = router
        self.expected = sequence
        """The stream's last sequence once everything sent so far is stored."""
        self.previous_id: str | None = None
        """The id of the session's last message; None before its first."""
        self.last = tail
        """The position of the last event stored or sent; events at or below it are skipped."""
        self.skipped = 0
        self.max_message_bytes = max_message_bytes
        self.rejected: SinkRejectedError | None = None
        """An event refused before it was sent; nothing after it is sent."""
        self._inflight: dict[str, _InFlight] = {}
        self._order: list[str] = []
        self._inbox = ""

    async def start(self) -> None:
        """Subscribe to this session's acknowledgements."""
        self._inbox = self.connection.client.new_inbox()
        await self.connection.client.subscribe(f"{self._inbox}.*", cb=self._on_ack)

    async def _on_ack(self, message: Msg) -> None:
        # Only records: the owning code reads the futures in ``settle``.
        inflight = self._inflight.get(message.subject.rpartition(".")[2])
        if inflight is not None and not inflight.ack.done():
            inflight.ack.set_result(Ack.parse(message))

    async def publish(self, batch: Sequence[Event]) -> None:
        """Send ``batch`` in order without waiting for acknowledgements; stop before an event
        that cannot be sent (``rejected``)."""
        client = self.connection.client
        loop = asyncio.get_running_loop()
        for event in batch:
            if self.rejected is not None:
                return
            if self.last is not None and event.position <= self.last:
                self.skipped += 1  # a replay of what the stream holds: never twice
                continue
            try:
                subject = self.router.subject_for(event)
            except SinkRejectedError as error:
                self.rejected = error
                return
            headers = headers_of(
                event,
                pipeline=self.pipeline,
                expected_sequence=self.expected,
                previous_id=self.previous_id,
            )
            payload = event.to_json()
            size = message_size(headers, payload)
            if size > self.max_message_bytes:
                self.rejected = _too_large(event, size=size, limit=self.max_message_bytes)
                return
            token = str(len(self._order))
            self.expected += 1
            self.previous_id = msg_id(event, pipeline=self.pipeline)
            self.last = event.position
            self._inflight[token] = _InFlight(event, subject, self.expected, loop.create_future())
            self._order.append(token)
            await client.publish(subject, payload, reply=f"{self._inbox}.{token}", headers=headers)

    @property
    def pending(self) -> int:
        return len(self._order)

    async def settle(self, *, timeout: float) -> SinkError | None:
        """Wait until every message sent is acknowledged (or the connection is gone, or
        ``timeout`` passed) and forget them; the error for the first one that is not stored
        where the chain says, else the rejection that stopped ``publish``, else None."""
        inflight = [self._inflight[token] for token in self._order]
        if inflight:
            acks = asyncio.ensure_future(asyncio.wait([item.ack for item in inflight]))
            closed = asyncio.ensure_future(self.connection.closed.wait())
            await asyncio.wait({acks, closed}, timeout=timeout, return_when="FIRST_COMPLETED")
            for waiter in (acks, closed):
                waiter.cancel()
        self._inflight.clear()
        self._order.clear()
        for item in inflight:
            failure = self._verdict(item, timeout=timeout)
            if failure is not None:
                return failure
        return self.rejected

    def _verdict(self, item: _InFlight, *, timeout: float) -> SinkError | None:
        event = item.event
        what = (
            f"the message of key {printable_key(event.key)!r} at revision {event.revision} "
            f"(index {event.index}) on {item.subject!r}"
        )
        if not item.ack.done():
            if self.connection.closed.is_set():
                return SinkUnavailableError(
                    f"nats: the connection was lost before {what} was acknowledged; it is "
                    "rewritten after a reopen if the stream does not hold it"
                )
            return SinkUnavailableError(
                f"nats: {what} and what follows were not acknowledged within {timeout:g}s "
                "(BRIDGE_NATS__FLUSH_TIMEOUT); they are rewritten after a reopen if the stream "
                "does not hold them"
            )
        ack = item.ack.result()
        if not ack.refused:
            if ack.stream != self.stream or ack.sequence != item.sequence:
                return SinkUnavailableError(
                    f"nats: {what} is held by stream {ack.stream!r} at sequence {ack.sequence}, "
                    f"not {self.stream!r} at {item.sequence}: {_CONFLICT_ADVICE}"
                )
            return None
        detail = f"{ack.description} (code {ack.code}, err_code {ack.err_code})"
        if ack.err_code in (WRONG_LAST_SEQUENCE, WRONG_LAST_MSG_ID):
            return SinkUnavailableError(
                f"nats: the server refused {what}: {detail}: {_CONFLICT_ADVICE}"
            )
        if ack.err_code == MESSAGE_TOO_LARGE:
            return SinkRejectedError(
                f"nats: stream {self.stream!r} refused {what} as too large ({detail}); nothing "
                "after it is written. Raise the stream's max_msg_size, or store a smaller value"
            )
        if ack.code >= 500:
            return SinkUnavailableError(f"nats: JetStream could not store {what}: {detail}")
        return SinkRejectedError(
            f"nats: stream {self.stream!r} refused {what}: {detail}; nothing after it is written"
        )


def _too_large(event: Event, *, size: int, limit: int) -> SinkRejectedError:
    return SinkRejectedError(
        f"nats: the event of key {printable_key(event.key)!r} at revision {event.revision} "
        f"(index {event.index}) makes a message of {size} bytes (headers and JSON), over the "
        f"{limit} the server accepts (its max_payload, or the stream's max_msg_size); nothing "
        "after it is written. Raise max_payload in nats-server's configuration (and the "
        "stream's max_msg_size), or store a smaller value",
        key=event.key,
        revision=event.revision,
    )
