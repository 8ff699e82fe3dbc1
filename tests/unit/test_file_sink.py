"""The file sink reads its position back from its own last line and repairs a torn one; it
refuses a second writer and notices a file changed under it."""

from pathlib import Path

import pytest

from bridge import lines
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op
from bridge.formats import FormatContext, build_format
from bridge.ownership import Owner
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings
from sinks.file import FileSink


def change(revision: int, index: int = 0, *, value: bytes = b"v") -> Event:
    return Event(
        revision=revision, index=index, type=EventType.PUT, op=Op.CREATE, key=b"/k", value=value
    )


def test_empty_file_holds_nothing(tmp_path: Path) -> None:
    with FileSink(path=tmp_path / "out.jsonl") as sink:
        assert sink.open() is None


def test_reopen_returns_the_last_event(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with FileSink(path=path) as sink:
        sink.open()
        sink.write([change(3), change(3, 1), change(4)])
        sink.flush()
    with FileSink(path=path) as sink:
        assert sink.open() == change(4)


def test_torn_last_line_is_cut_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    complete = change(3).to_json() + b"\n"
    path.write_bytes(complete + change(4).to_json()[:10])
    with FileSink(path=path) as sink:
        assert sink.open() == change(3)
    assert path.read_bytes() == complete


def test_a_single_torn_line_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"revision":')
    with FileSink(path=path) as sink:
        assert sink.open() is None
    assert path.read_bytes() == b""


def test_lines_longer_than_the_read_back_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lines, "_READ_BACK_BYTES", 16)
    path = tmp_path / "out.jsonl"
    big = change(7, value=b"x" * 300)
    path.write_bytes(change(6).to_json() + b"\n" + big.to_json() + b"\n" + b'{"torn')
    with FileSink(path=path) as sink:
        assert sink.open() == big


def test_a_foreign_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"hello world\n")
    with FileSink(path=path) as sink, pytest.raises(SinkRejectedError, match="BRIDGE_FILE__PATH"):
        sink.open()


@pytest.mark.parametrize("format_name", list(FormatName))
def test_the_last_line_is_read_back_in_the_sinks_format(tmp_path: Path, format_name: str) -> None:
    """Exactly once in every format: the tail is decoded with the format that wrote it, and
    a file of another format is refused naming the setting."""
    path = tmp_path / "out.jsonl"
    context = FormatContext(pipeline="p", cluster="c", keyspace=KeySpace.of([b"/"]))
    record_format = build_format(OutputSettings(format=FormatName(format_name)), context=context)
    with FileSink(path=path, record_format=record_format) as sink:
        sink.open()
        sink.write([change(3), change(3, 1, value=b"\xff binary"), change(4)])
        sink.flush()
    lines = path.read_bytes().splitlines()
    assert [record_format.decode(line).position for line in lines] == [
        change(3).position,
        change(3, 1).position,
        change(4).position,
    ]
    with FileSink(path=path, record_format=record_format) as sink:
        assert sink.open() == change(4)
    if format_name != FormatName.NATIVE:
        with FileSink(path=path) as sink, pytest.raises(SinkRejectedError, match="FORMAT"):
            sink.open()


FIRST = Owner(pipeline="orders", host="a", pid=1)


@pytest.mark.parametrize(
    ("second", "ha"),
    [(Owner("orders", "b", 2), False), (Owner("users", "b", 2), True)],
    ids=["same-pipeline-without-ha", "other-pipeline-with-ha"],
)
def test_a_second_writer_is_refused_naming_the_first(
    tmp_path: Path, second: Owner, ha: bool
) -> None:
    """flock is per open file, so two sinks of one process conflict as two processes do."""
    path = tmp_path / "out.jsonl"
    with FileSink(path=path, owner=FIRST, ha=ha) as first:
        first.open()
        with (
            FileSink(path=path, owner=second, ha=ha) as refused,
            pytest.raises(SinkRejectedError, match="pipeline 'orders', pid 1 on host a"),
        ):
            refused.open()
    with FileSink(path=path, owner=second, ha=ha) as after_close:
        assert after_close.open() is None, "closing the first released the lock"


def test_with_ha_an_instance_of_the_pipeline_takes_over_a_held_lock(tmp_path: Path) -> None:
    """A paused former leader still holds the lock; the new leader writes anyway."""
    path = tmp_path / "out.jsonl"
    with FileSink(path=path, owner=FIRST, ha=True) as paused:
        paused.open()
        paused.write([change(3)])
        paused.flush()
        with FileSink(path=path, owner=Owner("orders", "b", 2), ha=True) as leader:
            assert leader.open() == change(3)
            leader.write([change(4)])
            leader.flush()
    assert path.read_bytes().count(b"\n") == 2


@pytest.mark.parametrize("change_it", ["truncate", "remove", "replace", "append"])
def test_a_file_changed_while_open_makes_the_sink_unavailable(
    tmp_path: Path, change_it: str
) -> None:
    """The next write refuses to append to a file that is not as the sink left it."""
    path = tmp_path / "out.jsonl"
    with FileSink(path=path) as sink:
        sink.open()
        sink.write([change(3), change(4)])
        sink.flush()
        if change_it == "truncate":
            path.write_bytes(b"")
        elif change_it == "remove":
            path.unlink()
        elif change_it == "replace":
            (tmp_path / "new").write_bytes(b"")
            (tmp_path / "new").rename(path)
        else:
            with path.open("ab") as other:
                other.write(change(9).to_json() + b"\n")
        with pytest.raises(SinkUnavailableError, match=str(path)):
            sink.write([change(5)])
