"""The Kafka sink's reader (``sinks.kafka.reader``) against topics a real bridge wrote.

One etcd history (a snapshot, puts, deletes, multi-key transactions) is bridged at once by
four bridges (each its own pipeline and topics): a fixed topic of three partitions with
tombstones, a topic template routing by the key's first segment, Debezium, and CloudEvents in
binary content mode. The reader must yield what the tests' own aiokafka reader
(``tests.fixtures.kafka``) sees, merged in position order with each marker once, and what
etcd did (``tests.history``); ``after`` must skip exactly what lies at or before it.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from bridge import plugins
from bridge.errors import SinkUnavailableError
from bridge.events import Event, EventType, Op, Position, SnapshotReason
from bridge.reader import StreamReader
from bridge.sink import Sink
from config.keyspace import KeySpace
from config.settings import load_section
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kafka import KafkaBroker, read_topic, topic_events
from tests.fixtures.processes import free_port, wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.sinks.base import build

PARTITIONS = 3
GROUPS = (b"alpha", b"beta", b"gamma")


@dataclass
class Run:
    """One bridged history: the writer's record and each bridge's Kafka settings."""

    prefix: str
    writer: RecordingWriter
    settings: dict[str, dict[str, str]]
    """Per pipeline name, the sink's settings (field names of its settings model)."""

    def reader(self, pipeline: str) -> StreamReader:
        section = load_section(
            "kafka", plugins.settings_model(plugins.load("kafka")), **self.settings[pipeline]
        )
        reader = plugins.build_reader(
            "kafka", section, pipeline=pipeline, keyspace=KeySpace.of([self.prefix.encode()])
        )
        assert isinstance(reader, StreamReader)
        return reader

    def sink(self, pipeline: str) -> Sink:
        keyspace = KeySpace.of([self.prefix.encode()])
        return build("kafka", pipeline=pipeline, keyspace=keyspace, **self.settings[pipeline])


def read(run: Run, pipeline: str, *, after: Position | None = None) -> list[Event]:
    with run.reader(pipeline) as reader:
        return list(reader.events(after=after))


