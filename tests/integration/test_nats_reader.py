"""The NATS sink's reader (``sinks.nats.reader``) against what a JetStream consumer of the
tests' own reads (``tests.fixtures.nats.drain``), on streams the real bridge wrote.

Three bridges (``python -m bridge run``) write one history into three streams, one per record
format: an initial snapshot of keys written before they start (a non-UTF-8 key among them),
then puts, updates, deletes and multi-key transactions, cut into batches of 7 events so that
revisions straddle batches. The native stream is routed by key segment, so the reader's
subject filter has wildcards. The reader must yield exactly what the tests' consumer reads,
in position order, from the start and past any position; the other formats must read back to
what the formats' own consumers (``tests.formats``) read and to the native stream's events.
A message deleted with the JetStream API must be missing from what the reader yields, and the
reader must leave no consumer on the server and no thread behind.
"""

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import pytest

from bridge.contract import History, feed
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Op, Position
from config.keyspace import KeySpace
from sinks.nats.messages import HEADER_REVISION
from sinks.nats.reader import CONSUMER_PREFIX, NatsReader
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.nats import NatsFactory, NatsNames, NatsServer, NatsSetup, last_message
from tests.fixtures.processes import free_port, wait_for
from tests.formats import cloudevents_consumer, debezium_consumer
from tests.formats.fields import Change
from tests.history import RecordingWriter
from tests.sinks.base import build, build_reader

FORMATS = ("native", "debezium", "cloudevents")
STEPS = 80


@dataclass(frozen=True)
class Run:
    """One bridge's stream: where it is and how the bridge was configured."""

    record_format: str
    pipeline: str
    stream: str
    subject: str
    prefix: str

    def reader(self, url: str) -> NatsReader:
        return nats_reader(
            self.pipeline,
            prefix=self.prefix.encode(),
            servers=url,
            stream=self.stream,
            subject=self.subject,
            format=self.record_format,
        )


def nats_reader(pipeline: str, *, prefix: bytes = b"/app/", **settings: Any) -> NatsReader:
    """The product's reader, built from ``settings`` as ``etcd-bridge verify`` builds it."""
    reader = build_reader("nats", pipeline=pipeline, keyspace=KeySpace.of([prefix]), **settings)
    assert isinstance(reader, NatsReader)
    return reader


@pytest.fixture(scope="module")
def runs(
    etcd: EtcdServer, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Run]]:
    """The three streams, each holding the whole history once the bridges have stopped."""
    tag = uuid.uuid4().hex[:10]
    prefix = f"/test/{tag}/"
    runs = {
        name: Run(
            record_format=name,
            pipeline=f"p{tag}{name[:3]}",
            stream=f"test-{tag}-{name}",
            subject=f"test.{tag}.{name}.{{1}}" if name == "native" else f"test.{tag}.{name}",
            prefix=prefix,
        )
        for name in FORMATS
    }
    factory = BridgeFactory(tmp_path_factory.mktemp("nats-reader-bridges"))
    try:
        with etcd.client() as client:
            writer = RecordingWriter(client, prefix=prefix, seed=17)
            writer.put_keys([(f"{prefix}seed/{n:02d}".encode(), b"s%d" % n) for n in range(12)])
            writer.put_keys([(prefix.encode() + b"\xff\x00odd", b"\x00\xffbytes")])
            bridges = [
                factory.start(
                    BRIDGE_ETCD__ENDPOINTS=etcd.url,
                    BRIDGE_ETCD__PREFIX=prefix,
                    BRIDGE_NAME=run.pipeline,
                    BRIDGE_SINKS="nats",
                    BRIDGE_NATS__SERVERS=nats_server.url,
                    BRIDGE_NATS__STREAM=run.stream,
                    BRIDGE_NATS__SUBJECT=run.subject,
                    BRIDGE_NATS__FORMAT=run.record_format,
                    BRIDGE_PUMP__BATCH_EVENTS="7",
                )
                for run in runs.values()
            ]
            for bridge in bridges:
                bridge.wait_watching()
            for _ in range(STEPS):
                writer.step()
        last = writer.changes[-1].revision
        for run in runs.values():
            wait_for(
                lambda run=run: held_revision(nats_server, run.stream) >= last,  # type: ignore[misc]
                timeout=30,
                what=f"revision {last} in {run.stream}",
            )
        for bridge in bridges:
            assert bridge.terminate() == 0, bridge.log_text()
        yield runs
    finally:
        factory.stop_all()
        for run in runs.values():
            nats_server.delete_stream(run.stream)


def held_revision(server: NatsServer, stream: str) -> int:
    """The revision of the stream's last message (0 while it has none)."""
    message = server.run(last_message, stream=stream)
    return 0 if message is None else int(message.headers[HEADER_REVISION])


def reader_consumers(server: NatsServer, stream: str) -> list[str]:
    """The reader's consumers still on ``stream`` (the tests' own drain leaves one of its own
    to expire)."""
    return [
        name for name in server.run(_consumers, stream=stream) if name.startswith(CONSUMER_PREFIX)
    ]


async def _consumers(js: nats.js.JetStreamContext, *, stream: str) -> list[str]:
    return [str(info.name) for info in await js.consumers_info(stream)]


def reader_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("nats-")]


