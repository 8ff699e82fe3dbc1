"""One bridge, several sinks: a sink that is down holds nobody back, then catches up once."""

from pathlib import Path

from bridge.events import Event
from tests.fixtures.bridge import BridgeFactory, BridgeProcess, read_events
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for
from tests.fixtures.redis import RedisFactory
from tests.history import RecordingWriter, assert_exactly_once
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision


def resident_kib(bridge: BridgeProcess) -> int:
    assert bridge.process is not None
    status = Path(f"/proc/{bridge.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def test_sink_down_for_long_does_not_hold_the_others(
    etcd: EtcdServer,
    bridge_factory: BridgeFactory,
    redis_factory: RedisFactory,
    prefix: str,
    tmp_path: Path,
) -> None:
    redis_server = redis_factory.start(persistent=True)
    output = tmp_path / "events.jsonl"
    stream = f"fanout-{prefix.strip('/').replace('/', '-')}"
    bridge = bridge_factory.start(
        **file_bridge(
            bridge_factory, etcd, prefix=prefix, path=output,
            BRIDGE_SINKS="file,redis", BRIDGE_REDIS__URL=redis_server.url,
            BRIDGE_REDIS__STREAM=stream, BRIDGE_REDIS__TIMEOUT="1",
        )
    )  # fmt: skip
    client = redis_server.client()
    with etcd.client() as etcd_client:
        writer = RecordingWriter(etcd_client, prefix=prefix, seed=21)
        for _ in range(200):
            writer.step()
        wait_for_revision(output, writer.changes[-1].revision)
        wait_for(lambda: client.xlen(stream) > 0, timeout=20, what="the stream")
        redis_server.kill()
        for _ in range(10):
            writer.step()
        wait_for(lambda: bridge.phases()[1]["redis"] == "sink_down", timeout=20, what="redis down")
        memory_before = resident_kib(bridge)
        for _ in range(12000):  # ~18k events: buffering them would cost well over 8 MiB
            writer.step()
        wait_for_revision(output, writer.changes[-1].revision, timeout=60)
        memory_growth = resident_kib(bridge) - memory_before
        redis_server.start()
        client = redis_server.client()
        last = writer.changes[-1].revision
        wait_for(
            lambda: (
                Event.from_json(client.xrevrange(stream, count=1)[0][1][b"event"]).revision >= last
            ),
            timeout=60,
            what="redis to catch up",
        )
    assert bridge.terminate() == 0
    from_redis = [Event.from_json(fields[b"event"]) for _id, fields in client.xrange(stream)]
    for events in (read_events(output), from_redis):
        assert_exactly_once(events, writer.changes, after=events[0].revision)
    # A down sink buffers nothing: its pipeline waits at its own position.
    assert memory_growth < 8 * 1024, f"RSS grew {memory_growth} KiB while redis was down"
