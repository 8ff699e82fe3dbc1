"""/healthz, /readyz and /metrics of a running bridge, across its phases."""

from pathlib import Path

import orjson

from bridge.events import Op
from tests.fixtures.bridge import BridgeFactory, get, metric, read_events, serving
from tests.fixtures.etcd import EtcdFactory
from tests.fixtures.processes import wait_for
from tests.history import load_keys
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision


def phase(port: int, path: str) -> tuple[int, str]:
    status, body = get(port, path)
    return status, orjson.loads(body)["pipelines"]["file"]


def test_phases_snapshot_watching_and_etcd_down(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    output = tmp_path / "events.jsonl"
    with server.client() as client:
        load_keys(client, prefix="/h/", count=30000, value=b"z" * 100)
    bridge, port = serving(
        bridge_factory,
        **file_bridge(
            bridge_factory,
            server,
            prefix="/h/",
            path=output,
            BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES=str(64 * 1024),
            BRIDGE_PUMP__BATCH_EVENTS="100",
            BRIDGE_ETCD__TIMEOUT="4",
            BRIDGE_ETCD__STALL_TIMEOUT="1",
            BRIDGE_FILE__FSYNC="false",
        ),
    )
    wait_for(lambda: len(read_events(output)) > 1000, timeout=20, what="snapshot under way")
    server.process.pause()  # the next page hangs: the pipeline is stuck mid-snapshot
    assert read_events(output)[-1].op is not Op.SNAPSHOT_END, "snapshot done too soon; grow it"
    assert phase(port, "/readyz") == (503, "snapshot")
    assert metric(port, "etcd_bridge_snapshot_in_progress", sink="file") == 1
    # Nothing heard for 3 x stall timeout: not alive any more.
    wait_for(lambda: phase(port, "/healthz")[0] == 503, timeout=20, what="liveness to fail")
    # The page request times out: etcd counts as down, and the pipeline reconnects.
    wait_for(lambda: phase(port, "/readyz") == (503, "etcd_down"), timeout=20, what="etcd down")
    assert metric(port, "etcd_bridge_etcd_reconnects_total", sink="file") >= 1
    server.process.resume()
    wait_for(lambda: phase(port, "/readyz") == (200, "watching"), timeout=30, what="readiness")
    assert phase(port, "/healthz") == (200, "watching")
    assert metric(port, "etcd_bridge_snapshot_in_progress", sink="file") == 0
    delivered = metric(port, "etcd_bridge_events_delivered_total", sink="file", type="PUT")
    assert delivered == 30000
    with server.client() as client:
        revision = client.put("/h/new", b"1").header.revision
        client.delete("/h/000001")
        revision += 1
    wait_for_revision(output, revision)
    wait_for(
        lambda: metric(port, "etcd_bridge_sink_revision", sink="file") == revision,
        timeout=10,
        what="the sink revision gauge",
    )
    assert metric(port, "etcd_bridge_events_delivered_total", sink="file", type="PUT") == 30001
    assert metric(port, "etcd_bridge_events_delivered_total", sink="file", type="DELETE") == 1
    assert metric(port, "etcd_bridge_lag_revisions", sink="file") == 0
    assert metric(port, "etcd_bridge_batch_events_count", sink="file") > 1
    assert metric(port, "etcd_bridge_write_seconds_count", sink="file") > 1
    assert get(port, "/nothing")[0] == 404
    assert bridge.terminate() == 0


def test_sink_down_is_alive_but_not_ready(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the sink wants a directory")
    output = blocker / "events.jsonl"
    bridge, port = serving(
        bridge_factory, **file_bridge(bridge_factory, server, prefix="/d/", path=output)
    )
    wait_for(lambda: phase(port, "/readyz") == (503, "sink_down"), timeout=20, what="sink down")
    assert phase(port, "/healthz") == (200, "sink_down")
    assert metric(port, "etcd_bridge_errors_total", sink="file", kind="SinkUnavailableError") >= 1
    blocker.unlink()
    wait_for(lambda: phase(port, "/readyz") == (200, "watching"), timeout=30, what="recovery")
    assert read_events(output)[-1].op is Op.SNAPSHOT_END
    assert bridge.terminate() == 0
