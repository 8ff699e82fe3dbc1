"""The Redis sink's readers (``sinks.redis.reader``) against what a real bridge wrote.

One etcd history (a snapshot, puts, deletes, multi-key transactions) is bridged at once by
three bridges (each its own pipeline): one stream, streams routed by the key's first segment,
and a mirror. The stream readers must yield what the tests' own XRANGE sees (merged by
position for routed streams, each marker once) and what etcd did (``tests.history``); the
mirror reader the state etcd holds, in key order. A stream with an entry deleted (XDEL) must
read back without it.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge import plugins
from bridge.errors import SinkUnavailableError
from bridge.events import Event, Op, Position, SnapshotReason
from bridge.reader import NoReaderError, SinkReader, StateReader, StreamReader
from config.keyspace import KeySpace
from config.settings import load_section
from sinks.redis import reader as redis_reader
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import free_port, wait_for
from tests.fixtures.redis import RedisServer
from tests.history import RecordingWriter, assert_exactly_once
from tests.sinks.base import build

GROUPS = (b"alpha", b"beta", b"gamma")


@dataclass
class Run:
    """One bridged history: the writer's record and each bridge's Redis settings."""

    prefix: str
    writer: RecordingWriter
    settings: dict[str, dict[str, str]]
    """Per pipeline name, the sink's settings (field names of its settings model)."""

    def reader(self, pipeline: str, **changed: str) -> SinkReader:
        own = {**self.settings[pipeline], **changed}
        section = load_section("redis", plugins.settings_model(plugins.load("redis")), **own)
        keyspace = KeySpace.of([self.prefix.encode()])
        return plugins.build_reader("redis", section, pipeline=pipeline, keyspace=keyspace)

    def events(
        self, pipeline: str, *, after: Position | None = None, **changed: str
    ) -> list[Event]:
        with self.reader(pipeline, **changed) as reader:
            assert isinstance(reader, StreamReader)
            return list(reader.events(after=after))

    def held(self, pipeline: str) -> int:
        """The revision the pipeline's sink durably holds (outside a snapshot), read back as
        the bridge reads it, beside the running bridge (``peek``)."""
        keyspace = KeySpace.of([self.prefix.encode()])
        with build(
            "redis", pipeline=pipeline, keyspace=keyspace, **self.settings[pipeline]
        ) as sink:
            tail = sink.peek()
        if tail is None or tail.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT) or tail.more:
            return 0
        return tail.revision


@pytest.fixture(scope="module")
def run(
    etcd: EtcdServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    tag = tmp_path_factory.mktemp("redis-reader").name
    prefix = f"/reader-{tag}/"
    settings = {
        "stream": {"url": redis_server.url, "stream": f"{tag}:events"},
        "routed": {"url": redis_server.url, "stream": f"{tag}:routed:{{1}}"},
        "mirror": {"url": redis_server.url, "mode": "mirror", "mirror_key": f"{tag}:mirror"},
    }
    factory = BridgeFactory(Path(tmp_path_factory.mktemp("redis-reader-bridges")))
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=23, keys=30)
        for number in range(24):  # the snapshot: keys in every group
            group = GROUPS[number % len(GROUPS)]
            writer.apply([(prefix.encode() + group + b"/s%02d" % number, b"seed")])
        history = Run(prefix=prefix, writer=writer, settings=settings)
        bridges = [
            factory.start(
                BRIDGE_ETCD__ENDPOINTS=etcd.url,
                BRIDGE_ETCD__PREFIX=prefix,
                BRIDGE_NAME=pipeline,
                BRIDGE_SINKS="redis",
                BRIDGE_PUMP__BATCH_EVENTS="7",  # many script calls, revisions split among them
                **{f"BRIDGE_REDIS__{name.upper()}": value for name, value in own.items()},
            )
            for pipeline, own in settings.items()
        ]
        for bridge in bridges:
            bridge.wait_watching(timeout=30)
        last = writer.steps_across(GROUPS, steps=150)
        for pipeline in settings:
            wait_for(
                lambda pipeline=pipeline: history.held(pipeline) >= last,  # type: ignore[misc]
                timeout=30,
                what=f"revision {last} in redis for {pipeline}",
            )
    for bridge in bridges:
        assert bridge.terminate() == 0, bridge.log_text()
    yield history
    factory.stop_all()


