"""``NatsReader``: the pipeline's events read back from its JetStream stream, in position order.

**Order.** One stream belongs to one pipeline and the sink publishes each message only right
after the one before it (``Nats-Expected-Last-Sequence``, ``sinks.nats.sink``), so the
stream's sequence order is the pipeline's position order. The reader takes the messages on
the subjects the template renders (``NatsSettings.subject_filter``) whose ``pipeline``
header is this pipeline's, decodes each payload with the sink's format and checks it against
its ``Nats-Msg-Id`` (``sinks.nats.messages.read_message``). A message of another pipeline or
application on those subjects is skipped, never taken for one of ours.

**Where to start.** ``events(after=P)`` finds the first sequence past ``P`` by binary search
over the stream's sequences: each probe is one ``STREAM.MSG.GET`` of the next message on the
filter at or after a sequence (``next_by_subj``), whose ``revision`` and ``index`` headers
give its position without decoding the payload. That is about ``log2(messages)`` requests,
however long the stream: a consumer resuming near the end of a long stream does not read it
all. (``STREAM.MSG.GET`` rather than direct gets: it needs no ``allow_direct`` on a stream
someone else created, and batched direct gets need nats-server 2.11.) Messages deleted from
the stream, by hand or by retention, are simply not there; positions past ``P`` are also
checked again as they are read, so a foreign message in the way of a probe costs time, not
correctness.

**Pages, and nothing left behind.** Each page is read by an ephemeral pull consumer created
for it at the page's first sequence (acknowledgements off, memory storage, one replica),
fetched in pulls bounded in bytes by the stream's average message size, and deleted at the
end of the page: between pages, and when a caller abandons the iteration, the server holds
nothing of the reader; a consumer orphaned by a reader killed mid-page expires after
``_CONSUMER_LINGER_SECONDS``. The iteration ends with the first page after which the
consumer had nothing more pending: what the stream held when it was read, a live bridge's
newer messages included up to then. The reader never creates the stream: a missing one holds
nothing.

**No server-side filter on the consumer.** It takes every subject of the stream, and the
reader matches each message's subject against the filter itself: on nats-server 2.9 (file
storage), a consumer filtered by a wildcard and started mid-stream under-counts what is
pending and stops delivering early (the tests met it), while an unfiltered one does not; a
stream of one pipeline rarely holds anything else. The probes' ``next_by_subj`` is not
affected.

**Threads.** nats-py is asyncio; like the sink, the reader runs one event loop on one named
thread (``sinks.nats.loop``), created on first use and stopped by ``close()``, and the
synchronous iterator waits on it with deadlines. Every failure is the sink's own one-line
error (``sinks.nats.connection.translate``): unreachable servers and wrong credentials name
the settings to check.
"""

import logging
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamInfo

from bridge.errors import SinkError, SinkUnavailableError
from bridge.events import Event, Position
from bridge.formats import EventFormat
from bridge.reader import StreamReader
from sinks.nats.connection import (
    Connection,
    check_subjects,
    connect,
    deadline,
    hang_up,
    translate,
)
from sinks.nats.loop import LoopThread
from sinks.nats.messages import HEADER_INDEX, HEADER_PIPELINE, HEADER_REVISION, read_message
from sinks.nats.settings import NatsSettings
from sinks.nats.subjects import covers

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_MESSAGES = 1000
"""The most messages one page holds."""
PAGE_BYTES = 16 * 1024 * 1024
"""What one page should hold at most, judged by the stream's average message size: well under
the 64 MiB a nats-server lets a client fall behind before it closes the connection."""
CONSUMER_PREFIX = "etcd-bridge-reader-"
"""How the name of a page's consumer starts, so that an operator listing consumers knows it."""
_CONSUMER_LINGER_SECONDS = 30.0
"""How long the server keeps a page's consumer that nobody pulls from (its reader died)."""


