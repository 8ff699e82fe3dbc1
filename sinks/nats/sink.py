"""``NatsSink``: the ``bridge.sink`` contract on a JetStream stream, exactly once, fenced.

**The position is the stream's last message.** One stream belongs to one pipeline
(``BRIDGE_NAME``); every event is one message, so the stream's sequence order is the
pipeline's event order whatever subject each message was routed to. ``open()`` reads the
stream's last sequence and the message stored there (``STREAM.MSG.GET``), checks that it is
this pipeline's, and returns its event: that is the durable tail, read back from the data
itself, so a ``kill -9`` at any moment loses no position and repeats nothing. A stream that
holds no message (new, purged, or every message past ``max_age``) has no tail, and the pump
starts with a snapshot.

**Every publish is conditional** (``sinks.nats.publisher``): it carries
``Nats-Expected-Last-Sequence`` (the sequence the session believes is last) and, after the
session's first, ``Nats-Expected-Last-Msg-Id`` (the id of the session's previous message).
The server stores a message only when both hold, so each message lands directly after the
event that precedes it in the pipeline, or not at all. This is what fences a second writer:
an instance that lost leadership and resumes after a pause, or a twin with the same
``BRIDGE_NAME``, sends messages whose expectations no longer hold once the other appended,
and the server refuses them instead of interleaving two sessions. The refused writer gets
``SinkUnavailableError``; its reopen reads the new tail, so even two writers that keep going
produce one gap-free, duplicate-free sequence (each message is the successor of the one
before it). ``Nats-Msg-Id`` (``<pipeline>:<revision>-<index>``) is set too, so a consumer or
a server-side dedupe sees each event's identity, but nothing relies on the duplicate window.

**Routed subjects** do not change any of this: the sequence checks are stream-wide, not per
subject (``Nats-Expected-Last-Subject-Sequence`` would fence each subject alone and leave the
order between subjects unguarded). Snapshot markers go to the template's marker subject.

**Acknowledgements.** The chain makes one acknowledgement per batch enough: the last message
held where the chain says proves every message before it is (``sinks.nats.publisher``). After
a failed flush the next session has every message of its first batch acknowledged, so that a
message the server refuses for a reason of its own is named. A publish the user may not make
is dropped by the server with a permission violation, which fails the flush at once with
``SinkRejectedError`` naming the subject, instead of waiting for an acknowledgement that
never comes.

**Sizes.** A message larger than the server's ``max_payload`` would make the server close the
connection, so each one is measured before it is sent; the first that is too large is
refused with ``SinkRejectedError`` naming its key and revision, after the events before it
were acknowledged, and nothing after it is sent.

**Threads.** nats-py is asyncio; the sink runs one event loop on one named thread per open
session (``sinks.nats.loop``) and waits on it with deadlines. ``close()`` closes the
connection, cancels what is left and joins the thread.
"""

import logging
from collections.abc import Coroutine, Sequence
from typing import Any, Self, TypeVar

from bridge.errors import SinkError, SinkUnavailableError
from bridge.events import Event
from bridge.formats import EventFormat
from bridge.sink import NATIVE, Sink, SinkContext
from config.keyspace import KeySpace
from config.output import FormatName
from sinks.nats.connection import (
    Connection,
    connect,
    deadline,
    hang_up,
    open_stream,
    tail_of,
    translate,
)
from sinks.nats.loop import LoopThread
from sinks.nats.messages import Framer
from sinks.nats.publisher import Publisher
from sinks.nats.reader import NatsReader
from sinks.nats.settings import NatsSettings
from sinks.nats.subjects import SubjectRouter

log = logging.getLogger(__name__)

T = TypeVar("T")


