"""``etcd-bridge verify`` on the file sink against a real etcd: agreement after a normal run,
a kill -9 loop and a compaction resync; each kind of tampering detected and named; the
``--history`` check; ``--every``'s gauges; all of it beside a running bridge."""

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.__main__ import main
from bridge.events import Event, EventType, Op, SnapshotReason
from tests.fixtures.bridge import BridgeFactory, get, last_event, read_events
from tests.fixtures.etcd import EtcdFactory, EtcdServer
from tests.fixtures.processes import free_port, wait_for
from tests.history import RecordingWriter
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision

BINARY_KEY = b"\xff\xfebinary"


def verify(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, str],
    *arguments: str,
) -> tuple[int, str]:
    """``etcd-bridge verify`` in this process, configured by ``settings`` alone."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    code = main(["verify", *arguments])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def verify_process(
    factory: BridgeFactory, settings: dict[str, str], *arguments: str
) -> subprocess.Popen[str]:
    """``etcd-bridge verify`` as an operator starts it."""
    return subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "bridge", "verify", *arguments],
        env=factory.environment(**settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def line_of(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def rewrite(source: Path, target: Path, lines: list[bytes]) -> dict[str, str]:
    """Write ``lines`` to ``target``; the settings that point verify at it."""
    target.write_bytes(b"".join(lines))
    return {"BRIDGE_FILE__PATH": str(target)}


def test_agreement_and_every_kind_of_tampering_named(
    etcd: EtcdServer,
    bridge_factory: BridgeFactory,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "events.jsonl"
    settings = file_bridge(bridge_factory, etcd, prefix=prefix, path=output)
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=11)
        writer.load(count=20, value=lambda number: b"initial %d" % number)
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()
        for _ in range(120):
            writer.step()
        binary = writer.put_keys([(prefix.encode() + BINARY_KEY, b"binary's value")])
        last = writer.transaction([prefix.encode() + b"k000", prefix.encode() + b"k001"])
        wait_for_revision(output, last)
    assert bridge.terminate() == 0
    events = read_events(output)
    first_change = events[0].revision + 1

    code, shown = verify(monkeypatch, capsys, settings, "--history", str(first_change), str(last))
    assert code == 0, shown
    summary = line_of(shown, "file: agree")
    assert f"at revision {last}: {len(writer.state)} keys compared, 0 missing" in summary
    history = line_of(shown, f"file: history {first_change}..{last} agree")
    changes = len([event for event in events if event.revision >= first_change])
    assert f": {changes} changes compared, 0 lost, 0 repeated" in history

    lines = output.read_bytes().splitlines(keepends=True)

    # A record deleted: the binary key's only change.
    number = next(n for n, event in enumerate(events) if event.revision == binary)
    tampered = rewrite(output, tmp_path / "deleted.jsonl", lines[:number] + lines[number + 1 :])
    code, shown = verify(
        monkeypatch, capsys, {**settings, **tampered}, "--history", str(first_change), str(last)
    )
    assert code == 1
    summary = line_of(shown, "file: DIFFER")
    assert "1 missing, 0 extra, 0 different" in summary
    assert f"missing: {(prefix.encode() + BINARY_KEY)!r}" in summary, "binary keys escaped"
    # A whole revision gone leaves no gap in the indexes (revisions outside the prefix
    # leave gaps anyway): the history check names it.
    history = line_of(shown, "file: history")
    assert f"1 lost, 0 repeated, 0 unexpected, 0 different; lost: {binary}-0 " in history

    # A value changed: the last change of a key still held.
    key = min(writer.state)
    number = max(n for n, event in enumerate(events) if event.key == key)
    changed = Event.from_json(lines[number])
    changed.value = b"tampered"
    tampered = rewrite(
        output,
        tmp_path / "changed.jsonl",
        [*lines[:number], changed.to_json() + b"\n", *lines[number + 1 :]],
    )
    code, shown = verify(monkeypatch, capsys, {**settings, **tampered})
    assert code == 1
    assert f"0 missing, 0 extra, 1 different; different: {key.decode()} (value)" in shown

    # A duplicate appended: the state still agrees, the stream does not.
    tampered = rewrite(output, tmp_path / "duplicate.jsonl", [*lines, lines[30]])
    code, shown = verify(monkeypatch, capsys, {**settings, **tampered})
    assert code == 1
    summary = line_of(shown, "file: DIFFER")
    assert "0 missing, 0 extra, 0 different" in summary
    assert f"1 repeated: {events[30].position} after {events[-1].position}" in summary

    # The stream trimmed: its head, the initial snapshot, is gone.
    tampered = rewrite(output, tmp_path / "trimmed.jsonl", lines[10:])
    code, shown = verify(monkeypatch, capsys, {**settings, **tampered})
    assert code == 1
    summary = line_of(shown, "file: DIFFER")
    assert f"trimmed: starts at {events[10].position} without a snapshot" in summary
    untouched = [k for k in writer.state if not any(e.key == k for e in events[10:])]
    assert untouched and f"{len(untouched)} missing" in summary


def test_agreement_after_a_kill_9_loop(
    etcd: EtcdServer,
    bridge_factory: BridgeFactory,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Killed at random moments, the file may end in a torn line or half a transaction:
    verify compares at the last revision it holds whole, and agrees."""
    output = tmp_path / "events.jsonl"
    settings = file_bridge(
        bridge_factory, etcd, prefix=prefix, path=output, BRIDGE_PUMP__BATCH_EVENTS="3"
    )
    chaos = random.Random(5)  # noqa: S311 - reproducible chaos, not security
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=12)
        for _ in range(30):
            writer.step()
        for _round in range(4):
            before = last_event(output)
            bridge = bridge_factory.start(**settings)
            for _ in range(chaos.randrange(30, 120)):
                writer.step()
            wait_for(
                lambda before=before: last_event(output) != before,  # type: ignore[misc]
                timeout=30,
                what="durable progress before the kill",
                interval=0.05,
            )
            bridge.kill()
    events = read_events(output)
    first_change, held = events[0].revision + 1, events[-1].revision
    code, shown = verify(monkeypatch, capsys, settings, "--history", str(first_change), str(held))
    assert code == 0, shown
    assert line_of(shown, "file: agree at revision")
    assert " 0 lost, 0 repeated, 0 unexpected, 0 different" in line_of(shown, "file: history")