@dataclass(frozen=True, slots=True)
class _Message:
    """One message as a page brings it: what ``read_message`` needs, and its sequence."""

    sequence: int
    subject: str
    headers: dict[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class _Page:
    messages: list[_Message]
    more: bool
    """Messages followed the page's last when it was read."""


class NatsReader(StreamReader):
    """The events one pipeline's stream holds; see the module docstring."""

    def __init__(
        self,
        *,
        settings: NatsSettings,
        pipeline: str,
        record_format: EventFormat,
        page_messages: int = PAGE_MESSAGES,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.format = record_format
        self.page_messages = page_messages
        self._loop: LoopThread | None = None
        self._connection: Connection | None = None

    def events(self, *, after: Position | None = None) -> Iterator[Event]:
        """Every event of the pipeline the stream holds past ``after``, in position order,
        read a page at a time (see the module docstring)."""
        stream = self.settings.stream
        info = self._run(self._stream_info(), doing=f"reading stream {stream!r}")
        if info is None or info.state.messages == 0:
            return
        check_subjects(info, settings=self.settings)
        sequence = info.state.first_seq
        if after is not None:
            sequence = self._run(
                self._first_after(after, first=sequence, last=info.state.last_seq),
                doing=f"looking for the first message past {after} in stream {stream!r}",
            )
        page_size = _page_size(info, limit=self.page_messages)
        subjects = self.settings.subject_filter
        skipped = 0
        while True:
            page = self._run(
                self._page(sequence, size=page_size),
                doing=f"reading stream {stream!r} from sequence {sequence}",
            )
            for message in page.messages:
                if (
                    not covers(subjects, message.subject)
                    or message.headers.get(HEADER_PIPELINE) != self.pipeline
                ):
                    skipped += 1
                    continue
                event = read_message(
                    where=f"nats: message {message.sequence} of stream {stream!r}",
                    headers=message.headers,
                    data=message.data,
                    pipeline=self.pipeline,
                    decode=self.format.decode,
                )
                if after is None or event.position > after:
                    yield event
            if not page.more or not page.messages:
                break
            sequence = page.messages[-1].sequence + 1
        if skipped:
            log.warning(
                "nats reader skipped messages of other subjects or pipelines",
                extra={"stream": stream, "skipped": skipped, "pipeline": self.pipeline},
            )

    def close(self) -> None:
        """Close the connection and stop the loop thread; idempotent."""
        loop, self._loop = self._loop, None
        connection, self._connection = self._connection, None
        hang_up(loop, connection, timeout=self.settings.timeout)

    def _run(self, coroutine: Coroutine[Any, Any, T], *, doing: str) -> T:
        """Run ``coroutine`` on the loop thread (started on first use); every failure becomes
        the sink's ``SinkError``."""
        if self._loop is None:
            self._loop = LoopThread(name=f"nats-reader-{self.pipeline}")
        try:
            return self._loop.run(coroutine, timeout=deadline(self.settings))
        except SinkError:
            raise
        except Exception as error:
            raise translate(
                error, settings=self.settings, doing=doing, connection=self._connection
            ) from error

    async def _js(self) -> Connection:
        if self._connection is None:
            self._connection = await connect(self.settings, pipeline=self.pipeline)
        return self._connection

    async def _stream_info(self) -> StreamInfo | None:
        connection = await self._js()
        try:
            return await connection.js.stream_info(self.settings.stream)
        except nats.js.errors.NotFoundError:
            return None

    async def _first_after(self, after: Position, *, first: int, last: int) -> int:
        """The first sequence whose message on the filter, if any, is past ``after``: the
        smallest ``s`` in ``first..last + 1`` whose next own message is past ``after`` or
        missing, which only grows with ``s`` since positions grow with sequences."""
        low, high = first, last + 1
        while low < high:
            middle = (low + high) // 2
            found = await self._next_own(middle, last=last)
            if found is None or found[1] > after:
                high = middle
            else:  # everything up to it is at or before ``after``
                low = found[0] + 1
        return low

    async def _next_own(self, sequence: int, *, last: int) -> tuple[int, Position] | None:
        """The sequence and position of this pipeline's first message on the filter at or
        after ``sequence`` (and at most ``last``), read from its headers; None if there is
        none."""
        connection = await self._js()
        while sequence <= last:
            try:
                message = await connection.js.get_msg(
                    self.settings.stream,
                    seq=sequence,
                    subject=self.settings.subject_filter,
                    next=True,
                )
            except nats.js.errors.NotFoundError:
                return None
            found = message.seq or sequence
            headers = message.headers or {}
            if found > last:
                return None
            if headers.get(HEADER_PIPELINE) == self.pipeline:
                return found, Position(int(headers[HEADER_REVISION]), int(headers[HEADER_INDEX]))
            sequence = found + 1
        return None

    async def _page(self, sequence: int, *, size: int) -> _Page:
        """Up to ``size`` messages of the stream from ``sequence`` on, through a consumer made
        for this page and deleted after it."""
        connection = await self._js()
        js, stream = connection.js, self.settings.stream
        name = f"{CONSUMER_PREFIX}{uuid.uuid4().hex}"
        info = await js.add_consumer(
            stream,
            config=ConsumerConfig(
                name=name,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(1, sequence),
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=_CONSUMER_LINGER_SECONDS,
            ),
        )
        try:
            pending = info.num_pending or 0
            if pending == 0:
                return _Page(messages=[], more=False)
            subscription = await js.pull_subscribe_bind(name=name, stream=stream)
            try:
                return await self._fetch(subscription, wanted=min(size, pending))
            finally:
                await subscription.unsubscribe()
        finally:
            try:
                await js.delete_consumer(stream, name)
            except nats.js.errors.NotFoundError:
                pass  # it expired: nothing left behind either way

    async def _fetch(
        self, subscription: JetStreamContext.PullSubscription, *, wanted: int
    ) -> _Page:
        """Pull until ``wanted`` messages came or the consumer has nothing more pending."""
        messages: list[_Message] = []
        more = True
        while more and len(messages) < wanted:
            try:
                fetched: list[Msg] = await subscription.fetch(
                    wanted - len(messages), timeout=self.settings.timeout
                )
            except nats.errors.TimeoutError:
                raise SinkUnavailableError(
                    f"nats at {', '.join(self.settings.servers)}: stream "
                    f"{self.settings.stream!r} delivered no message within "
                    f"{self.settings.timeout:g}s (BRIDGE_NATS__TIMEOUT) although some are "
                    "pending"
                ) from None
            for message in fetched:
                metadata = message.metadata
                messages.append(
                    _Message(
                        sequence=metadata.sequence.stream,
                        subject=message.subject,
                        headers=dict(message.headers or {}),
                        data=message.data,
                    )
                )
                more = metadata.num_pending > 0
        return _Page(messages=messages, more=more)


def _page_size(info: StreamInfo, *, limit: int) -> int:
    """Messages per page: ``limit``, fewer when the stream's messages are large on average."""
    average = info.state.bytes // max(1, info.state.messages)
    return max(1, min(limit, PAGE_BYTES // max(1, average)))
