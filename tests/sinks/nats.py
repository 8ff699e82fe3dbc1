"""The NATS sink's destination: a JetStream stream and subject of its own on a nats-server.

Read back through a pull consumer of the test's own (``tests.fixtures.nats.drain``), never
through the sink: a message whose ``Nats-Msg-Id`` is not ``<pipeline>:<position>`` of the
event it holds, whose revision, op or pipeline header disagrees with it, or whose subject is
not the destination's, is a flaw. Its tail is the stream's last message (``STREAM.MSG.GET``
of the last sequence), which is also the sink's own durable position. The server keeps file
storage, so the chaos restarts it on its data.

A benchmark counts the stream with its info (messages, last sequence) and its last message's
headers, or follows it with an ephemeral pull consumer (no acknowledgements), in an event
loop of the reader's own.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bridge.events import Event
from sinks.nats.messages import HEADER_OP, HEADER_PIPELINE, HEADER_REVISION, MSG_ID
from tests.fixtures.nats import (
    NatsServer,
    StoredMessage,
    dedicated_server,
    drain,
    last_message,
    run_on,
)
from tests.sinks.base import Destination, Flaw, Progress, RawRecord, Seen, SinkServer

FOLLOW_BATCH = 20_000


@dataclass
class NatsDestination(Destination):
    name = "nats"
    restartable = True
    impatient = {"timeout": "2", "flush_timeout": "3"}

    url: str
    stream: str
    subject: str

    @classmethod
    def server(cls, workdir: Path, *, persistent: bool) -> NatsServer:
        """A nats-server of its own, JetStream stored in ``workdir`` whatever ``persistent``
        says (the sink's streams use file storage by default)."""
        return dedicated_server(workdir)

    @classmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        assert isinstance(server, NatsServer)
        return cls(url=server.url, stream=f"{tag}-events", subject=f"{tag}.events")

    def settings(self) -> dict[str, Any]:
        return {"servers": self.url, "stream": self.stream, "subject": self.subject}

    def messages(self) -> list[StoredMessage]:
        """Every message of the stream, in stream order (none if it does not exist yet)."""
        try:
            return run_on(self.url, drain, stream=self.stream)
        except nats.js.errors.NotFoundError:
            return []

    def records(self, *, pipeline: str) -> dict[str, list[RawRecord]]:
        return {
            "nats": [
                RawRecord(
                    message.data,
                    headers={name: value.encode() for name, value in message.headers.items()},
                )
                for message in self.messages()
            ]
        }

    def streams(self, *, pipeline: str, flaw: Flaw) -> dict[str, list[Event]]:
        events = []
        for message in self.messages():
            event = message.event()
            if not self._well_formed(message, event, pipeline=pipeline):
                flaw(f"message {message.sequence} holds {event.position} {event.key!r}")
            events.append(event)
        return {"nats": events}

    def _well_formed(self, message: StoredMessage, event: Event, *, pipeline: str) -> bool:
        headers = message.headers
        return (
            message.subject == self.subject
            and headers.get(MSG_ID) == f"{pipeline}:{event.position}"
            and headers.get(HEADER_REVISION) == str(event.revision)
            and headers.get(HEADER_OP) == event.op.value
            and headers.get(HEADER_PIPELINE) == pipeline
        )

    def tail(self, *, pipeline: str, prefix: bytes) -> Event | None:
        message = run_on(self.url, last_message, stream=self.stream)
        return None if message is None else message.event()

    def reader(self) -> "NatsReader":
        return NatsReader(url=self.url, stream=self.stream)


class NatsReader:
    """The stream, counted by its info and last message, or followed by a pull consumer."""

    def __init__(self, *, url: str, stream: str) -> None:
        self._url = url
        self._stream = stream
        self._loop = asyncio.new_event_loop()
        self._client: Client | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    def _js(self) -> JetStreamContext:
        if self._client is None:
            self._client = self._loop.run_until_complete(
                nats.connect(self._url, connect_timeout=5, allow_reconnect=False)
            )
        return self._client.jetstream(timeout=10)

    def progress(self) -> Progress:
        js = self._js()
        try:
            info = self._loop.run_until_complete(js.stream_info(self._stream))
        except nats.js.errors.NotFoundError:
            return Progress()
        records = info.state.messages
        if not records:
            return Progress()
        last = self._loop.run_until_complete(js.get_msg(self._stream, seq=info.state.last_seq))
        headers = last.headers or {}
        return Progress(
            records=records,
            last_revision=int(headers[HEADER_REVISION]),
            last_op=headers[HEADER_OP],
        )

    def follow(self, *, timeout: float) -> list[Seen]:
        deadline = time.monotonic() + timeout
        if self._subscription is None:
            try:
                self._subscription = self._loop.run_until_complete(self._subscribe(self._js()))
            except nats.js.errors.NotFoundError:  # the bridge has not created it yet
                time.sleep(timeout)
                return []
        remaining = max(0.001, deadline - time.monotonic())
        try:
            messages = self._loop.run_until_complete(
                self._subscription.fetch(FOLLOW_BATCH, timeout=remaining)
            )
        except nats.errors.TimeoutError:
            return []
        return [
            (int(message.headers[HEADER_REVISION]), message.headers[HEADER_OP])
            for message in messages
            if message.headers
        ]

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        await js.stream_info(self._stream)
        return await js.pull_subscribe(
            "",
            stream=self._stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._client.close())
            self._client = None
        self._loop.close()