def test_a_compacted_revision_then_the_resync(
    etcd_factory: EtcdFactory,
    bridge_factory: BridgeFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = etcd_factory.start()
    output = tmp_path / "events.jsonl"
    settings = file_bridge(bridge_factory, server, prefix="/c/", path=output)
    with server.client() as client:
        writer = RecordingWriter(client, prefix="/c/", seed=13)
        bridge = bridge_factory.start(**settings)
        for _ in range(30):
            writer.step()
        held = writer.changes[-1].revision
        wait_for_revision(output, held)
        assert bridge.terminate() == 0
        for _ in range(30):
            writer.step()
        compacted = writer.changes[-1].revision
        client.compact(compacted)

        # The sink's revision is gone from etcd: compared at the compact revision, said so.
        code, shown = verify(monkeypatch, capsys, settings)
        assert code == 1
        summary = line_of(shown, f"file: DIFFER at revision {held} (etcd at {compacted})")
        assert f"revision {held} is compacted in etcd" in summary
        assert "cannot be told from drift" in summary

        bridge = bridge_factory.start(**settings)
        wait_for(
            lambda: read_events(output)[-1].reason is SnapshotReason.COMPACTED,
            timeout=30,
            what="the resync snapshot",
        )
        last = writer.transaction([b"/c/after-resync"])
        wait_for_revision(output, last)
    assert bridge.terminate() == 0
    code, shown = verify(monkeypatch, capsys, settings)
    assert code == 0, shown
    assert line_of(shown, f"file: agree at revision {last}: {len(writer.state)} keys compared")


def test_verify_and_every_beside_a_running_bridge(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    """A bridge keeps appending while verify reads: verify compares at the revision it read
    whole and agrees; ``--every`` serves its gauges; the bridge's file is never changed by
    either (its lines only grow)."""
    output = tmp_path / "events.jsonl"
    settings = file_bridge(bridge_factory, etcd, prefix=prefix, path=output)
    stop = threading.Event()
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=14)
        writer.load(count=300, value=lambda number: b"v%d" % number)
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()

        def write_on() -> None:
            while not stop.wait(0.005):
                writer.step()

        busy = threading.Thread(target=write_on, name="writer")
        busy.start()
        try:
            wait_for(lambda: writer.operations > 50, timeout=20, what="changes flowing")
            port = free_port()
            served = {**settings, "BRIDGE_HTTP__ENABLED": "true", "BRIDGE_HTTP__PORT": str(port)}
            once = verify_process(bridge_factory, served)
            every = verify_process(bridge_factory, served, "--every", "1h")
            stdout, stderr = once.communicate(timeout=60)
            assert once.returncode == 0, stdout + stderr
            assert line_of(stdout, "file: agree at revision")

            def scraped() -> dict[str, float]:
                body = get(port, "/metrics")[1].decode()
                return {
                    f"{sample.name}{sorted(sample.labels.items())}": sample.value
                    for family in text_string_to_metric_families(body)
                    for sample in family.samples
                }

            samples = wait_for(
                lambda: (
                    (found := scraped())
                    and found.get("etcd_bridge_verify_last_run_timestamp_seconds[]", 0) > 0
                    and found
                ),
                timeout=60,
                what="a round's gauges",
                interval=0.1,
            )
        finally:
            stop.set()
            busy.join()
        assert samples["etcd_bridge_verify_agree[('sink', 'file')]"] == 1
        assert samples["etcd_bridge_verify_up[('sink', 'file')]"] == 1
        compared = samples["etcd_bridge_verify_keys[('result', 'compared'), ('sink', 'file')]"]
        assert compared >= 300
        assert samples["etcd_bridge_verify_keys[('result', 'missing'), ('sink', 'file')]"] == 0
        every.send_signal(signal.SIGTERM)
        assert every.wait(timeout=20) == 0
        every.communicate()
        wait_for_revision(output, writer.changes[-1].revision)
    assert bridge.terminate() == 0
    events = read_events(output)
    positions = [event.position for event in events]
    assert positions == sorted(set(positions)), "the bridge's stream stayed exactly once"
    assert sum(event.type is EventType.MARKER for event in events) == 2
    assert events[-1].op is not Op.SNAPSHOT_END
