"""The NATS sink's destination: a JetStream stream and subject of its own on a nats-server.

Its server is one of the tests' own, taking messages up to ``MAX_PAYLOAD``. Read back through
a pull consumer of the test's own (``tests.fixtures.nats.drain``), never through the sink: a
message whose ``Nats-Msg-Id`` is not ``<pipeline>:<position>`` of the event it holds, whose
revision, op or pipeline header disagrees with it, or whose subject is not the
destination's, is a flaw. Its tail is the stream's last message (``STREAM.MSG.GET`` of the
last sequence), which is also the sink's own durable position. The server keeps file
storage, so the chaos restarts it on its data.

A benchmark counts the stream with its info (messages, last sequence) and its last message's
headers, or follows it with an ephemeral pull consumer (no acknowledgements), in an event
loop of the reader's own. Its bare client (``NatsBareClient``) is nats-py's own pipelined
JetStream publisher, ``publish_async``, copying a bridge's messages into a fresh stream.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from bridge.events import Event
from sinks.nats.messages import (
    EXPECTED_LAST_MSG_ID,
    EXPECTED_LAST_SEQUENCE,
    HEADER_OP,
    HEADER_PIPELINE,
    HEADER_REVISION,
    MSG_ID,
)
from sinks.nats.settings import NatsSettings
from tests.fixtures.nats import (
    NatsServer,
    NatsSetup,
    StoredMessage,
    dedicated_server,
    drain,
    last_message,
    run_on,
)
from tests.sinks.base import Destination, Flaw, Progress, RawRecord, Seen, SinkServer

FOLLOW_BATCH = 20_000
MAX_PAYLOAD = 8 * 1024 * 1024
"""nats-server's default ``max_payload`` (1 MiB) refuses an event carrying a 1 MiB value and a
1 MiB previous value (about 2.8 MB of JSON, base64), as the data shape tests and benchmarks
write; 8 MiB is the most nats-server takes without warning that larger is discouraged."""
ACK_SECONDS = 60.0
"""How long a bare client's batch may wait for its acknowledgements before the copy fails."""

Message = tuple[dict[str, str], bytes]
"""A bare client's record: a message's headers and payload."""


@dataclass
class NatsDestination(Destination):
    name = "nats"
    restartable = True
    impatient = {"timeout": "2", "flush_timeout": "3"}
    bare_client = "nats-py publish_async"

    url: str
    stream: str
    subject: str

    @classmethod
    def server(cls, workdir: Path, *, persistent: bool) -> NatsServer:
        """A nats-server of its own, JetStream stored in ``workdir`` whatever ``persistent``
        says (the sink's streams use file storage by default), taking messages up to
        ``MAX_PAYLOAD``."""
        return dedicated_server(workdir, NatsSetup(config=f"max_payload: {MAX_PAYLOAD}"))

    @classmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        assert isinstance(server, NatsServer)
        return cls(url=server.url, stream=f"{tag}-events", subject=f"{tag}.events")

    def settings(self) -> dict[str, Any]:
        return {"servers": self.url, "stream": self.stream, "subject": self.subject}

    def create_stream(self, *, max_msg_size: int) -> None:
        """Create the stream as the sink would, but holding messages up to ``max_msg_size``
        bytes, as an operator may: the sink then refuses larger events for good."""
        config = stream_config(self.stream, subject=self.subject, max_msg_size=max_msg_size)
        run_on(self.url, _add_stream, config=config)

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

    def bare(self, source: Self, *, pipeline: str, from_revision: int) -> "NatsBareClient":
        return NatsBareClient(source=source, target=self, from_revision=from_revision)


class NatsBareClient:
    """nats-py's own pipelined JetStream publisher copying a bridge's stream: each batch
    published with ``publish_async`` (an acknowledgement requested per message, collected by
    the library), then every acknowledgement awaited. The copy goes to a stream created as the
    sink creates one with its default settings; each message keeps its payload and headers,
    its subject becomes this destination's, and its ``Nats-Expected-Last-Sequence`` is
    rebased onto the fresh stream (the first message's expected last id is dropped), so that
    the server checks for the copy what it checks for the bridge."""

    def __init__(self, *, source: NatsDestination, target: NatsDestination, from_revision: int):
        self._source = source
        self._target = target
        self._from_revision = from_revision
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._connect(target.url))
        self._js = self._client.jetstream(timeout=ACK_SECONDS)
        self._loop.run_until_complete(
            self._js.add_stream(stream_config(target.stream, subject=target.subject))
        )
        self._copied = 0

    @staticmethod
    async def _connect(url: str) -> Client:
        return await nats.connect(url, connect_timeout=5, allow_reconnect=False)

    def batches(self, size: int) -> Iterator[Sequence[Message]]:
        reader = self._loop.run_until_complete(self._connect(self._source.url))
        try:
            yield from self._read(reader.jetstream(timeout=10), size=size)
        finally:
            self._loop.run_until_complete(reader.close())

    def _read(self, js: JetStreamContext, *, size: int) -> Iterator[list[Message]]:
        info = self._loop.run_until_complete(js.stream_info(self._source.stream))
        subscription = self._loop.run_until_complete(
            js.pull_subscribe(
                "", stream=self._source.stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
            )
        )
        remaining = info.state.messages
        while remaining:
            fetched = self._loop.run_until_complete(
                subscription.fetch(min(size, remaining), timeout=10)
            )
            remaining -= len(fetched)
            batch = [
                self._rebased(dict(message.headers or {}), message.data)
                for message in fetched
                if int((message.headers or {})[HEADER_REVISION]) >= self._from_revision
            ]
            if batch:
                yield batch

    def _rebased(self, headers: dict[str, str], data: bytes) -> Message:
        headers[EXPECTED_LAST_SEQUENCE] = str(self._copied)
        if not self._copied:
            headers.pop(EXPECTED_LAST_MSG_ID, None)
        self._copied += 1
        return headers, data

    def write(self, batch: Sequence[Message]) -> None:
        self._loop.run_until_complete(self._publish(batch))

    async def _publish(self, batch: Sequence[Message]) -> None:
        acks = [
            await self._js.publish_async(self._target.subject, data, headers=headers)
            for headers, data in batch
        ]
        # An error acknowledgement leaves its future pending in nats-py 2.16: hence the bound.
        done = await asyncio.wait_for(asyncio.gather(*acks), ACK_SECONDS)
        expected = int(batch[-1][0][EXPECTED_LAST_SEQUENCE]) + 1
        if done[-1].seq != expected:
            raise RuntimeError(f"the copy's last message went to {done[-1].seq}, not {expected}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._client.close())
        self._loop.close()


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
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when idle
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


async def _add_stream(js: JetStreamContext, *, config: StreamConfig) -> None:
    await js.add_stream(config)


def stream_config(name: str, *, subject: str, max_msg_size: int | None = None) -> StreamConfig:
    """A stream as the sink creates one with its default settings (``max_msg_size``: a limit
    of the operator's own)."""
    defaults = NatsSettings()
    return StreamConfig(
        name=name,
        subjects=[subject],
        storage=defaults.storage,
        num_replicas=defaults.replicas,
        duplicate_window=defaults.duplicate_window,
        allow_direct=True,
        max_msg_size=max_msg_size,
    )
