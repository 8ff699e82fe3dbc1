"""A snapshot's progress line: keys read of the count, the rate since its start, the time left."""

import logging

import pytest

from bridge.health import PipelineStats
from bridge.progress import LOG_EVERY_SECONDS, SnapshotProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_logged_every_few_seconds_with_rate_and_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    stats = PipelineStats("progress")
    progress = SnapshotProgress(stats, expected=1000, read=200, clock=clock)
    caplog.set_level(logging.INFO, logger="bridge.progress")
    clock.now += 1
    progress.advance_to(300)
    assert not caplog.records, "not logged before the interval"
    clock.now += LOG_EVERY_SECONDS - 1
    progress.advance_to(600)
    (record,) = caplog.records
    assert record.getMessage() == "snapshot progress"
    assert (record.keys, record.of) == (600, 1000)  # type: ignore[attr-defined]
    # 400 keys since the start (200 were read before it) in 5 s: 80/s, 400 keys left: 5 s.
    assert record.keys_per_second == 80  # type: ignore[attr-defined]
    assert record.seconds_left == 5.0  # type: ignore[attr-defined]
    assert (stats.snapshot_keys_read, stats.snapshot_keys_expected) == (600, 1000)


def test_no_time_left_is_guessed_before_any_key() -> None:
    clock = Clock()
    progress = SnapshotProgress(PipelineStats("idle"), expected=10, read=0, clock=clock)
    clock.now += 1
    assert progress.figures(clock.now)["seconds_left"] is None
