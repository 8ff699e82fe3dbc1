"""Counting the instructions a bridge executes: valgrind's callgrind as a ``Place`` to start it.

Why instructions: on this kind of machine, with etcd, the bridge and a sink's server sharing 2
cores, one timed replay swings by a quarter and the machine's speed drifts through a day, so
the CPU-seconds of two runs compare only loosely. Callgrind counts the instructions the
process executes (every thread), which for the same program, inputs and batching is the same
number run after run, whatever else the machine does. It is not time: a cache miss costs
nothing here. The process runs 30-60 times slower, so it is always behind etcd and its
batches are full: the count is the work per event of a bridge that keeps up by batching.
"""

from dataclasses import dataclass
from pathlib import Path

VALGRIND = "valgrind"


@dataclass(frozen=True)
class Callgrind:
    """Where a process runs under callgrind, which writes its counts to ``out_file`` when the
    process exits (``tests.fixtures.processes.Place``: loopback, so the bridge reaches the
    benchmark's servers as it does without it)."""

    out_file: Path
    address: str = "127.0.0.1"

    @property
    def launcher(self) -> list[str]:
        # No per-line or per-instruction data: only the totals are read, and the file stays
        # small enough to write at exit within the bridge's stop timeout. Fair scheduling:
        # with valgrind's default lock, librdkafka's threads starved the Kafka sink's own, and
        # a replay of 50,000 events into Kafka had not ended after 20 minutes.
        return [
            VALGRIND,
            "--tool=callgrind",
            f"--callgrind-out-file={self.out_file}",
            "--dump-line=no",
            "--dump-instr=no",
            "--fair-sched=yes",
        ]

    def instructions(self) -> int:
        """The instructions executed, all threads, as the out file's ``totals`` (or, from
        older valgrinds, ``summary``) line gives them."""
        for line in self.out_file.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("totals", "summary"):
                return int(value.split()[0])
        raise RuntimeError(f"{self.out_file} holds no totals: did the process exit cleanly?")
