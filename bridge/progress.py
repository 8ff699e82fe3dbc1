"""How far a snapshot has got: logged every few seconds and kept for ``/positions`` and the
metrics, so that a million-key first start is not a silent minute.

The total comes from a count-only range at the snapshot's revision
(``bridge.snapshot.count_snapshot``), the keys read from the snapshot's cursor; both count
the keys the key filters leave out, so the two agree.
"""

import logging
import time
from collections.abc import Callable

from bridge.health import PipelineStats

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 5.0


class SnapshotProgress:
    """One snapshot's progress, from where it starts (or resumes) to its end."""

    def __init__(
        self,
        stats: PipelineStats,
        *,
        expected: int,
        read: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``read``: keys read before this start (a snapshot resumed after its last key);
        ``clock``: the time source, for the rate."""
        self._stats = stats
        self._clock = clock
        self._started_at = self._logged_at = clock()
        self._read_at_start = read
        stats.snapshot_keys_expected = expected
        stats.snapshot_keys_read = read

    def advance_to(self, read: int) -> None:
        """``read`` keys are read by now; logs a progress line every ``LOG_EVERY_SECONDS``."""
        self._stats.snapshot_keys_read = read
        now = self._clock()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_at = now
            log.info("snapshot progress", extra=self.figures(now))

    def figures(self, now: float) -> dict[str, object]:
        """Keys read, of how many, the rate since this start, and the seconds left at it."""
        stats = self._stats
        read, expected = stats.snapshot_keys_read, stats.snapshot_keys_expected
        elapsed = now - self._started_at
        rate = (read - self._read_at_start) / elapsed if elapsed > 0 else 0.0
        left = max(0, expected - read)
        return {
            "sink": stats.sink,
            "keys": read,
            "of": expected,
            "keys_per_second": round(rate),
            "seconds_left": round(left / rate, 1) if rate > 0 else None,
        }
