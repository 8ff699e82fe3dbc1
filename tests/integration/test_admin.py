"""The operator's handles on a running bridge: ``/positions``, ``POST /resnapshot`` and
``etcd-bridge status``, against a real etcd and a file sink."""

import subprocess
import sys
from pathlib import Path

import orjson

from bridge.events import EventType, Op, SnapshotReason
from tests.fixtures.bridge import BridgeFactory, get, metric, read_events, serving
from tests.fixtures.etcd import EtcdFactory
from tests.fixtures.processes import wait_for
from tests.history import load_keys
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision

TOKEN = "an-admin-token-for-this-test"  # noqa: S105 - a test's own token


def status(factory: BridgeFactory, settings: dict[str, str]) -> tuple[int, str]:
    """``etcd-bridge status`` run as an operator would, with the bridge's settings."""
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "bridge", "status"],
        env=factory.environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def row(output: str, sink: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(sink))


def test_positions_a_requested_snapshot_and_status(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    output = tmp_path / "events.jsonl"
    with server.client() as client:
        load_keys(client, prefix="/adm/", count=50, value=b"v")
        revision = client.put("/adm/last", b"x").header.revision
    settings = file_bridge(
        bridge_factory,
        server,
        prefix="/adm/",
        path=output,
        BRIDGE_HTTP__ADMIN_TOKEN=TOKEN,
        BRIDGE_FILE__FSYNC="false",
        BRIDGE_ETCD__STALL_TIMEOUT="1.5",  # progress answers asked for every 0.5 s when idle
    )
    bridge, port = serving(bridge_factory, **settings)
    bridge.wait_watching()
    wait_for_revision(output, revision)
    held = read_events(output)[-1]

    status_code, body = get(port, "/positions")
    (entry,) = orjson.loads(body)["pipelines"]
    assert status_code == 200 and entry["position"] == str(held.position)
    assert (entry["phase"], entry["format"], entry["lag_revisions"]) == ("watching", "native", 0)
    assert entry["snapshot"] == {"keys_read": 51, "keys_expected": 51}

    # No new revision since: the requested snapshot is at the revision the file ends at, and
    # numbers on after its last event, so the file's positions still strictly increase.
    assert get(port, "/resnapshot?sink=file", method="POST")[0] == 401
    assert get(port, "/resnapshot?sink=file", method="POST", token=TOKEN)[0] == 202

    def requested_snapshot_done() -> bool:
        last = read_events(output)[-1]
        return last.op is Op.SNAPSHOT_END and last.reason is SnapshotReason.REQUESTED

    wait_for(requested_snapshot_done, timeout=20, what="the requested snapshot")
    events = read_events(output)
    positions = [event.position for event in events]
    assert positions == sorted(set(positions)), "positions must strictly increase"
    begin = next(n for n, event in enumerate(events) if event.reason is SnapshotReason.REQUESTED)
    assert events[begin].position.revision == revision
    assert events[begin].position.index == held.index + 1
    keys = {event.key for event in events[begin:] if event.type is EventType.PUT}
    assert len(keys) == 51
    assert metric(port, "etcd_bridge_snapshots_requested_total", sink="file") == 1
    assert metric(port, "etcd_bridge_snapshot_keys_expected", sink="file") == 51
    assert metric(port, "etcd_bridge_etcd_progress_timestamp_seconds", sink="file") > 0

    with server.client() as client:
        after = client.put("/adm/after", b"y").header.revision
    wait_for_revision(output, after)
    assert metric(port, "etcd_bridge_last_event_timestamp_seconds", sink="file") > 0

    # Changes elsewhere in etcd: the idle prefix's sink is not behind, once etcd's progress
    # answer says every change of the watch up to its revision was sent.
    with server.client() as client:
        for number in range(20):
            elsewhere = client.put(f"/other/{number}", b"z").header.revision

    def caught_up_elsewhere() -> bool:
        reported = metric(port, "etcd_bridge_etcd_revision", sink="file")
        return reported >= elsewhere and metric(port, "etcd_bridge_lag_revisions", sink="file") == 0

    wait_for(caught_up_elsewhere, timeout=20, what="the idle sink to count as caught up")
    assert metric(port, "etcd_bridge_sink_revision", sink="file") == after

    served = {**settings, "BRIDGE_HTTP__ENABLED": "true", "BRIDGE_HTTP__PORT": str(port)}
    code, shown = status(bridge_factory, served)
    tail = read_events(output)[-1]
    assert code == 0, shown
    assert row(shown, "file")[:5] == [
        "file",
        str(tail.position),
        f"({tail.op.value})",
        str(elsewhere),
        "0",  # from the running bridge, which knows the prefix is idle
    ]
    assert "watching" in row(shown, "file")
    bridge.terminate()
    code, shown = status(bridge_factory, served)
    assert code == 0, shown
    assert row(shown, "file")[1] == str(tail.position)
    assert row(shown, "file")[4] == f"<={elsewhere - after}"
    assert "no bridge answers" in shown