class NatsSink(Sink):
    """Events as JetStream messages, exactly once; see the module docstring."""

    name = "nats"
    settings_model = NatsSettings
    formats = frozenset(FormatName)

    def __init__(
        self,
        *,
        settings: NatsSettings,
        pipeline: str,
        keyspace: KeySpace,
        record_format: EventFormat = NATIVE,
    ) -> None:
        self.settings = settings
        self.format = record_format
        self.pipeline = pipeline
        self.router = SubjectRouter(settings.template, keyspace=keyspace)
        self.framer = Framer(pipeline)
        self._loop: LoopThread | None = None
        self._connection: Connection | None = None
        self._publisher: Publisher | None = None
        self._broken = False
        self._careful = False
        """A write or flush failed: the next session acknowledges every message of its first
        batch (``Publisher.careful``)."""

    @classmethod
    def from_settings(cls, settings: NatsSettings, *, context: SinkContext) -> Self:
        return cls(
            settings=settings,
            pipeline=context.pipeline,
            keyspace=context.keyspace,
            record_format=context.format,
        )

    @classmethod
    def reader(cls, settings: NatsSettings, *, context: SinkContext) -> NatsReader:
        """The pipeline's events in the stream, read back without changing anything
        (``sinks.nats.reader``)."""
        return NatsReader(
            settings=settings, pipeline=context.pipeline, record_format=context.format
        )

    def open(self) -> Event | None:
        """Connect, find or create the stream, and return the event of its last message."""
        self.close()
        self._loop = LoopThread(name=f"nats-{self.pipeline}")
        try:
            tail = self._run(self._open(), doing=f"opening stream {self.settings.stream!r}")
        except SinkError:
            self.close()
            raise
        log.info(
            "nats sink ready",
            extra={
                "servers": ",".join(self.settings.servers),
                "stream": self.settings.stream,
                "subject": self.settings.subject,
                "position": "empty" if tail is None else str(tail.position),
            },
        )
        return tail

    async def _open(self) -> Event | None:
        settings = self.settings
        self._connection = connection = await connect(settings, pipeline=self.pipeline)
        info = await open_stream(connection, settings=settings)
        tail = await tail_of(
            connection, info, settings=settings, pipeline=self.pipeline, decode=self.format.decode
        )
        publisher = Publisher(
            connection,
            stream=settings.stream,
            framer=self.framer,
            router=self.router,
            sequence=tail.sequence,
            tail=None if tail.event is None else tail.event.position,
            max_message_bytes=tail.max_message_bytes,
            careful=self._careful,
            encode_batch=self.format.encode_batch,
        )
        await publisher.start()
        self._publisher = publisher
        return tail.event

    def write(self, batch: Sequence[Event]) -> None:
        """Send ``batch`` without waiting for acknowledgements (``flush`` waits)."""
        publisher = self._require_publisher()
        if not batch:
            return
        first, last = batch[0].position, batch[-1].position
        skipped = publisher.skipped
        self._run(publisher.publish(batch), doing=f"publishing {first}..{last}")
        if publisher.skipped > skipped:
            log.warning(
                "nats sink skipped events the stream already holds",
                extra={"skipped": publisher.skipped - skipped, "last": str(last)},
            )

    def flush(self) -> None:
        """Return once every message written is stored where the chain says; raise the
        error of the first that is not (``sinks.nats.publisher``), or ``SinkRejectedError``
        when the server reported a permission violation."""
        publisher = self._require_publisher()
        timeout = self.settings.flush_timeout
        count = publisher.pending
        doing = f"waiting for {count} acknowledgements"
        failure = self._run(publisher.settle(timeout=timeout), doing=doing)
        connection = self._connection
        if connection is not None and connection.denied.is_set():
            failure = translate(
                connection.permission_error() or failure or SinkUnavailableError(doing),
                settings=self.settings,
                doing=doing,
                connection=connection,
            )
        if failure is not None:
            self._fail()
            raise failure
        self._careful = publisher.careful

    def close(self) -> None:
        """Close the connection and stop the loop thread; idempotent."""
        self._publisher = None
        self._broken = False
        loop, self._loop = self._loop, None
        connection, self._connection = self._connection, None
        hang_up(loop, connection, timeout=self.settings.timeout)

    def _run(self, coroutine: Coroutine[Any, Any, T], *, doing: str) -> T:
        """Run ``coroutine`` on the loop thread; every failure becomes a ``SinkError``."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise SinkUnavailableError("nats: the sink is not open")
        try:
            return loop.run(coroutine, timeout=deadline(self.settings))
        except SinkError:
            self._fail()
            raise
        except Exception as error:
            self._fail()
            raise translate(
                error, settings=self.settings, doing=doing, connection=self._connection
            ) from error

    def _fail(self) -> None:
        """After a failure: nothing more until a reopen, whose session is careful."""
        self._broken = True
        self._careful = True

    def _require_publisher(self) -> Publisher:
        if self._broken:
            raise SinkUnavailableError("nats: a write or flush failed; reopen the sink first")
        if self._publisher is None:
            raise SinkUnavailableError("nats: the sink is not open")
        return self._publisher
