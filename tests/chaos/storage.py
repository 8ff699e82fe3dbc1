"""Storage faults of a chaos run: the file sink's disk full, Redis out of memory.

A full disk is the file sink's directory mounted as a tmpfs of its own (``tests.fixtures.disk``),
filled by a filler file for a few seconds then given back: the sink's writes fail with ENOSPC,
its pipeline waits in ``sink_down`` and resumes. Redis out of memory is its ``maxmemory`` set to
what it uses now (policy ``noeviction``), then lifted: every write is refused with OOM meanwhile.
Both must leave each sink exactly once, like every other fault.
"""

import time
from pathlib import Path

import redis

from tests.fixtures.disk import fill

DISK_BYTES = 512 * 1024 * 1024
"""The file sink's disk: far more than a run writes, so only the filler fills it."""


def fill_for(directory: Path, *, seconds: float) -> None:
    """Take all of ``directory``'s free space for ``seconds``, then give it back."""
    filler = fill(directory)
    try:
        time.sleep(seconds)
    finally:
        filler.unlink()


def starve_for(client: redis.Redis, *, seconds: float) -> None:
    """Refuse every write that needs memory for ``seconds``, as a full ``noeviction`` Redis
    does, then lift the limit."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used))
    try:
        time.sleep(seconds)
    finally:
        client.config_set("maxmemory", "0")
