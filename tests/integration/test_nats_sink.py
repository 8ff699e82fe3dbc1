"""The NATS sink against real nats-servers, driven directly and through the real bridge.

Most tests drive the sink like the pump does, with a ``History`` standing in for etcd, and check
what a JetStream consumer reads back (``NatsServer.stream_events``) and what a fresh sink's
``open()`` reports: the tail read back is the last event written, and nothing at or below it
is ever stored again. Tests that pause (SIGSTOP) or restart the server use a dedicated one. The
last test kills ``python -m bridge run`` with SIGKILL again and again under a stream of etcd
changes and compares the stream with etcd's own record of what happened.
"""

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from nats.js.api import DiscardPolicy

from bridge.contract import History, deliver_with_retries, feed
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Op, SnapshotReason
from bridge.sink import Sink
from config.keyspace import KeySpace
from sinks.nats.messages import Framer
from sinks.nats.publisher import SEND_EVERY
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.nats import NatsFactory, NatsNames, NatsServer, NatsSetup
from tests.fixtures.processes import free_port, wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.sinks.base import build

PREFIX = b"/app/"


def make_sink(url: str, names: NatsNames, **overrides: Any) -> Sink:
    options: dict[str, Any] = {
        "servers": url,
        "stream": names.stream,
        "subject": names.subject,
        "timeout": 2,
        **overrides,
    }
    return build("nats", pipeline=names.pipeline, keyspace=KeySpace.of([PREFIX]), **options)


def deliver(sink: Sink, events: Sequence[Event], *, size: int = 50) -> None:
    feed(sink, events, sizes=(size,))


def tail_of(url: str, names: NatsNames, **overrides: Any) -> Event | None:
    with make_sink(url, names, **overrides) as sink:
        return sink.open()


def deliver_resuming(url: str, names: NatsNames, events: Sequence[Event], **overrides: Any) -> int:
    """Deliver what ``events`` holds past the stream's tail as the pump does, with a new sink
    after each ``SinkUnavailableError``; how many reopens it took."""
    return deliver_with_retries(lambda: make_sink(url, names, **overrides), events, sizes=(50,))


def mixed_events(history: History) -> list[Event]:
    """A snapshot, then puts, updates, deletes, transactions, an odd key, more changes."""
    for number in range(20):
        history.put(PREFIX + f"seed/{number:03d}".encode(), f"s{number}".encode())
    events = history.snapshot()
    events += history.put(PREFIX + b"a", b"1")
    events += history.txn([(PREFIX + b"t1/x", b"x"), (PREFIX + b"t2", b"y"), (PREFIX + b"a", None)])
    events += history.put(PREFIX + "ключ/v1.2".encode(), b"\xff\x00binary")
    events += history.random_changes(count=150, seed=7)
    return events


def nats_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("nats-")]


