"""The sample plug-in (tests/plugin_sample, the ``sqlite`` sink) run by the real bridge.

It is installed on its own (scripts/test.sh) and nothing in bridge/, sinks/ or config/ names
it: the bridge finds it through its entry point and configures it from its own
``BRIDGE_SQLITE__*`` variables. ``kill -9`` while changes flow, each time once the table has
moved on (durable progress, not start-up), then a clean run: every change etcd made is in
the table exactly once, after one initial snapshot.
"""

from pathlib import Path

from bridge.events import Event, Op
from tests.contract.harnesses import sqlite_events
from tests.fixtures.bridge import BridgeFactory, get, metric, serving
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once
from tests.integration.test_pipeline_file import wait_for_revision

KILLS = 4


def last_position(database: Path) -> tuple[int, int]:
    """The position of the table's last row, (0, 0) while it has none."""
    events = sqlite_events(database)
    return (events[-1].revision, events[-1].index) if events else (0, 0)


def test_kill_9_while_changes_flow_leaves_each_change_once(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    database = tmp_path / "events.db"
    settings = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": "sample",
        "BRIDGE_SINKS": "sqlite",
        "BRIDGE_SQLITE__PATH": str(database),
        "BRIDGE_PUMP__BATCH_EVENTS": "5",
    }
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=41)
        for _ in range(100):
            writer.step()
        start_revision = writer.changes[-1].revision
        for _round in range(KILLS):
            before = last_position(database)
            bridge = bridge_factory.start(**settings)
            for _ in range(80):
                writer.step()
            wait_for(
                lambda: last_position(database) > before,  # noqa: B023 - called right here
                timeout=30,
                what="the table to move on",
            )
            for _ in range(40):  # still flowing when the kill lands
                writer.step()
            bridge.kill()
        bridge = bridge_factory.start(**settings)
        for _ in range(10):  # only this bridge can deliver these: it is past its start-up
            writer.step()
        final = writer.changes[-1].revision
        wait_for(lambda: last_position(database)[0] >= final, timeout=60, what=f"revision {final}")
    assert bridge.terminate() == 0
    events: list[Event] = sqlite_events(database)
    assert events[0].op is Op.SNAPSHOT_BEGIN and events[0].revision >= start_revision
    assert sum(event.op is Op.SNAPSHOT_END for event in events) == 1
    assert_exactly_once(events, writer.changes, after=events[0].revision)


def test_a_refused_event_stops_only_its_own_pipeline(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    """The sample sink refuses a value over its limit: its pipeline fails with one line naming
    the key and revision, the file sink beside it goes on, liveness holds (a restart would not
    mend it), readiness does not, and the process exits 1 when stopped."""
    database, output = tmp_path / "events.db", tmp_path / "events.jsonl"
    bridge, port = serving(
        bridge_factory,
        BRIDGE_ETCD__ENDPOINTS=etcd.url,
        BRIDGE_ETCD__PREFIX=prefix,
        BRIDGE_NAME="isolated",
        BRIDGE_SINKS="sqlite,file",
        BRIDGE_SQLITE__PATH=str(database),
        BRIDGE_SQLITE__MAX_VALUE_BYTES="64",
        BRIDGE_FILE__PATH=str(output),
        BRIDGE_FILE__FSYNC="false",
    )
    bridge.wait_watching()
    with etcd.client() as client:
        refused = client.put(f"{prefix}big", b"x" * 100).header.revision
        after = client.put(f"{prefix}small", b"y").header.revision
    wait_for_revision(output, after)
    wait_for(lambda: bridge.phases()[1]["sqlite"] == "failed", timeout=20, what="sqlite failed")
    assert bridge.phases() == (503, {"sqlite": "failed", "file": "watching"})
    assert get(port, "/healthz")[0] == 200
    assert metric(port, "etcd_bridge_errors_total", sink="sqlite", kind="SinkRejectedError") == 1
    refusals = [line for line in bridge.log_text().splitlines() if "MAX_VALUE_BYTES" in line]
    assert len(refusals) == 1 and f"{prefix}big" in refusals[0] and str(refused) in refusals[0]
    assert last_position(database)[0] < refused, "nothing at or after the refused event"
    with etcd.client() as client:
        later = client.put(f"{prefix}later", b"z").header.revision
    wait_for_revision(output, later)
    assert bridge.terminate() == 1
