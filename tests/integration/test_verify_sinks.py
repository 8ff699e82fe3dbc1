"""``etcd-bridge verify`` through every built-in reader: one history written by real bridges
into the Redis stream and mirror, Kafka, NATS and the PostgreSQL changelog and mirror, each
then verified against etcd (agreement, through the stream and the state paths alike), and a
Redis stream with one entry deleted (``XDEL``) found to differ, naming the key."""

import uuid

import orjson
import pytest
import redis

from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kafka import KafkaBroker
from tests.fixtures.nats import NatsServer
from tests.fixtures.postgres import PostgresServer, create_database
from tests.fixtures.processes import wait_for
from tests.fixtures.redis import RedisServer
from tests.history import RecordingWriter
from tests.integration.test_verify import line_of, verify

STREAMS = "redis,kafka,nats,postgres"
MIRRORS = "redis,postgres"


def test_verify_agrees_through_every_reader_and_finds_a_deleted_entry(
    etcd: EtcdServer,
    bridge_factory: BridgeFactory,
    kafka: KafkaBroker,
    redis_server: RedisServer,
    nats_server: NatsServer,
    postgres_server: PostgresServer,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = f"verify{uuid.uuid4().hex[:8]}"
    database = create_database(postgres_server)
    common = {"BRIDGE_ETCD__ENDPOINTS": etcd.url, "BRIDGE_ETCD__PREFIX": prefix}
    streams = {
        **common,
        "BRIDGE_NAME": f"{tag}-streams",
        "BRIDGE_SINKS": STREAMS,
        "BRIDGE_REDIS__URL": redis_server.url,
        "BRIDGE_REDIS__STREAM": f"{tag}:events",
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "BRIDGE_KAFKA__TOPIC": f"{tag}.events",
        "BRIDGE_NATS__SERVERS": nats_server.url,
        "BRIDGE_NATS__STREAM": f"{tag}-events",
        "BRIDGE_NATS__SUBJECT": f"{tag}.events",
        "BRIDGE_POSTGRES__DSN": database.dsn,
    }
    mirrors = {
        **common,
        "BRIDGE_NAME": f"{tag}-mirrors",
        "BRIDGE_SINKS": MIRRORS,
        "BRIDGE_REDIS__URL": redis_server.url,
        "BRIDGE_REDIS__MODE": "mirror",
        "BRIDGE_REDIS__MIRROR_KEY": f"{tag}:mirror",
        "BRIDGE_POSTGRES__DSN": database.dsn,
        "BRIDGE_POSTGRES__MODE": "mirror",
    }
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=17)
        writer.load(count=30, value=lambda number: b"initial %d" % number)
        bridges = [bridge_factory.start(**settings) for settings in (streams, mirrors)]
        for _ in range(120):
            writer.step()
        last = writer.changes[-1].revision
    for bridge in bridges:
        wait_for(
            lambda: all(  # noqa: B023 - called right here
                bridge.metric("etcd_bridge_sink_revision", sink=sink) >= last  # noqa: B023
                for sink in bridge.phases()[1]  # noqa: B023
            ),
            timeout=60,
            what="every sink to catch up",
        )
        assert bridge.terminate() == 0

    for settings, sinks in ((streams, STREAMS), (mirrors, MIRRORS)):
        code, output = verify(monkeypatch, capsys, settings)
        assert code == 0, output
        for sink in sinks.split(","):
            assert "agree" in line_of(output, sink), output

    # The last change of some key, deleted: the state then differs at any later revision.
    with redis.Redis.from_url(redis_server.url) as client:
        entries = client.xrange(f"{tag}:events")
        last_of_key = {fields[b"key"]: (entry_id, fields) for entry_id, fields in entries[:-1]}
        victim, fields = next(
            (entry_id, fields)
            for key, (entry_id, fields) in last_of_key.items()
            if key != prefix.encode() and orjson.loads(fields[b"event"])["type"] == "PUT"
        )
        assert client.xdel(f"{tag}:events", victim) == 1
    code, output = verify(monkeypatch, capsys, streams, "--sinks", "redis")
    assert code == 1, output
    assert "differ" in line_of(output, "redis").lower(), output
    assert fields[b"key"].decode() in output, "the key of the deleted change is named"
