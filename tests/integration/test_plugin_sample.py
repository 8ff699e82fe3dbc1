"""The sample plug-in (tests/plugin_sample, the ``sqlite`` sink) run by the real bridge.

It is installed on its own (scripts/test.sh) and nothing in bridge/, sinks/ or config/ names
it: the bridge finds it through its entry point and configures it from its own
``BRIDGE_SQLITE__*`` variables. ``kill -9`` while changes flow, each time once the table has
moved on (durable progress, not start-up), then a clean run: every change etcd made is in
the table exactly once, after one initial snapshot.
"""

import dataclasses
from pathlib import Path

import orjson
import pytest

from bridge.events import Event, OmittedBytes, Op
from tests.contract.harnesses import sqlite_events
from tests.fixtures.bridge import (
    BridgeFactory,
    BridgeProcess,
    get,
    metric,
    read_events,
    serving,
)
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import Change, RecordingWriter, assert_exactly_once
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


LIMIT = 64
"""BRIDGE_SQLITE__MAX_VALUE_BYTES of the refusal-policy test; the writer's values stay below."""


def refused(change: Change) -> bool:
    """Whether the sample sink refuses ``change`` (its value or previous value over LIMIT)."""
    return max(len(change.value or b""), len(change.prev_value or b"")) > LIMIT


def without_values(change: Change) -> Change:
    return dataclasses.replace(change, value=None, prev_value=None)


def sizes(change: Change) -> OmittedBytes:
    value, prev = change.value, change.prev_value
    return OmittedBytes(
        value=None if value is None else len(value), prev_value=None if prev is None else len(prev)
    )


def policy_lines(bridge: BridgeProcess, policy: str) -> list[dict[str, object]]:
    """The JSON log lines of ``bridge`` reporting a refused event handled by ``policy``."""
    records = [orjson.loads(line) for line in bridge.log_text().splitlines() if line]
    return [record for record in records if record.get("policy") == policy]


@pytest.mark.parametrize("policy", ["omit_value", "dead_letter"])
def test_refused_events_go_on_by_policy_exactly_once_across_kill_9(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path, policy: str
) -> None:
    """The sample sink refuses values over LIMIT (new ones, and updates and deletes of large
    ones, by their previous value). With omit_value each is in its table at its position
    without values, sizes said; with dead_letter each is in the dead-letter file, value whole,
    and the table holds all the others. Once each, across a kill -9 while they flow; the file
    sink beside it holds every change; each refusal handled by the restarted bridge is one
    count and one log line."""
    database, output = tmp_path / "events.db", tmp_path / "events.jsonl"
    dead_letter = tmp_path / "refused.jsonl"
    settings = {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": "refusals",
        "BRIDGE_SINKS": "sqlite,file",
        "BRIDGE_SQLITE__PATH": str(database),
        "BRIDGE_SQLITE__MAX_VALUE_BYTES": str(LIMIT),
        "BRIDGE_SQLITE__ON_REFUSED": policy,
        "BRIDGE_FILE__PATH": str(output),
        "BRIDGE_FILE__FSYNC": "false",
        "BRIDGE_PUMP__BATCH_EVENTS": "5",
        "BRIDGE_LOG__FORMAT": "json",
    }
    if policy == "dead_letter":
        settings["BRIDGE_SQLITE__DEAD_LETTER_PATH"] = str(dead_letter)
    large = 0

    def put_large(writer: RecordingWriter) -> int:
        nonlocal large
        large += 1
        return writer.put_keys([(f"{prefix}large{large % 3}".encode(), b"x" * (LIMIT + large))])

    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=71)
        for _ in range(30):
            writer.step()
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()  # the snapshot holds no large value
        first = put_large(writer)
        for _ in range(20):
            writer.step()
        wait_for(lambda: last_position(database)[0] > first, timeout=20, what="past a refusal")
        for round_ in range(30):  # refusals still flowing when the kill lands
            if round_ % 5 == 0:
                put_large(writer)
            writer.step()
        bridge.kill()
        held = last_position(database)
        diverted = read_events(dead_letter)
        bridge = bridge_factory.start(**settings)
        for round_ in range(20):
            if round_ % 5 == 0:
                put_large(writer)
            writer.step()
        writer.transaction([f"{prefix}large0".encode()], delete=True)  # refused by its prev
        final = writer.put_keys([(f"{prefix}last".encode(), b"small")])
        wait_for(lambda: last_position(database)[0] >= final, timeout=20, what=f"{final}")
        wait_for_revision(output, final)
        counted = bridge.metric("etcd_bridge_refused_events_total", sink="sqlite", policy=policy)
    assert bridge.terminate() == 0, "no pipeline failed"
    table = sqlite_events(database)
    snapshot = table[0].revision
    changes = [change for change in writer.changes if change.revision > snapshot]
    assert any(refused(change) for change in changes if change.revision <= held[0])
    assert_exactly_once(read_events(output), writer.changes, after=snapshot)
    if policy == "omit_value":
        expected = [without_values(c) if refused(c) else c for c in changes]
        assert_exactly_once(table, expected, after=snapshot)
        by_position = {(change.revision, change.index): change for change in changes}
        for event in table[1:]:
            change = by_position.get((event.revision, event.index))
            if change is not None and refused(change):
                assert event.omitted_bytes == sizes(change)
        handled = [e for e in table if e.omitted_bytes and (e.revision, e.index) > held]
    else:
        assert_exactly_once(table, [c for c in changes if not refused(c)], after=snapshot)
        assert_exactly_once(read_events(dead_letter), [c for c in changes if refused(c)], after=0)
        handled = read_events(dead_letter)[len(diverted) :]
    assert counted == len(handled) > 0, "each refusal the restarted bridge handled, counted"
    lines = policy_lines(bridge, policy)
    assert [(line["key"], line["revision"]) for line in lines] == [
        (event.key.decode(), event.revision) for event in handled
    ]
