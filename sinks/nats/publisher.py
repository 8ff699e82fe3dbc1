"""Publishing a session's messages as one chain, and reading the server's acknowledgements.

Every message names the stream sequence it must follow (and, after a session's first, the id
of the message it must follow; ``sinks.nats.messages``). The publisher keeps that chain:
``expected`` starts at the tail's sequence read on open and grows by one per message sent, so
message *n* of a session is stored only if the stream's last message is the session's message
*n - 1*, at the sequence the session gave it. An event at or below the last position stored
or sent (a replay) is skipped rather than sent again.

**One acknowledgement per part of a write (``SEND_EVERY`` messages), not per message.** By
the chain, the server stores message *n* only right after message *n - 1* (or after another
writer's copy of the same event: same id, same position), which it stored only right after
*n - 2*, and so on back to the tail read on open. So an acknowledgement that message *n* is
held at the sequence the chain gave it proves that every message of the session before it is
held once, in order, just before it: only the last message of each part asks for one (it
carries a reply subject), the others are sent without (the server stores them, or refuses
them silently, which breaks the chain for every later one). This is most of the sink's speed:
nats-py spends about 14 µs of CPU receiving one acknowledgement, more than building and
sending a message costs here. The price is diagnosis: a message refused for a reason of its
own (a stream full with ``discard: new``) shows up as the broken chain of the part's last one.
So a publisher made after a failed flush is ``careful``: it asks an acknowledgement of every
message until its first flush succeeds, and the one the server refuses is named with the
server's reason.

**Messages go to nats-py's outgoing buffer as whole protocol commands** (``_Wire``), built by
one %-format each from the header block ``messages.Framer`` makes, around the payloads the
format encodes for the whole part at once (``EventFormat.encode_batch``).

Why not nats-py's ``publish_async``: in nats-py 2.16 an error acknowledgement (the very
"wrong last sequence" this sink relies on) raises inside the library's reply callback and
leaves the publish's future pending for ever. Here an acknowledgement is parsed into an
``Ack`` value, success or not, and ``_verdict`` turns the first bad one into the pump's error.
"""

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.encoding import printable_key
from bridge.errors import SinkError, SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Position, past
from sinks.nats.connection import Connection
from sinks.nats.messages import Framer
from sinks.nats.subjects import SubjectRouter