@pytest.fixture(scope="module")
def run(
    etcd: EtcdServer, kafka: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    tag = tmp_path_factory.mktemp("kafka-reader").name.replace("_", "-")
    prefix = f"/reader-{tag}/"
    common = {"bootstrap_servers": kafka.bootstrap, "partitions": str(PARTITIONS)}
    settings = {
        "fixed": {**common, "topic": f"{tag}-fixed", "tombstones": "true"},
        "routed": {**common, "topic": f"{tag}-routed.{{1}}"},
        "debezium": {**common, "topic": f"{tag}-debezium", "format": "debezium"},
        "cloudevents": {**common, "topic": f"{tag}-ce", "format": "cloudevents"},
    }
    factory = BridgeFactory(Path(tmp_path_factory.mktemp("kafka-reader-bridges")))
    with etcd.client() as client:
        # Its random keys share one segment, so the template routes to four topics in all.
        writer = RecordingWriter(client, prefix=prefix + "w/", seed=17, keys=30)
        for number in range(24):  # the snapshot: keys in every group
            group = GROUPS[number % len(GROUPS)]
            writer.apply([(prefix.encode() + group + b"/s%02d" % number, b"seed")])
        history = Run(prefix=prefix, writer=writer, settings=settings)
        bridges = [
            factory.start(
                BRIDGE_ETCD__ENDPOINTS=etcd.url,
                BRIDGE_ETCD__PREFIX=prefix,
                BRIDGE_NAME=pipeline,
                BRIDGE_SINKS="kafka",
                **{f"BRIDGE_KAFKA__{name.upper()}": value for name, value in own.items()},
            )
            for pipeline, own in settings.items()
        ]
        for bridge in bridges:
            bridge.wait_watching(timeout=40)
        last = writer.steps_across(GROUPS, steps=120)
        for pipeline in settings:
            wait_for(
                lambda pipeline=pipeline: held(history, pipeline) >= last,  # type: ignore[misc]
                timeout=40,
                what=f"revision {last} in the topics of {pipeline}",
                interval=0.2,
            )
    for bridge in bridges:
        assert bridge.terminate() == 0, bridge.log_text()
    yield history
    factory.stop_all()


def held(run: Run, pipeline: str) -> int:
    """The revision the pipeline's sink durably holds, read back as the bridge reads it."""
    with run.sink(pipeline) as sink:
        tail = sink.open()
    return 0 if tail is None else tail.revision


def snapshot_revision(events: list[Event]) -> int:
    begin = events[0]
    assert (begin.op, begin.reason) == (Op.SNAPSHOT_BEGIN, SnapshotReason.INITIAL), begin
    assert [e.op for e in events].count(Op.SNAPSHOT_BEGIN) == 1, "each marker once"
    assert [e.op for e in events].count(Op.SNAPSHOT_END) == 1, "each marker once"
    return begin.revision


def test_a_fixed_topic_reads_as_the_independent_reader_sees_it(
    run: Run, kafka: KafkaBroker
) -> None:
    topic = run.settings["fixed"]["topic"]
    independent = topic_events(
        kafka.bootstrap, topic, partitions=PARTITIONS, pipeline="fixed", tombstones=True
    )
    events = read(run, "fixed")
    assert events == independent
    assert {r.partition for r in read_topic(kafka.bootstrap, topic)} == set(range(PARTITIONS))
    assert_exactly_once(events, run.writer.changes, after=snapshot_revision(events))


def test_after_skips_exactly_what_lies_at_or_before_it(run: Run) -> None:
    events = read(run, "fixed")
    middle = events[len(events) // 2]
    assert read(run, "fixed", after=middle.position) == events[len(events) // 2 + 1 :]
    assert read(run, "fixed", after=events[-1].position) == []
    end = next(e for e in events if e.op is Op.SNAPSHOT_END)
    assert read(run, "fixed", after=end.position)[0].op is not Op.SNAPSHOT_END


def test_a_template_reads_every_topic_it_routed_to(run: Run, kafka: KafkaBroker) -> None:
    routed = run.settings["routed"]["topic"].replace("{1}", "")
    topics = [
        name
        for name in topic_names(kafka)
        if name.startswith(routed) and not name.endswith(".checkpoint")
    ]
    assert sorted(topics) == sorted(routed + name for name in ("alpha", "beta", "gamma", "w"))
    independent: dict[tuple[int, int], Event] = {}
    for topic in topics:
        for event in topic_events(kafka.bootstrap, topic, partitions=PARTITIONS, pipeline="routed"):
            independent[(event.revision, event.index)] = event  # a marker is in every topic
    events = read(run, "routed")
    assert events == [independent[position] for position in sorted(independent)]
    assert_exactly_once(events, run.writer.changes, after=snapshot_revision(events))


@pytest.mark.parametrize("pipeline", ["debezium", "cloudevents"])
def test_other_formats_read_back_as_the_same_events(run: Run, pipeline: str) -> None:
    events = read(run, pipeline)
    begin = snapshot_revision(events)  # Debezium's null-valued markers: from the headers
    assert_exactly_once(events, run.writer.changes, after=begin)
    native = read(run, "fixed")
    snapshot = [(e.key, e.value) for e in events if e.op is Op.SNAPSHOT]
    assert snapshot == [(e.key, e.value) for e in native if e.op is Op.SNAPSHOT]
    markers = [e for e in events if e.type is EventType.MARKER]
    assert [(m.op, m.key, m.reason) for m in markers] == [
        (m.op, m.key, m.reason) for m in native if m.type is EventType.MARKER
    ]


def test_an_unreachable_broker_is_one_line_naming_the_setting(run: Run) -> None:
    nowhere = Run(
        prefix=run.prefix,
        writer=run.writer,
        settings={"nowhere": {"bootstrap_servers": f"127.0.0.1:{free_port()}", "timeout": "1"}},
    )
    with pytest.raises(SinkUnavailableError, match="BRIDGE_KAFKA__BOOTSTRAP_SERVERS") as caught:
        read(nowhere, "nowhere")
    assert "\n" not in str(caught.value)


def test_a_missing_topic_holds_nothing(run: Run, kafka: KafkaBroker) -> None:
    absent = Run(
        prefix=run.prefix,
        writer=run.writer,
        settings={"absent": {"bootstrap_servers": kafka.bootstrap, "topic": "never-written.{1}"}},
    )
    assert read(absent, "absent") == []
    absent.settings["absent"]["topic"] = "never-written"
    assert read(absent, "absent") == []
    names = set(topic_names(kafka))
    assert "never-written" not in names and "never-written._.absent.checkpoint" not in names


def topic_names(kafka: KafkaBroker) -> list[str]:
    """Every topic of the broker, from all-topics metadata (which creates none)."""
    return list(AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics)
