"""Who writes a destination: the identity a sink records beside what it holds, so that a
second bridge pointed at the same destination by mistake is refused with a line naming the
first, instead of interleaving with it.

A sink claims its destination where the destination allows (a lock file, an owner key, an
advisory lock) and keeps this instance's ``Owner`` there; a claim that finds another one's
asks ``yields_to``. With HA, instances of one pipeline take turns under the election, which
already keeps a paused former leader from writing (``bridge.election``): one of them may take
over from another whose claim is still held (paused, or not yet expired).
"""

import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Owner:
    """A bridge instance: its pipeline (``BRIDGE_NAME``), host and process id."""

    pipeline: str
    host: str
    pid: int

    @classmethod
    def this_process(cls, pipeline: str) -> "Owner":
        return cls(pipeline=pipeline, host=socket.gethostname(), pid=os.getpid())

    def __str__(self) -> str:
        return f"pipeline {self.pipeline!r}, pid {self.pid} on host {self.host}"

    def encode(self) -> bytes:
        """One line, ``pipeline host pid`` (a pipeline name has no spaces: it names keys)."""
        return f"{self.pipeline} {self.host} {self.pid}\n".encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Owner | None":
        """The owner ``encode`` wrote, or None for anything else (an old or foreign marker)."""
        try:
            pipeline, host, pid = raw.decode().split()
            return cls(pipeline=pipeline, host=host, pid=int(pid))
        except (UnicodeDecodeError, ValueError):
            return None

    def may_take_over_from(self, other: "Owner | None", *, ha: bool) -> bool:
        """Whether this instance may write a destination ``other`` still claims: only with
        HA, and only from an instance of its own pipeline."""
        return ha and other is not None and other.pipeline == self.pipeline


def lock_file(path: Path, owner: Owner) -> tuple[int | None, Owner | None]:
    """Lock ``path`` (created if missing) for this process and write ``owner`` in it: the
    locked descriptor, to keep open while writing (closing it, or the process dying, unlocks
    it). When another process holds it: no descriptor, and the owner it wrote (None if
    unreadable). A lock the holder already wrote this owner in is not rewritten."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Owner.decode(os.pread(descriptor, 4096, 0))
        os.close(descriptor)
        return None, holder
    identity = owner.encode()
    try:
        if os.pread(descriptor, 4096, 0) != identity:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, identity, 0)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor, None
