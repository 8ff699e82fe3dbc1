"""What ``etcd-bridge check`` and ``status`` say of the local log, from its directory: usable
or not (one line naming the setting), its size and span, and each sink's distance in it;
read without changing the log, while the bridge that writes it holds its lock."""

import os
from pathlib import Path

from bridge.journal import inspection
from bridge.journal.segments import Journal
from bridge.ownership import Owner, lock_file
from tests.unit.doubles import change, events_of, history
from tests.unit.test_journal import _IDENTITY, settings, snapshot


def test_check_accepts_a_directory_to_be_created_and_names_what_is_wrong(tmp_path: Path) -> None:
    fine, problems = inspection.check(settings(tmp_path / "a" / "journal"), identity=_IDENTITY)
    assert problems == [] and "to be created" in fine[0], fine
    assert not (tmp_path / "a").exists(), "check created the directory"

    (tmp_path / "file").write_bytes(b"")
    fine, problems = inspection.check(settings(tmp_path / "file" / "j"), identity=_IDENTITY)
    assert fine == [] and len(problems) == 1
    assert problems[0].startswith("BRIDGE_JOURNAL__PATH: ") and "not a directory" in problems[0]

    huge = settings(tmp_path, max_bytes=1 << 44, segment_bytes=1 << 20)
    fine, problems = inspection.check(huge, identity=_IDENTITY)
    assert fine == [] and len(problems) == 1
    assert problems[0].startswith("BRIDGE_JOURNAL__MAX_BYTES: 16.0 TiB"), problems[0]


def test_check_names_the_live_bridge_that_holds_the_directory(tmp_path: Path) -> None:
    running = Journal(settings(tmp_path), identity=_IDENTITY, owner=Owner("one", "host-a", 11))
    running.open()
    running.append(snapshot(10, 3))
    try:
        fine, problems = inspection.check(settings(tmp_path), identity=_IDENTITY)
    finally:
        running.close()
    assert fine == [] and len(problems) == 1
    assert problems[0].startswith("BRIDGE_JOURNAL__PATH: ")
    assert "pipeline 'one', pid 11 on host host-a" in problems[0]

    fine, problems = inspection.check(settings(tmp_path), identity=_IDENTITY)  # released
    assert problems == [] and "holds " in fine[0] and "holds 0 B" not in fine[0], fine
    descriptor, holder = lock_file(tmp_path / "lock", Owner("two", "host-b", 22))
    assert descriptor is not None and holder is None, "check left the lock held"
    os.close(descriptor)


def test_status_shows_the_span_and_each_sinks_distance_without_changing_the_log(
    tmp_path: Path,
) -> None:
    chunks = [snapshot(10, 5), *history(range(11, 41))]
    running = Journal(settings(tmp_path), identity=_IDENTITY)
    running.open()
    for chunk in chunks:
        running.append(chunk)
    files = {path: path.read_bytes() for path in tmp_path.iterdir()}
    tails = {
        "caught_up": events_of(chunks)[-1],
        "behind": chunks[20].events[-1],
        "fresh": None,
        "before": change(5),
    }
    try:
        lines, problems = inspection.status(settings(tmp_path), identity=_IDENTITY, tails=tails)
    finally:
        running.close()
    assert problems == []
    assert lines[0].startswith(f"journal {tmp_path}: ") and "revisions 10..40" in lines[0]
    shown = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[2:]}
    assert shown["caught_up"] == "0 B (0 revisions)"
    assert shown["behind"].endswith("(10 revisions)") and not shown["behind"].startswith("0 B")
    assert shown["fresh"].endswith("B") and not shown["fresh"].startswith("0 B")
    assert shown["before"] == "not in it: catches up from etcd first"
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == files


def test_status_of_a_log_not_created_yet(tmp_path: Path) -> None:
    lines, problems = inspection.status(
        settings(tmp_path / "none"), identity=_IDENTITY, tails={"file": None}
    )
    assert problems == [] and lines == [
        f"journal {tmp_path / 'none'}: none yet (a bridge creates it at start)"
    ]
