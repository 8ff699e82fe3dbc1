"""The file sink's reader: complete lines only, across chunk boundaries, after a position,
in the sink's format, and one line naming a record that is not one."""

from pathlib import Path

import pytest

import sinks.file
from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op, Position
from bridge.reader import NoReaderError
from bridge.sink import SinkContext
from config.keyspace import KeySpace
from sinks.file import FileReader, FileSettings, FileSink
from sinks.stdout.sink import StdoutSettings, StdoutSink

CONTEXT = SinkContext(pipeline="test", keyspace=KeySpace.of([b"/"]))


def events(count: int) -> list[Event]:
    return [
        Event(revision, 0, EventType.PUT, Op.CREATE, b"/k%d" % revision, b"v" * revision)
        for revision in range(2, count + 2)
    ]


def test_reads_complete_lines_across_chunks_after_a_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sinks.file, "_READ_CHUNK", 7)  # every line spans chunks
    path = tmp_path / "events.jsonl"
    written = events(30)
    path.write_bytes(b"".join(event.to_json() + b"\n" for event in written) + b'{"revision":')
    reader = FileSink.reader(FileSettings(path=path), context=CONTEXT)
    assert list(reader.events()) == written, "the torn last line is left out"
    assert list(reader.events(after=Position(20, 0))) == written[19:]
    assert list(FileReader(path=tmp_path / "absent.jsonl").events()) == []


def test_a_line_that_is_no_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(events(1)[0].to_json() + b"\nnot json\n")
    with pytest.raises(SinkRejectedError, match="line 2 of .* is not an etcd-bridge native"):
        list(FileReader(path=path).events())


def test_stdout_says_why_it_has_no_reader(tmp_path: Path) -> None:
    with pytest.raises(NoReaderError, match="writes to a pipe"):
        StdoutSink.reader(StdoutSettings(checkpoint_dir=tmp_path), context=CONTEXT)
