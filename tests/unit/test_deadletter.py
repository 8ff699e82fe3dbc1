"""The dead-letter file: its tail read back on open, a torn last line cut, lines appended whole,
and a file that is not one named with its setting."""

from pathlib import Path

import pytest

from bridge.deadletter import DeadLetterFile
from bridge.errors import SinkRejectedError
from tests.unit.doubles import change

SETTING = "BRIDGE_KAFKA__DEAD_LETTER_PATH"


def test_a_new_file_is_created_empty_and_appends_read_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "refused.jsonl"
    with DeadLetterFile(path, setting=SETTING) as dead_letters:
        assert dead_letters.open() is None
        dead_letters.append(change(3, value=b"x" * 200_000))
        dead_letters.append(change(7, 1))
    with DeadLetterFile(path, setting=SETTING) as dead_letters:
        assert dead_letters.open() == change(7, 1)
    assert path.read_bytes() == change(3, value=b"x" * 200_000).to_json() + b"\n" + (
        change(7, 1).to_json() + b"\n"
    )


def test_a_torn_last_line_is_cut_on_open(tmp_path: Path) -> None:
    """A crash in the middle of an append leaves part of a line: it is not an event held."""
    path = tmp_path / "refused.jsonl"
    whole = change(3).to_json() + b"\n"
    path.write_bytes(whole + change(4, value=b"y" * 100_000).to_json()[:70_000])
    with DeadLetterFile(path, setting=SETTING) as dead_letters:
        assert dead_letters.open() == change(3)
        dead_letters.append(change(4))
    assert path.read_bytes() == whole + change(4).to_json() + b"\n"


def test_a_file_that_is_not_one_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"shopping list\n")
    with (
        DeadLetterFile(path, setting=SETTING) as dead_letters,
        pytest.raises(SinkRejectedError, match=f"point {SETTING} at a file of this sink's own"),
    ):
        dead_letters.open()
