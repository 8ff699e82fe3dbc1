"""The local log against a real etcd: kill -9 while it is written and read, a sink down
across several compactions that then gets every change, the disk budget exceeded (a resync,
counted), a full disk under the log, and what ``etcd-bridge check`` and ``status`` say of it
beside a running bridge."""

import random
from pathlib import Path

from bridge.events import Op, SnapshotReason
from bridge.journal.segments import SEGMENT_HEADER_BYTES
from tests.fixtures.bridge import BridgeFactory, BridgeProcess, read_events
from tests.fixtures.disk import fill, small_disk
from tests.fixtures.etcd import EtcdFactory, EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import RecordingWriter, assert_exactly_once, assert_snapshot, load_keys
from tests.integration.test_file_faults import phase_of, write_until
from tests.integration.test_pipeline_file import (
    file_bridge,
    kill_repeatedly,
    run_command,
    wait_for_revision,
)

_DISK_BYTES = 1 << 20
_ROOMY_DISK_BYTES = 16 << 20
"""For a file sink that must take a resync snapshot of 4 KiB values once its full disk is
emptied: the file keeps what the sink wrote before, and what it wrote is not bounded by the
filler (each reopen cuts a torn write back, freeing room for part of the next). Enough for
the worst case, every one of the 600 changes written first (about 11 kB each as JSON, value
and previous value in base64), then the snapshot: on 1 MiB, then on 4 MiB, a CI run's file
sink was still out of space after the filler was removed (it had written up to revision 350)."""
LOG = {"journal": "watching"}


def journal_bridge(
    factory: BridgeFactory, server: EtcdServer, *, prefix: str, tmp_path: Path, **extra: str
) -> tuple[dict[str, str], Path, Path]:
    """Settings of a bridge with the log on, into the file and stdout sinks; the file's and
    the stdout checkpoint's paths."""
    output = extra.pop("output", None) or str(tmp_path / "events.jsonl")
    settings = file_bridge(
        factory,
        server,
        prefix=prefix,
        path=Path(output),
        BRIDGE_SINKS="file,stdout",
        BRIDGE_STDOUT__CHECKPOINT_DIR=str(tmp_path),
        BRIDGE_JOURNAL__PATH=str(tmp_path / "journal"),
        **extra,
    )
    return settings, Path(output), tmp_path / "journal"


def opened_journal_lines(bridge: BridgeProcess) -> list[str]:
    return [line for line in bridge.log_text().splitlines() if "journal opened" in line]


def test_kill_9_while_the_log_is_written_and_read_leaves_each_change_once(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    settings, output, journal = journal_bridge(
        bridge_factory, etcd, prefix=prefix, tmp_path=tmp_path, BRIDGE_PUMP__BATCH_EVENTS="7"
    )
    chaos = random.Random(14)  # noqa: S311 - reproducible chaos, not security
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=14)
        for _ in range(100):
            writer.step()
        held_at_kills = kill_repeatedly(
            bridge_factory, settings, output, writer, rounds=6, chaos=chaos, steps=(50, 300)
        )
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching(timeout=60)
        wait_for_revision(output, writer.changes[-1].revision, timeout=60)
        wait_for_revision(bridge.stdout_path, writer.changes[-1].revision, timeout=60)
        assert "segments=0" not in opened_journal_lines(bridge)[0], "the log was not kept"
    assert bridge.terminate() == 0
    events = read_events(output)
    assert events[0].op is Op.SNAPSHOT_BEGIN and events[0].reason is SnapshotReason.INITIAL
    assert sum(event.op is Op.SNAPSHOT_END for event in events) == 1
    assert_exactly_once(events, writer.changes, after=events[0].revision)
    delivered = {event.position for event in events}
    assert all(position in delivered for position in held_at_kills), "durable, then lost"
    assert list(journal.glob("*.seg")), "the log holds nothing"


