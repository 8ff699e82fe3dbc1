"""Who writes a destination: the identity a sink records beside what it holds, so that a
second bridge pointed at the same destination by mistake is refused with a line naming the
first, instead of interleaving with it.

A sink claims its destination where the destination allows (a lock file, an owner key, an
advisory lock) and keeps this instance's ``Owner`` there. A claim that finds another one's
asks its ``Claimant`` what to do (``Claim``):

1. ``TAKE`` it when the holder is this very process (a reopen), or a process that is provably
   gone: one that ran on this machine's kernel, in this pid namespace, and no longer runs
   there (``Owner.running``). A restart after ``kill -9`` on the same machine never waits.
2. ``TAKE_OVER`` from another instance of the same pipeline under HA: instances take turns
   under the election, which already keeps a paused former leader from writing
   (``bridge.election``).
3. ``REFUSE`` a holder that runs here, one of another pipeline, or one that never lapses.
4. ``WAIT`` for a holder of the same pipeline that ran elsewhere (another machine, container
   or pid namespace) and may be gone: only the destination can tell, by letting a claim that
   is not renewed lapse (an owner key's expiry, a session the server ends). The sink reports
   itself unavailable, which the pump retries with backoff, until the claim lapses and is
   taken, or until it has outlived its lapse: then its holder renews it, runs, and is refused.

The process identity behind rule 1 is the kernel's boot id, the pid namespace and the
process's start time (``/proc``, ``Owner.process``): a pid alone is reused by other
processes, and two containers sharing a host name (``--network host``) may both be pid 1.
Where ``/proc`` does not say (not Linux), nothing is provably gone and rule 4 applies.
"""

import enum
import fcntl
import hashlib
import os
import socket
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_PROC = Path("/proc")
GRACE_SECONDS = 1.0
"""Added to a claim's lapse before its holder is taken for running (clocks, round trips)."""


@cache
def _machine() -> str:
    """This kernel boot and pid namespace, as 12 hex digits (short enough for PostgreSQL's
    63-byte session names), or "" where ``/proc`` does not say."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return ""
    digest = hashlib.sha1(f"{boot} {namespace}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:12]


def _started(pid: int) -> str | None:
    """When process ``pid`` of this pid namespace started (clock ticks since boot), or None
    when none runs (a zombie has finished running)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


@dataclass(frozen=True, slots=True)
class Owner:
    """A bridge instance: its pipeline (``BRIDGE_NAME``), host, process id and, where the
    kernel says, which process that is (``machine/start-time``: a digest of the boot id and
    pid namespace, and the start time in clock ticks since boot)."""

    pipeline: str
    host: str
    pid: int
    process: str = ""

    @classmethod
    def this_process(cls, pipeline: str) -> "Owner":
        return cls.of_process(pipeline, pid=os.getpid())

    @classmethod
    def of_process(cls, pipeline: str, *, pid: int) -> "Owner":
        """Process ``pid`` of this machine as an owner of ``pipeline``."""
        started = _started(pid)
        machine = _machine()
        process = f"{machine}/{started}" if machine and started else ""
        return cls(pipeline=pipeline, host=socket.gethostname(), pid=pid, process=process)

    def __str__(self) -> str:
        return f"pipeline {self.pipeline!r}, pid {self.pid} on host {self.host}"

    @property
    def marker(self) -> bytes:
        """One line without its newline, ``pipeline host pid [process]`` (a pipeline name has
        no spaces: it names keys): what an owner key or a session name holds."""
        words = [self.pipeline, self.host, str(self.pid)]
        return " ".join([*words, self.process] if self.process else words).encode()

    def encode(self) -> bytes:
        """``marker`` as a line of a lock file."""
        return self.marker + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> "Owner | None":
        """The owner ``marker`` or ``encode`` wrote, or None for anything else (a foreign
        marker)."""
        try:
            pipeline, host, pid, *process = raw.decode().split()
            if len(process) > 1:
                return None
            return cls(pipeline=pipeline, host=host, pid=int(pid), process="".join(process))
        except (UnicodeDecodeError, ValueError):
            return None

    def running(self) -> bool | None:
        """Whether this owner's process still runs: known only for a process of this
        machine's kernel boot and pid namespace (else None)."""
        machine, _, started = self.process.rpartition("/")
        if not machine or machine != _machine():
            return None
        return _started(self.pid) == started

    def may_take_over_from(self, other: "Owner | None", *, ha: bool) -> bool:
        """Whether this instance may write a destination ``other`` still claims: only with
        HA, and only from an instance of its own pipeline."""
        return ha and other is not None and other.pipeline == self.pipeline