def test_the_reader_yields_what_a_consumer_reads_in_position_order(
    runs: dict[str, Run], nats_server: NatsServer
) -> None:
    run = runs["native"]
    expected = nats_server.stream_events(run.stream)
    ops = {event.op for event in expected}
    assert {Op.SNAPSHOT_BEGIN, Op.SNAPSHOT, Op.SNAPSHOT_END, Op.CREATE, Op.DELETE} <= ops
    assert any(event.more for event in expected), "no multi-key transaction"
    with run.reader(nats_server.url) as reader:
        read = list(reader.events())
        reader.page_messages = 6
        paged = list(reader.events())
    assert read == expected
    assert paged == expected
    positions = [event.position for event in read]
    assert positions == sorted(set(positions))
    assert reader_threads() == []
    assert reader_consumers(nats_server, run.stream) == []


def test_after_starts_right_past_any_position(
    runs: dict[str, Run], nats_server: NatsServer
) -> None:
    run = runs["native"]
    expected = nats_server.stream_events(run.stream)
    inside = next(event for event in expected if event.more)  # a transaction's first change
    end = next(event for event in expected if event.op is Op.SNAPSHOT_END)
    afters = [
        Position(0, 0),
        expected[0].position,
        end.position,
        inside.position,
        Position(inside.revision, 999),  # past a whole revision without naming its last event
        expected[len(expected) // 2].position,
        expected[-2].position,
        expected[-1].position,
    ]
    with run.reader(nats_server.url) as reader:
        for after in afters:
            wanted = [event for event in expected if event.position > after]
            assert list(reader.events(after=after)) == wanted, f"after {after}"
    assert reader_consumers(nats_server, run.stream) == []


def change_of(event: Event) -> Change:
    return Change(event.position, event.op, event.key, event.value, event.prev_value)


@pytest.mark.parametrize("record_format", ["debezium", "cloudevents"])
def test_a_non_native_format_is_read_back_as_its_consumers_read_it(
    runs: dict[str, Run], nats_server: NatsServer, record_format: str
) -> None:
    run = runs[record_format]
    consume = {
        "debezium": debezium_consumer.read,
        "cloudevents": cloudevents_consumer.read_structured,
    }[record_format]
    consumed = [consume(message.data) for message in nats_server.stream_messages(run.stream)]
    with run.reader(nats_server.url) as reader:
        read = [change_of(event) for event in reader.events()]
        after = read[len(read) // 3].position
        tail = [change_of(event) for event in reader.events(after=after)]
    assert read == consumed
    assert read == [change_of(event) for event in nats_server.stream_events(runs["native"].stream)]
    assert tail == [change for change in read if change.position > after]


def test_a_message_deleted_from_the_stream_is_missing_from_what_the_reader_yields(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    prefix = b"/app/"
    history = History(prefix=prefix)
    for number in range(10):
        history.put(prefix + b"seed/%d" % number, b"s")
    events = history.snapshot() + history.random_changes(count=60, seed=5)
    settings = {
        "servers": nats_server.url,
        "stream": nats_names.stream,
        "subject": nats_names.subject,
    }
    keyspace = KeySpace.of([prefix])
    with build("nats", pipeline=nats_names.pipeline, keyspace=keyspace, **settings) as sink:
        sink.open()
        feed(sink, events, sizes=(25,))
    victim = 40  # the 40th message: sequence 40
    assert nats_server.run(_delete, stream=nats_names.stream, sequence=victim)
    kept = events[: victim - 1] + events[victim:]
    assert nats_server.stream_events(nats_names.stream) == kept
    before = events[victim - 2].position
    with nats_reader(nats_names.pipeline, prefix=prefix, **settings) as reader:
        assert list(reader.events()) == kept
        assert list(reader.events(after=before)) == events[victim:]


async def _delete(js: nats.js.JetStreamContext, *, stream: str, sequence: int) -> bool:
    return await js.delete_msg(stream, sequence)


def test_a_missing_stream_holds_nothing_and_is_not_created(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    with nats_reader(
        nats_names.pipeline,
        servers=nats_server.url,
        stream=nats_names.stream,
        subject=nats_names.subject,
    ) as reader:
        assert list(reader.events()) == []
    with pytest.raises(nats.js.errors.NotFoundError):
        nats_server.stream_info(nats_names.stream)


def test_an_unreachable_server_is_one_line_naming_it(nats_names: NatsNames) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    reader = nats_reader(nats_names.pipeline, servers=url)
    with reader, pytest.raises(SinkUnavailableError) as raised:
        list(reader.events())
    message = str(raised.value)
    assert url in message and "unreachable" in message and "\n" not in message
    assert reader_threads() == []


def test_wrong_credentials_are_one_line_naming_the_setting(
    nats_factory: NatsFactory, nats_names: NatsNames
) -> None:
    server = nats_factory.start(NatsSetup.password("bridge", f"right-{nats_names.tag}"))
    secret = f"wrong-{nats_names.tag}"
    reader = nats_reader(nats_names.pipeline, servers=server.url, user="bridge", password=secret)
    with reader, pytest.raises(SinkRejectedError) as raised:
        list(reader.events())
    message = str(raised.value)
    assert "authentication with user 'bridge' (BRIDGE_NATS__USER/PASSWORD) failed" in message
    assert secret not in message and "\n" not in message