def snapshot_revision(events: list[Event]) -> int:
    begin = events[0]
    assert (begin.op, begin.reason) == (Op.SNAPSHOT_BEGIN, SnapshotReason.INITIAL), begin
    assert [e.op for e in events].count(Op.SNAPSHOT_END) == 1, "each marker once"
    return begin.revision


def test_a_stream_reads_as_xrange_sees_it_page_by_page(
    run: Run, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_reader, "PAGE", 7)  # many pages, one ending exactly at the end
    events = run.events("stream")
    assert events == redis_server.stream_events(run.settings["stream"]["stream"])
    assert len(events) > 100
    assert_exactly_once(events, run.writer.changes, after=snapshot_revision(events))
    middle = events[len(events) // 2]
    assert run.events("stream", after=middle.position) == events[len(events) // 2 + 1 :]
    assert run.events("stream", after=events[-1].position) == []


def test_routed_streams_merge_by_position_with_each_marker_once(
    run: Run, redis_server: RedisServer
) -> None:
    pattern = run.settings["routed"]["stream"].replace("{1}", "*")
    with redis_server.client() as client:
        streams = [
            name for name in client.scan_iter(match=pattern) if client.type(name) == b"stream"
        ]
    assert len(streams) > len(GROUPS)
    independent: dict[Position, Event] = {}
    for stream in streams:
        for event in redis_server.stream_events(stream.decode()):
            independent[event.position] = event  # a marker is in every stream
    events = run.events("routed")
    assert events == [independent[position] for position in sorted(independent)]
    assert_exactly_once(events, run.writer.changes, after=snapshot_revision(events))
    middle = events[len(events) // 2]
    assert run.events("routed", after=middle.position) == events[len(events) // 2 + 1 :]


def test_the_mirror_reads_as_the_state_etcd_holds_in_key_order(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_reader, "PAGE", 5)
    with run.reader("mirror") as reader:
        assert isinstance(reader, StateReader)
        revision = reader.revision()
        items = list(reader.items())
    assert revision == run.held("mirror") >= run.writer.changes[-1].revision
    assert [item.key for item in items] == sorted(run.writer.state)
    assert {item.key: item.value for item in items} == run.writer.state
    last_change = {change.key: change.revision for change in run.writer.changes}
    assert all(item.mod_revision == last_change[item.key] for item in items)
    assert all(item.op is Op.SNAPSHOT and item.revision == revision for item in items)


def test_an_entry_deleted_from_the_stream_is_missing_from_what_the_reader_yields(
    run: Run, redis_server: RedisServer
) -> None:
    stream = run.settings["stream"]["stream"]
    tampered = f"{stream}:tampered"
    events = run.events("stream")
    victim = next(e for e in events if e.op is Op.UPDATE)
    with redis_server.client() as client:
        assert client.copy(stream, tampered)
        assert client.xdel(tampered, str(victim.position)) == 1
    read = run.events("stream", stream=tampered)
    assert read == [e for e in events if e != victim]
    with pytest.raises(AssertionError, match="missing"):
        assert_exactly_once(read, run.writer.changes, after=snapshot_revision(read))


def test_what_does_not_exist_holds_nothing(run: Run) -> None:
    assert run.events("stream", stream="never:written") == []
    assert run.events("routed", stream="never:{1}") == []
    with run.reader("mirror", mirror_key="never:mirror") as reader:
        assert isinstance(reader, StateReader)
        assert reader.revision() == 0
        assert list(reader.items()) == []


def test_pubsub_keeps_nothing_to_read(run: Run) -> None:
    with pytest.raises(NoReaderError, match="pubsub mode keeps nothing"):
        run.reader("stream", mode="pubsub")


def test_an_unreachable_server_is_one_line_naming_the_setting(run: Run) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(SinkUnavailableError, match="unreachable.*BRIDGE_REDIS__URL") as caught:
        run.events("stream", url=url)
    assert "\n" not in str(caught.value)
