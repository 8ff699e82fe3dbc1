"""The file sink reads its position back from its own last line and repairs a torn one."""

from pathlib import Path

import pytest

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op
from bridge.formats import FormatContext, build_format
from config.keyspace import KeySpace
from config.output import FormatName, OutputSettings
from sinks import file as file_module
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
    monkeypatch.setattr(file_module, "_READ_BACK_CHUNK", 16)
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