def test_a_sink_down_across_compactions_gets_every_change_from_the_log(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    prefix = "/j/"
    with small_disk(tmp_path / "disk", size=_DISK_BYTES) as disk, server.client() as client:
        settings, output, _journal = journal_bridge(
            bridge_factory, server, prefix=prefix, tmp_path=tmp_path, output=str(disk / "e.jsonl")
        )
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()
        snapshot_end = read_events(output)[-1]
        filler = fill(disk)
        writer = RecordingWriter(client, prefix=prefix, seed=15)
        write_until(writer, lambda: phase_of(bridge, "file") == "sink_down", what="sink_down")
        for _compaction in range(3):  # history the file sink needs, compacted in etcd
            for _ in range(100):
                writer.step()
            # Compacted only once the log's reader (which stdout follows) has it: compacted
            # under a lagging reader, etcd would cancel its watch and the log start afresh.
            wait_for_revision(bridge.stdout_path, writer.changes[-1].revision)
            client.compact(writer.changes[-1].revision)
        assert phase_of(bridge, "file") == "sink_down"
        filler.unlink()
        wait_for_revision(output, writer.changes[-1].revision)
        assert bridge.metric("etcd_bridge_resyncs_total", sink="file") == 0
        assert bridge.metric("etcd_bridge_journal_overruns_total", sink="file") == 0
        assert bridge.terminate() == 0
        events = read_events(output)
    assert [e.reason for e in events if e.op is Op.SNAPSHOT_BEGIN] == [SnapshotReason.INITIAL]
    assert_exactly_once(events, writer.changes, after=snapshot_end.revision)


def test_past_the_disk_budget_a_sink_behind_resyncs_and_it_is_counted(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    prefix = "/b/"
    with small_disk(tmp_path / "disk", size=_ROOMY_DISK_BYTES) as disk, server.client() as client:
        settings, output, journal = journal_bridge(
            bridge_factory,
            server,
            prefix=prefix,
            tmp_path=tmp_path,
            output=str(disk / "e.jsonl"),
            BRIDGE_JOURNAL__MAX_BYTES=str(1 << 20),
            BRIDGE_JOURNAL__SEGMENT_BYTES=str(64 << 10),
        )
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()
        filler = fill(disk)
        writer = RecordingWriter(client, prefix=prefix, seed=16, padding=4096)
        write_until(writer, lambda: phase_of(bridge, "file") == "sink_down", what="sink_down")
        for _ in range(600):  # about 2.4 MiB of values, past the 1 MiB budget
            writer.step()
        # The log's reader (which stdout follows) must not lag behind the compaction: etcd
        # would cancel its watch, and the log would start afresh with a resync for every sink.
        wait_for_revision(bridge.stdout_path, writer.changes[-1].revision)
        client.compact(writer.changes[-1].revision)
        # Trimming keeps the segments before the newest within the budget; the newest grows
        # past SEGMENT_BYTES by its last frame and until its revision is whole.
        sizes = [path.stat().st_size for path in sorted(journal.glob("*.seg"))]
        headers = len(sizes) * SEGMENT_HEADER_BYTES
        assert sum(sizes[:-1]) <= (1 << 20) + headers, sizes
        # The disk stays full until the sink has met the compaction. Emptied at once, a retry
        # begun just before the compaction read etcd's history while it was still there and
        # wrote it all once the disk had room: no resync, rightly (seen in 1 of 4 runs).
        wait_for(
            lambda: bridge.metric("etcd_bridge_resyncs_total", sink="file") >= 1,
            timeout=30,
            what="the sink's resync",
        )
        filler.unlink()
        wait_for(
            lambda: any(e.reason is SnapshotReason.COMPACTED for e in read_events(output)),
            timeout=30,
            what="the resync snapshot",
        )
        writer.step()
        wait_for_revision(output, writer.changes[-1].revision)
        assert bridge.metric("etcd_bridge_journal_overruns_total", sink="file") >= 1
        # One resync per attempt: the one met on a full disk wrote nothing, and is taken again.
        assert bridge.metric("etcd_bridge_resyncs_total", sink="file") in (1, 2)
        assert bridge.metric("etcd_bridge_resyncs_total", sink="stdout") == 0
        assert bridge.metric("etcd_bridge_resyncs_total", sink="journal") == 0
        assert bridge.terminate() == 0
        events = read_events(output)
    resync = next(e for e in events if e.reason is SnapshotReason.COMPACTED)
    assert_exactly_once(events, writer.changes, after=resync.revision)


def test_a_full_disk_under_the_log_holds_the_sinks_until_space_returns(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", size=_DISK_BYTES) as disk, etcd.client() as client:
        settings, output, _journal = journal_bridge(
            bridge_factory, etcd, prefix=prefix, tmp_path=tmp_path
        )
        settings["BRIDGE_JOURNAL__PATH"] = str(disk)
        bridge = bridge_factory.start(**settings)
        bridge.wait_watching()
        snapshot_end = read_events(output)[-1]
        filler = fill(disk)
        writer = RecordingWriter(client, prefix=prefix, seed=17)
        write_until(writer, lambda: phase_of(bridge, "journal") == "sink_down", what="log full")
        assert bridge.metric(
            "etcd_bridge_errors_total", sink="journal", kind="JournalUnavailableError"
        )
        filler.unlink()
        for _ in range(20):
            writer.step()
        wait_for_revision(output, writer.changes[-1].revision)
        wait_for_revision(bridge.stdout_path, writer.changes[-1].revision)
        assert bridge.terminate() == 0
    assert_exactly_once(read_events(output), writer.changes, after=snapshot_end.revision)


def test_a_snapshot_delivered_long_after_etcd_compacted_its_revision_completes_once(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server = etcd_factory.start()
    prefix = "/s/"
    with small_disk(tmp_path / "disk", size=_DISK_BYTES) as disk, server.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=18)
        load_keys(client, prefix=prefix, count=2000, value=b"k" * 200)  # 400 kB: the disk holds it
        state = {f"{prefix}{number:06d}".encode(): b"k" * 200 for number in range(2000)}
        settings, output, _journal = journal_bridge(
            bridge_factory, server, prefix=prefix, tmp_path=tmp_path, output=str(disk / "e.jsonl")
        )
        filler = fill(disk)  # the file sink cannot take a byte of the snapshot
        bridge = bridge_factory.start(**settings)
        wait_for(
            lambda: bridge.phases()[1] == {"file": "sink_down", "stdout": "watching", **LOG},
            timeout=30,
            what="the snapshot in stdout, file down",
        )
        for _compaction in range(3):
            for _ in range(50):
                writer.step()
            # As above, and also: etcd sends a lagging watcher's events without the previous
            # value it has compacted meanwhile (etcd-io/etcd#10681), and this test is about
            # the snapshot, not that.
            wait_for_revision(bridge.stdout_path, writer.changes[-1].revision)
            client.compact(writer.changes[-1].revision)
        filler.unlink()
        wait_for_revision(output, writer.changes[-1].revision)
        assert bridge.metric("etcd_bridge_resyncs_total", sink="file") == 0
        assert bridge.terminate() == 0
        events = read_events(output)
    revision = assert_snapshot(events, state)  # one snapshot, initial, whole
    assert revision < writer.changes[0].revision, "etcd compacted it: it came from the log"
    assert_exactly_once(events, writer.changes, after=revision)


def test_check_and_status_show_the_log_beside_a_running_bridge(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    settings, output, journal = journal_bridge(
        bridge_factory, etcd, prefix=prefix, tmp_path=tmp_path
    )
    bridge = bridge_factory.start(**settings)
    bridge.wait_watching()
    assert bridge.process is not None
    with etcd.client() as client:
        writer = RecordingWriter(client, prefix=prefix, seed=19)
        for _ in range(30):
            writer.step()
    wait_for_revision(output, writer.changes[-1].revision)
    wait_for_revision(bridge.stdout_path, writer.changes[-1].revision)

    checked = run_command("check", **settings)
    assert checked.returncode == 1
    [locked] = [line for line in checked.stderr.splitlines() if "JOURNAL" in line]
    assert locked.startswith(f"etcd-bridge: BRIDGE_JOURNAL__PATH: {journal} ")
    assert f"pid {bridge.process.pid} " in locked

    shown = run_command("status", **settings)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    span = next(line for line in lines if line.startswith(f"journal {journal}: "))
    assert f"..{writer.changes[-1].revision}" in span, span
    behind = dict(line.split(maxsplit=1) for line in lines[lines.index(span) + 2 :])
    assert behind == {"file": "0 B (0 revisions)", "stdout": "0 B (0 revisions)"}, lines

    assert bridge.terminate() == 0
    checked = run_command("check", **settings)
    assert checked.returncode == 0, checked.stderr
    assert f"ok: journal {journal} is usable: holds " in checked.stdout, checked.stdout