class Claim(enum.Enum):
    """What a sink does about a destination another claim holds (the module docstring's
    rules)."""

    TAKE = "take"
    TAKE_OVER = "take_over"
    WAIT = "wait"
    REFUSE = "refuse"


class Claimant:
    """One sink's side of every contest for its destination: who it is, whether HA fences
    its pipeline, and since when it has waited for a claim that may be stale. One per sink
    object, kept across its reopenings (the pump retries ``WAIT`` by reopening)."""

    def __init__(self, owner: Owner, *, ha: bool) -> None:
        self.owner = owner
        self.ha = ha
        self._waiting: tuple[object, float] | None = None
        """The holder waited for, and the monotonic time its claim must have lapsed by."""

    def judge(self, holder: Owner | None, *, lapses_in: float | None) -> Claim:
        """What to do about ``holder``'s claim (None: one that names no bridge).
        ``lapses_in``: seconds until that claim lapses unless renewed (None: never)."""
        if holder is None:
            return Claim.REFUSE
        running = None if holder == self.owner else holder.running()
        if holder == self.owner or running is False:
            self._waiting = None
            return Claim.TAKE
        if self.ha and holder.pipeline == self.owner.pipeline:
            self._waiting = None
            return Claim.TAKE_OVER
        if running or holder.pipeline != self.owner.pipeline or lapses_in is None:
            return Claim.REFUSE
        return self.wait_for(holder, lapses_in=lapses_in)

    def wait_for(self, holder: object, *, lapses_in: float) -> Claim:
        """Rule 4 alone: ``WAIT`` until ``holder``'s claim (an ``Owner``, or whatever else
        tells claims apart), first seen now or earlier, must have lapsed (``lapses_in``
        seconds after it was first seen), then ``REFUSE``."""
        now = time.monotonic()
        if self._waiting is None or self._waiting[0] != holder:
            self._waiting = (holder, now + lapses_in + GRACE_SECONDS)
        return Claim.WAIT if now < self._waiting[1] else Claim.REFUSE

    def remaining(self) -> float:
        """Seconds left until the claim waited for must have lapsed (0 when none)."""
        if self._waiting is None:
            return 0.0
        return max(0.0, self._waiting[1] - time.monotonic())


def lock_file(path: Path, owner: Owner) -> tuple[int | None, Owner | None]:
    """Lock ``path`` (created if missing) for this process and write ``owner`` in it: the
    locked descriptor, to keep open while writing (closing it, or the process dying, unlocks
    it). When another process holds it: no descriptor, and the owner it wrote (None if
    unreadable). A lock the holder already wrote this owner in is not rewritten."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    holder = _lock(descriptor, fcntl.LOCK_EX)
    if holder is not None:
        os.close(descriptor)
        return None, holder.owner
    identity = owner.encode()
    try:
        if os.pread(descriptor, 4096, 0) != identity:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, identity, 0)
    except OSError:
        os.close(descriptor)
        raise
    return descriptor, None


@dataclass(frozen=True, slots=True)
class Holder:
    """A live process holding a lock ``lock_file`` took, and the owner it wrote there (None
    if unreadable)."""

    owner: Owner | None


def lock_holder(path: Path) -> Holder | None:
    """Who holds the lock ``lock_file`` takes on ``path``, if anyone (a missing file: no
    one), without writing anything: for ``etcd-bridge check`` beside a running bridge. It
    takes a shared lock and drops it at once, so a bridge starting in that instant may be
    refused as if another held it; it says so, and a restart takes it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _lock(descriptor, fcntl.LOCK_SH)
    finally:
        os.close(descriptor)  # drops the shared lock, if taken


def _lock(descriptor: int, mode: int) -> Holder | None:
    """Lock ``descriptor`` in ``mode`` without waiting; the holder when another process
    holds it (a lock dies with its process, so that one runs)."""
    try:
        fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return Holder(Owner.decode(os.pread(descriptor, 4096, 0)))
    return None
