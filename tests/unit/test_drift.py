"""The comparisons behind ``etcd-bridge verify`` (``bridge.drift``) and its bad-input lines,
without servers."""

import os
from pathlib import Path

import pytest

from bridge.__main__ import main
from bridge.consumer import KeyValue
from bridge.drift import StreamCheck, compare_history, compare_states, shown_key
from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker
from config.output import ValuesMode


def entry(key: bytes, value: bytes, revision: int = 5) -> KeyValue:
    return KeyValue(key, value, revision, 1, 1, 0)


def change(revision: int, index: int, key: bytes, value: bytes, *, more: bool = False) -> Event:
    return Event(revision, index, EventType.PUT, Op.UPDATE, key, value, b"old", more=more)


def test_states_merge_by_key_and_name_each_difference() -> None:
    etcd = [entry(b"/a", b"1"), entry(b"/b", b"2"), entry(b"/c", b"3"), entry(b"/e", b"{}")]
    sink = [entry(b"/b", b"2"), entry(b"/c", b"x", 7), entry(b"/d", b"4"), entry(b"/e", b"{ }")]
    diff = compare_states(etcd, sink, values=ValuesMode.BYTES)
    assert (diff.compared, diff.missing.examples, diff.extra.examples) == (5, ["/a"], ["/d"])
    assert diff.different.examples == ["/c (value,mod_revision)", "/e (value)"]
    assert not diff.agree
    json_values = compare_states(etcd[3:], sink[3:], values=ValuesMode.JSON)
    assert json_values.agree, "an embedded JSON value comes back re-serialized"


def test_keys_are_shown_escaped_when_not_printable() -> None:
    assert shown_key(b"/app/a") == "/app/a"
    assert shown_key(b"/app/\xff") == "b'/app/\\xff'"
    assert shown_key(b"/app/line\nbreak") == "b'/app/line\\nbreak'"


def test_stream_check_names_repeats_gaps_and_a_trimmed_head() -> None:
    begin = snapshot_marker(
        revision=3, index=0, op=Op.SNAPSHOT_BEGIN, prefix=b"/", reason=SnapshotReason.INITIAL
    )
    end = snapshot_marker(
        revision=3, index=1, op=Op.SNAPSHOT_END, prefix=b"/", reason=SnapshotReason.INITIAL
    )
    clean = StreamCheck()
    events = [begin, end, change(4, 0, b"/a", b"1", more=True), change(4, 1, b"/b", b"1")]
    assert list(clean.watch(events)) == events
    assert clean.clean
    broken = StreamCheck()
    for event in [
        change(4, 0, b"/a", b"1", more=True),
        change(5, 0, b"/b", b"1"),  # revision 4 said more
        change(5, 2, b"/c", b"1"),  # index 1 lost
        change(5, 1, b"/b", b"1"),  # out of order
    ]:
        broken.see(event)
    assert broken.describe() == [
        "trimmed: starts at 4-0 without a snapshot",
        "1 repeated: 5-1 after 5-2",
        "2 gaps: 4-0 -> 5-0, 5-0 -> 5-2",
    ]


def test_history_names_lost_repeated_unexpected_different_and_pending() -> None:
    etcd = [change(10, 0, b"/a", b"1"), change(11, 0, b"/b", b"2"), change(12, 0, b"/c", b"3")]
    sink = [
        change(10, 0, b"/a", b"1"),
        change(10, 0, b"/a", b"1"),
        change(11, 1, b"/x", b"9"),
        change(12, 0, b"/c", b"three"),
        change(13, 0, b"/d", b"past the range"),
    ]
    diff = compare_history(etcd, sink, last=12, values=ValuesMode.BYTES)
    assert diff.compared == 3 and diff.pending == 0
    assert diff.repeated.examples == ["10-0 after 10-0"]
    assert diff.lost.examples == ["11-0 /b"]
    assert diff.unexpected.examples == ["11-1 /x"]
    assert diff.different.examples == ["12-0 /c (value)"]
    behind = compare_history(etcd, sink[:1], last=12, values=ValuesMode.BYTES)
    assert (behind.agree, behind.pending, behind.compared) == (True, 2, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sinks", "kafka"], "etcd-bridge: --sinks: kafka not among the configured sinks"),
        (["--every", "soon"], "etcd-bridge: --every: 'soon' is not a positive duration"),
        (["--every", "0m"], "etcd-bridge: --every: '0m' is not a positive duration"),
    ],
)
def test_bad_arguments_are_one_line_naming_them(
    arguments: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_SINKS", "file")
    monkeypatch.setenv("BRIDGE_FILE__PATH", str(tmp_path / "events.jsonl"))
    monkeypatch.setenv("BRIDGE_ETCD__ENDPOINTS", "http://127.0.0.1:9")
    assert main(["verify", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1, error