SEND_EVERY = 250
"""Messages encoded and handed to the socket at a time. A batch of 2,000 built whole before
any was sent kept the server idle while the sink encoded, then the sink idle while the server
stored (about the same CPU per message each); a part is stored while the next is encoded. Each
part's last message asks for an acknowledgement: 14 µs per 250 messages."""
WRONG_LAST_SEQUENCE = 10071
WRONG_LAST_MSG_ID = 10070
MESSAGE_TOO_LARGE = 10054
_NO_RESPONDERS = "503"
_CONFLICT_ADVICE = (
    "another writer appended to the stream (an instance that lost leadership, or a second "
    "bridge with the same BRIDGE_NAME), or the server refused a message before it; the sink "
    "reopens, resumes from the stream's tail and has the server acknowledge each message of "
    "its next batch"
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
            reply = orjson.loads(message.data)
        except orjson.JSONDecodeError:
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
class _Awaited:
    """A message sent with a reply subject, whose acknowledgement ``settle`` waits for."""

    event: Event
    subject: str
    sequence: int
    """The sequence the message must be stored at: the one before it, plus one."""


class _Wire:
    """nats-py's outgoing buffer, written with whole ``HPUB`` commands.

    Why not ``Client.publish``: it checks the subject and re-encodes and re-checks every header
    of every message, 28 µs a message with this sink's seven headers, against about 3.5 µs
    for the whole command built here. The two methods used are nats-py's own publish path,
    unchanged since nats-py 2.0: ``_send_command`` appends a command to the buffer (waiting for
    the flusher when the buffer is full) and ``_flush_pending`` wakes the flusher. ``of``
    refuses a client without them, naming the version, rather than failing mid-stream.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def of(cls, client: Client) -> "_Wire":
        for method in ("_send_command", "_flush_pending"):
            if not callable(getattr(client, method, None)):
                raise SinkRejectedError(
                    f"nats: nats-py {version('nats-py')} has no Client.{method}, which the sink "
                    "publishes through; install nats-py 2.x (2.16 or later)"
                )
        return cls(client)

    async def send(self, commands: Sequence[bytes]) -> None:
        """Append ``commands`` to the buffer, then have the flusher write them."""
        client = self.client
        if not client.is_connected:
            raise nats.errors.ConnectionClosedError
        for command in commands:
            await client._send_command(command)
        await client._flush_pending()


class Publisher:
    """One session's chain of messages; runs on the sink's loop thread only."""

    def __init__(
        self,
        connection: Connection,
        *,
        stream: str,
        framer: Framer,
        router: SubjectRouter,
        sequence: int,
        tail: Position | None,
        max_message_bytes: int,
        careful: bool,
        encode_batch: Callable[[Sequence[Event]], list[bytes]],
    ) -> None:
        self.connection = connection
        self.encode_batch = encode_batch
        """The sink's format: the payloads of a batch's events."""
        self.stream = stream
        self.framer = framer
        self.router = router
        self.expected = sequence
        """The stream's last sequence once everything sent so far is stored."""
        self.previous_id: bytes | None = None
        """The id of the session's last message; None before its first."""
        self.last = tail
        """The position of the last event stored or sent; events at or below it are skipped."""
        self.skipped = 0
        self.max_message_bytes = max_message_bytes
        self.careful = careful
        """Ask an acknowledgement of every message, not only of each write's last, until a
        flush succeeds (see the module docstring)."""
        self.rejected: SinkRejectedError | None = None
        """An event refused before it was sent; nothing after it is sent."""
        self._wire = _Wire.of(connection.client)
        self._awaited: dict[str, _Awaited] = {}
        self._acks: dict[str, Ack] = {}
        self._all_acked = asyncio.Event()
        self._inbox = b""

    async def start(self) -> None:
        """Subscribe to this session's acknowledgements."""
        inbox = self.connection.client.new_inbox()
        self._inbox = inbox.encode()
        await self.connection.client.subscribe(f"{inbox}.*", cb=self._on_ack)

    async def _on_ack(self, message: Msg) -> None:
        # Only records: the owning code reads the acknowledgements in ``settle``.
        token = message.subject.rpartition(".")[2]
        if token in self._awaited and token not in self._acks:
            self._acks[token] = Ack.parse(message)
            if len(self._acks) == len(self._awaited):
                self._all_acked.set()

    async def publish(self, batch: Sequence[Event]) -> None:
        """Send ``batch`` in order without waiting for acknowledgements, ``SEND_EVERY`` messages
        at a time; stop before an event that cannot be sent (``rejected``)."""
        fresh = past(list(batch), self.last)
        self.skipped += len(batch) - len(fresh)  # a replay of what the stream holds: never twice
        for start in range(0, len(fresh), SEND_EVERY):
            if start:
                await asyncio.sleep(0)  # the flusher sends the part before; stored as this encodes
            await self._publish_part(fresh[start : start + SEND_EVERY])

    async def _publish_part(self, part: list[Event]) -> None:
        """Encode and send ``part``, its last message sent (every one, if ``careful``) with a
        reply subject."""
        framer, router, limit = self.framer, self.router, self.max_message_bytes
        if self.rejected is not None:
            return
        sent: list[tuple[Event, str, bytes, bytes]] = []
        for event, payload in zip(part, self.encode_batch(part), strict=True):
            try:
                subject = router.subject_for(event)
            except SinkRejectedError as error:
                self.rejected = error
                break
            ident = framer.msg_id(event)
            block = framer.header_block(
                event, msg_id=ident, expected_sequence=self.expected, previous_id=self.previous_id
            )
            size = len(block) + len(payload)
            if size > limit:
                self.rejected = _too_large(event, size=size, limit=limit)
                break
            self.expected += 1
            self.previous_id = ident
            sent.append((event, subject, block, payload))
        if not sent:
            return
        self.last = sent[-1][0].position
        commands = []
        last = len(sent) - 1
        for number, (event, subject, block, payload) in enumerate(sent):
            sequence = self.expected - last + number
            if self.careful or number == last:
                token = b"%d" % sequence
                self._awaited[token.decode()] = _Awaited(event, subject, sequence)
                self._all_acked.clear()
                head = b"HPUB %s %s.%s %d %d\r\n" % (
                    subject.encode(),
                    self._inbox,
                    token,
                    len(block),
                    len(block) + len(payload),
                )
            else:
                head = b"HPUB %s %d %d\r\n" % (
                    subject.encode(),
                    len(block),
                    len(block) + len(payload),
                )
            commands.append(b"%s%s%s\r\n" % (head, block, payload))
        await self._wire.send(commands)

    @property
    def pending(self) -> int:
        """Acknowledgements ``settle`` will wait for."""
        return len(self._awaited)

    async def settle(self, *, timeout: float) -> SinkError | None:
        """Wait until every acknowledgement asked for has arrived (or the connection is gone,
        or the server reported a permission violation, or ``timeout`` passed) and forget them;
        the error for the first message not stored where the chain says, else the rejection
        that stopped ``publish``, else None. A flush that succeeds ends ``careful``."""
        awaited = list(self._awaited.items())
        if len(self._acks) < len(awaited):
            connection = self.connection
            waiters = [
                asyncio.ensure_future(event.wait())
                for event in (self._all_acked, connection.closed, connection.denied)
            ]
            await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()
        acks, self._acks = self._acks, {}
        self._awaited.clear()
        self._all_acked.clear()
        for token, item in awaited:
            failure = self._verdict(item, acks.get(token), timeout=timeout)
            if failure is not None:
                return failure
        if self.rejected is None:
            self.careful = False
        return self.rejected

    def _verdict(self, item: _Awaited, ack: Ack | None, *, timeout: float) -> SinkError | None:
        event = item.event
        what = (
            f"the message of key {printable_key(event.key)!r} at revision {event.revision} "
            f"(index {event.index}) on {item.subject!r}"
        )
        if ack is None:
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
                "after it is written. Raise the stream's max_msg_size, or store a smaller value",
                key=event.key,
                revision=event.revision,
                position=event.position,
            )
        if ack.code >= 500:
            return SinkUnavailableError(f"nats: JetStream could not store {what}: {detail}")
        return SinkRejectedError(
            f"nats: stream {self.stream!r} refused {what}: {detail}; nothing after it is written",
            key=event.key,
            revision=event.revision,
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
        position=event.position,
    )