def test_an_empty_stream_is_created_as_configured_and_has_no_tail(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    options = {"subject": nats_names.routed, "storage": "memory", "max_age": 3600}
    assert tail_of(nats_server.url, nats_names, duplicate_window=30, **options) is None
    config = nats_server.stream_info(nats_names.stream).config
    assert config.subjects == [f"test.{nats_names.tag}.*"]
    assert (config.storage, config.num_replicas) == ("memory", 1)
    assert (config.max_age, config.duplicate_window) == (3600, 30)
    assert tail_of(nats_server.url, nats_names, **options) is None  # found, not created again
    assert nats_threads() == []


def test_written_events_come_back_as_the_tail_and_as_routed_messages(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    events = mixed_events(History(prefix=PREFIX))
    with make_sink(nats_server.url, nats_names, subject=nats_names.routed) as sink:
        assert sink.open() is None
        deliver(sink, events, size=37)
    assert tail_of(nats_server.url, nats_names, subject=nats_names.routed) == events[-1]
    messages = nats_server.stream_messages(nats_names.stream)
    assert [message.event() for message in messages] == events
    assert nats_server.stream_events(nats_names.stream) == events
    base = f"test.{nats_names.tag}"
    subjects = {message.event().key: message.subject for message in messages}
    assert subjects[PREFIX + b"t1/x"] == f"{base}.t1"
    assert subjects[PREFIX + "ключ/v1.2".encode()] == f"{base}.____"
    markers = [m for m in messages if m.event().op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT_END)]
    assert [m.subject for m in markers] == [f"{base}._"] * 2
    first = messages[0].headers
    assert first["pipeline"] == nats_names.pipeline
    assert first["Nats-Msg-Id"] == f"{nats_names.pipeline}:{events[0].position}"
    assert (first["type"], first["op"]) == ("MARKER", "snapshot_begin")


def test_a_replay_overlapping_the_tail_stores_nothing_twice(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    events = History(prefix=PREFIX).random_changes(count=120, seed=3)
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        deliver(sink, events[:100])
    with make_sink(nats_server.url, nats_names) as sink:
        assert sink.open() == events[99]
        deliver(sink, events[:100])  # a whole replay
        deliver(sink, events[80:110])  # overlapping the tail
        deliver(sink, events[105:])
    assert nats_server.stream_events(nats_names.stream) == events


def test_a_second_writer_is_refused_instead_of_interleaving(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    history = History(prefix=PREFIX)
    start = history.random_changes(count=10, seed=1)
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        deliver(sink, start)
    ours = history.random_changes(count=5, seed=2)
    # A stale instance's view: a resync snapshot it took instead of the changes above.
    theirs = history.snapshot(reason=SnapshotReason.COMPACTED)
    with (
        make_sink(nats_server.url, nats_names) as leader,
        make_sink(nats_server.url, nats_names) as stale,
    ):
        assert leader.open() == stale.open() == start[-1]
        leader.write(ours[:1])
        leader.flush()
        # The stale writer's first message expects the old last sequence; its second expects
        # exactly the sequence the leader's message now has, and is refused only because the
        # last message is not its own first one (Nats-Expected-Last-Msg-Id).
        stale.write(theirs[:3])
        with pytest.raises(SinkUnavailableError, match="wrong last sequence.*another writer"):
            stale.flush()
        leader.write(ours[1:])
        leader.flush()
    assert nats_server.stream_events(nats_names.stream) == start + ours
    # A twin that writes the same events adds each once and goes on after them.
    more = history.random_changes(count=4, seed=4)
    with (
        make_sink(nats_server.url, nats_names) as one,
        make_sink(nats_server.url, nats_names) as twin,
    ):
        one.open()
        twin.open()
        deliver(one, more[:2])
        deliver(twin, more)
    assert nats_server.stream_events(nats_names.stream) == start + ours + more


def test_a_value_larger_than_max_payload_is_rejected_naming_key_and_revision(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    history = History(prefix=PREFIX)
    small = history.put(PREFIX + b"small", b"ok")
    big = history.put(PREFIX + b"big", b"x" * (1024 * 1024 + 1))
    later = history.put(PREFIX + b"after", b"never")
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        sink.write(small + big + later)
        with pytest.raises(SinkRejectedError) as raised:
            sink.flush()
    message = str(raised.value)
    assert "'/app/big'" in message and f"revision {big[0].revision}" in message
    assert "max_payload" in message and "\n" not in message
    assert nats_server.stream_events(nats_names.stream) == small
    assert tail_of(nats_server.url, nats_names) == small[0]


def test_the_size_check_is_exact_at_a_streams_max_msg_size(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    limit = 4096

    async def create(js: Any) -> None:
        await js.add_stream(
            name=nats_names.stream, subjects=[nats_names.subject], max_msg_size=limit
        )

    nats_server.run(create)
    history = History(prefix=PREFIX)

    framer = Framer(nats_names.pipeline)

    def sized(size: int, *, sequence: int, previous: bytes | None) -> list[Event]:
        """A put whose message (with the headers it will be sent with) is ``size`` bytes."""
        events = history.put(PREFIX + b"k", b"")
        event = events[0]
        block = framer.header_block(
            event,
            msg_id=framer.msg_id(event),
            expected_sequence=sequence,
            previous_id=previous,
        )
        event.value = b"v" * (size - len(block) - len(event.to_json()))
        return events

    exact = sized(limit, sequence=0, previous=None)
    over = sized(limit + 1, sequence=1, previous=framer.msg_id(exact[0]))
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        deliver(sink, exact)  # the server takes a message of exactly its limit
        sink.write(over)
        with pytest.raises(SinkRejectedError, match=f"over the {limit} the server accepts"):
            sink.flush()
    assert nats_server.stream_events(nats_names.stream) == exact


def test_a_message_refused_inside_a_batch_is_named_after_one_reopen(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    """Only each batch's last message is acknowledged: a message refused for a reason of its
    own (here a stream full with ``discard: new``) first shows as the broken chain of the
    last one; the reopened session has every message of its first batch acknowledged, and
    names the refused one and the server's reason."""

    async def create(js: Any) -> None:
        await js.add_stream(
            name=nats_names.stream,
            subjects=[nats_names.subject],
            max_msgs=5,
            discard=DiscardPolicy.NEW,
        )

    nats_server.run(create)
    events = History(prefix=PREFIX).random_changes(count=8, seed=2)
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        sink.write(events)
        with pytest.raises(SinkUnavailableError, match="wrong last sequence") as first:
            sink.flush()
        assert f"at revision {events[-1].revision} " in str(first.value)  # the batch's last
        sink.close()
        assert sink.open() == events[4]
        sink.write(events[5:])
        with pytest.raises(SinkUnavailableError) as named:
            sink.flush()
    message = str(named.value)
    assert f"at revision {events[5].revision} (index {events[5].index})" in message, message
    assert "maximum messages exceeded" in message
    assert nats_server.stream_events(nats_names.stream) == events[:5]


def test_a_write_is_sent_in_parts_each_acknowledged_by_its_last_message(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    """A batch goes out ``SEND_EVERY`` messages at a time, each part's last message asking
    for an acknowledgement: a message refused in the second part is first seen as the broken
    chain of that part's last message (not the batch's), and the parts before it are held."""
    held = SEND_EVERY + 50

    async def create(js: Any) -> None:
        await js.add_stream(
            name=nats_names.stream,
            subjects=[nats_names.subject],
            max_msgs=held,
            discard=DiscardPolicy.NEW,
        )

    nats_server.run(create)
    events = History(prefix=PREFIX).random_changes(count=3 * SEND_EVERY - 20, seed=5)
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        sink.write(events)
        with pytest.raises(SinkUnavailableError, match="wrong last sequence") as broken:
            sink.flush()
        second_part_last = events[2 * SEND_EVERY - 1]
        expected = f"at revision {second_part_last.revision} (index {second_part_last.index})"
        assert expected in str(broken.value), str(broken.value)
    assert nats_server.stream_events(nats_names.stream) == events[:held]


def test_binary_keys_and_values_round_trip_bytes_exact(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    history = History(prefix=PREFIX)
    events = history.put(PREFIX + b"\xff\xfe/bin", b"\x00\x01\xff")
    events += history.put(PREFIX + b"dots.and spaces/*/>", "värde".encode())
    events += history.delete(PREFIX + b"\xff\xfe/bin")
    with make_sink(nats_server.url, nats_names, subject=nats_names.routed) as sink:
        sink.open()
        deliver(sink, events)
    messages = nats_server.stream_messages(nats_names.stream)
    assert [message.event() for message in messages] == events
    assert events[2].prev_value == b"\x00\x01\xff"
    base = f"test.{nats_names.tag}"
    assert [message.subject for message in messages] == [
        f"{base}.__",
        f"{base}.dots_and_spaces",
        f"{base}.__",
    ]


def test_an_unreachable_server_is_retryable_and_named(nats_names: NatsNames) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with make_sink(url, nats_names) as sink:
        with pytest.raises(SinkUnavailableError) as raised:
            sink.open()
    assert time.monotonic() - started < 10
    assert url in str(raised.value) and "unreachable" in str(raised.value)
    assert nats_threads() == []


def test_wrong_credentials_are_rejected_without_showing_them(
    nats_factory: NatsFactory, nats_names: NatsNames
) -> None:
    right = f"right-{nats_names.tag}"
    server = nats_factory.start(NatsSetup.password("bridge", right))
    secret = f"wrong-{nats_names.tag}"
    with make_sink(server.url, nats_names, user="bridge", password=secret) as sink:
        with pytest.raises(SinkRejectedError) as raised:
            sink.open()
    message = str(raised.value)
    assert "authentication with user 'bridge' (BRIDGE_NATS__USER/PASSWORD) failed" in message
    assert secret not in message and "\n" not in message
    assert tail_of(server.url, nats_names, user="bridge", password=right) is None


def test_a_stream_that_is_not_the_pipelines_is_refused(
    nats_server: NatsServer, nats_names: NatsNames
) -> None:
    events = History(prefix=PREFIX).random_changes(count=5, seed=1)
    with make_sink(nats_server.url, nats_names) as sink:
        sink.open()
        deliver(sink, events)
    other = NatsNames(tag=nats_names.tag + "x")
    with make_sink(
        nats_server.url, other, stream=nats_names.stream, subject=nats_names.subject
    ) as sink:
        with pytest.raises(SinkRejectedError, match=f"belongs to pipeline '{nats_names.pipeline}'"):
            sink.open()
    with make_sink(nats_server.url, nats_names, subject=f"test.{nats_names.tag}x.{{1}}") as sink:
        with pytest.raises(SinkRejectedError, match="BRIDGE_NATS__SUBJECT") as raised:
            sink.open()
    assert f"captures test.{nats_names.tag}, not 'test.{nats_names.tag}x.*'" in str(raised.value)


def test_server_paused_mid_flush_then_resumed_loses_and_repeats_nothing(
    nats_factory: NatsFactory, nats_names: NatsNames
) -> None:
    server = nats_factory.start()
    events = History(prefix=PREFIX).random_changes(count=300, seed=5)
    options = {"flush_timeout": 1, "timeout": 1}
    with make_sink(server.url, nats_names, **options) as sink:
        sink.open()
        deliver(sink, events[:100])
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(SinkUnavailableError, match="not acknowledged within 1s"):
                sink.write(events[100:150])
                sink.flush()
            sink.close()
            assert time.monotonic() - started < 10
            assert nats_threads() == []
            with pytest.raises(SinkUnavailableError):
                sink.open()  # still paused: the reopen fails too, and retries later
        finally:
            server.resume()
    tail = wait_for(lambda: tail_of(server.url, nats_names, **options), timeout=20, what="a reopen")
    assert tail.position >= events[99].position  # the paused batch may have landed or not
    deliver_resuming(server.url, nats_names, events, **options)
    assert server.stream_events(nats_names.stream) == events


def test_server_restart_mid_stream_resumes_exactly_once(
    nats_factory: NatsFactory, nats_names: NatsNames
) -> None:
    server = nats_factory.start()
    events = History(prefix=PREFIX).random_changes(count=300, seed=6)
    with make_sink(server.url, nats_names) as sink:
        sink.open()
        deliver(sink, events[:100])
        server.restart()
        with pytest.raises(SinkUnavailableError):
            deliver(sink, events[100:200])
    # After the restart the server has forgotten the last message id: the first message of a
    # session relies on the sequence alone, so resuming works.
    assert tail_of(server.url, nats_names) == events[99]
    assert deliver_resuming(server.url, nats_names, events) == 0
    assert server.stream_events(nats_names.stream) == events


@pytest.mark.slow
def test_kill_9_of_the_bridge_leaves_the_stream_exactly_once(
    etcd: EtcdServer,
    nats_server: NatsServer,
    nats_names: NatsNames,
    bridge_factory: BridgeFactory,
    prefix: str,
) -> None:
    env = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": nats_names.pipeline,
        "BRIDGE_SINKS": "nats",
        "BRIDGE_NATS__SERVERS": nats_server.url,
        "BRIDGE_NATS__STREAM": nats_names.stream,
        "BRIDGE_NATS__SUBJECT": nats_names.routed,
        "BRIDGE_PUMP__BATCH_EVENTS": "7",
    }

    def durable_revision() -> int:
        with build(
            "nats",
            pipeline=nats_names.pipeline,
            keyspace=KeySpace.of([prefix.encode()]),
            servers=nats_server.url,
            stream=nats_names.stream,
            subject=nats_names.routed,
        ) as sink:
            tail = sink.open()
        return 0 if tail is None else tail.revision

    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=21)
        for _ in range(100):
            writer.step()
        enough = threading.Event()

        def keep_writing() -> None:
            for _ in range(20000):  # bounded; stops as soon as the kills are done
                if enough.is_set() and len(writer.changes) > 1500:
                    return
                writer.step()

        busy = threading.Thread(target=keep_writing)
        busy.start()
        kills = 0
        try:
            for _round in range(5):
                before = durable_revision()
                bridge = bridge_factory.start(**env)
                # Kill once this run has made something durable: mid-stream, not at start-up.
                wait_for(
                    lambda before=before: durable_revision() > before,  # type: ignore[misc]
                    timeout=30,
                    what="the bridge to make progress",
                )
                bridge.kill()
                kills += 1
        finally:
            enough.set()
            busy.join()
        bridge = bridge_factory.start(**env)
        last = writer.changes[-1].revision
        wait_for(lambda: durable_revision() >= last, timeout=60, what=f"revision {last}")
    assert bridge.terminate() == 0
    events = nats_server.stream_events(nats_names.stream)
    assert sum(event.op is Op.SNAPSHOT_END for event in events) == 1
    assert len(writer.changes) > 1500
    assert_exactly_once(events, writer.changes, after=events[0].revision)
    assert kills == 5
