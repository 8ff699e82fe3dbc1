"""The chaos of a run: which actions, when, and the thread that performs them.

The plan is drawn from the seed before the run starts: ``kills`` SIGKILLs of the active
bridge, ``pauses`` SIGSTOP/SIGCONT of each server and one restart of etcd and of each sink
server that keeps its data (Redis), each at an operation number. The writer triggers an
action when it reaches that number and keeps writing while the action runs in the ``Chaos``
thread; the next action waits for the previous one to end, so two never overlap (see the
package docstring for why that matters).

With a 3-member etcd (``Cluster(members=3)``), ``partitions`` partition/heal faults join them,
of these kinds in turn: the member the active bridge watches cut off from the other two (it
loses quorum), the leader cut off from the others, this host (the bridges and the writer) cut
from the member the active bridge watches, and that link flapping. After the heal the chaos
waits for an active bridge, as after a pause of etcd.
"""

import enum
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.chaos.cluster import Cluster
from tests.chaos.common import say
from tests.fixtures.bridge import BridgeProcess
from tests.fixtures.processes import wait_for


class Kind(enum.Enum):
    """What an action does to its target: SIGKILL, SIGSTOP then SIGCONT, or stop and start."""

    KILL = "kill"
    PAUSE = "pause"
    RESTART = "restart"
    PARTITION = "partition"
    DISK_FULL = "disk_full"
    OOM = "oom"


PARTITIONS = ("member", "leader", "link", "flap")
"""The targets of partitions, taken in this order (see the module docstring)."""
PARTITION_SECONDS = (3.0, 12.0)
"""How long a partition lasts: some shorter than the bridges' stall timeout (6 s) and etcd's
no-leader cancellation (about 4 s), which they must ride out, most longer."""
FLAPS, FLAP_DOWN, FLAP_UP = 3, 2.5, 0.5
"""A flapping link: cut this many times for this long, healed for that long in between."""


@dataclass(frozen=True)
class Action:
    """One planned act of chaos."""

    kind: Kind
    target: str
    """``bridge`` (the active one), ``etcd``, a sink whose server it acts on, or for a
    partition one of ``PARTITIONS``."""
    at: int
    """The operation number that triggers it."""


def plan_chaos(
    *,
    operations: int,
    kills: int,
    pauses: int,
    seed: int,
    servers: Sequence[str],
    restartable: Sequence[str],
    partitions: int = 0,
    disk_fulls: int = 0,
    ooms: int = 0,
) -> list[Action]:
    """``kills`` kills, ``pauses`` pauses of each of ``servers``, one restart of each of
    ``restartable``, ``partitions`` partitions, ``disk_fulls`` full disks under the file sink
    and ``ooms`` times Redis out of memory, shuffled and spread over the operations (one per
    slot, at a random point of it)."""
    chooser = random.Random(f"schedule-{seed}")  # noqa: S311 - reproducible chaos
    kinds = [(Kind.KILL, "bridge")] * kills
    kinds += [(Kind.PAUSE, server) for server in servers] * pauses
    kinds += [(Kind.RESTART, server) for server in restartable]
    kinds += [
        (Kind.PARTITION, PARTITIONS[number % len(PARTITIONS)]) for number in range(partitions)
    ]
    kinds += [(Kind.DISK_FULL, "file")] * disk_fulls
    kinds += [(Kind.OOM, "redis")] * ooms
    chooser.shuffle(kinds)
    slots = len(kinds)
    return [
        Action(
            kind=kind,
            target=target,
            at=max(1, int(operations * (0.03 + 0.92 * (slot + chooser.random()) / slots))),
        )
        for slot, (kind, target) in enumerate(kinds)
    ]


class Chaos:
    """Performs actions one at a time in its own thread; counts what it did.

    An action that fails is recorded in ``errors`` (a problem of the run) and sets ``abort``,
    which stops the writer: writing on after chaos that did not go as planned tests nothing.
    """

    def __init__(self, cluster: Cluster, *, seed: int, pause_seconds: tuple[float, float]) -> None:
        self.cluster = cluster
        self.random = random.Random(f"chaos-{seed}")  # noqa: S311 - reproducible chaos
        self.pause_seconds = pause_seconds
        self.kills = 0
        self.pauses = 0
        self.restarts = 0
        self.partitions = 0
        self.storage_faults = 0
        self.errors: list[str] = []
        self.abort = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._actions: queue.Queue[Action | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self, action: Action) -> None:
        """Hand ``action`` over once the previous one is done (unless the run is aborted)."""
        while not self._idle.wait(0.2):
            if self.abort.is_set():
                return
        if self.abort.is_set():
            return
        self._idle.clear()
        self._actions.put(action)

    def finish(self) -> None:
        """Wait for the action in hand, then end the thread."""
        self._actions.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (action := self._actions.get()) is not None:
            try:
                self.cluster.reap()
                self._perform(action)
            except Exception as error:  # noqa: BLE001 - reported in the figures, run aborted
                state = self.cluster.election_state()
                self.errors.append(f"{action.kind.value} {action.target}: {error}; {state}")
                say(f"chaos failed: {action.kind.value} {action.target}: {error}")
                self.abort.set()
            finally:
                self._idle.set()

    def _wait_active(self, *, other_than: BridgeProcess | None = None) -> BridgeProcess:
        def elected() -> BridgeProcess | None:
            bridge = self.cluster.active()
            return bridge if bridge is not None and bridge is not other_than else None

        return wait_for(elected, timeout=60, what="an active bridge", interval=0.1)

    def _perform(self, action: Action) -> None:
        if action.kind is Kind.KILL:
            time.sleep(self.random.uniform(0, 0.4))  # a random moment of the stream
            leader = self._wait_active()
            assert leader.process is not None
            pid = leader.process.pid
            self.cluster.kill(leader)
            self.kills += 1
            successor = self._wait_active(other_than=leader)
            assert successor.process is not None
            say(
                f"kill {self.kills}: active bridge pid {pid}; pid {successor.process.pid} took over"
            )
        elif action.kind is Kind.PAUSE:
            seconds = self.random.uniform(*self.pause_seconds)
            process = self.cluster.process(action.target)
            process.pause()
            self.pauses += 1
            try:
                time.sleep(seconds)
            finally:
                process.resume()
            say(f"pause {self.pauses}: {action.target} stopped for {seconds:.1f}s")
            if action.target == "etcd":
                self._wait_active()
        elif action.kind in (Kind.DISK_FULL, Kind.OOM):
            seconds = self.random.uniform(*self.pause_seconds)
            self.cluster.storage_fault(action.kind.value, seconds=seconds)
            self.storage_faults += 1
            say(f"{action.kind.value} {self.storage_faults}: {action.target} for {seconds:.1f}s")
        elif action.kind is Kind.PARTITION:
            what = self._partition(action.target)
            self.partitions += 1
            say(f"partition {self.partitions}: {what}; healed")
            self._wait_active()
        else:
            started = time.monotonic()
            self.cluster.restart(action.target)
            self.restarts += 1
            say(f"restart {self.restarts}: {action.target} in {time.monotonic() - started:.1f}s")
            if action.target == "etcd":
                self._wait_active()

    def _partition(self, target: str) -> str:
        """Cut what ``target`` names, wait, heal; say what it was."""
        network = self.cluster.network
        assert network is not None, "partitions need the cluster in namespaces (--cluster 3)"
        members = self.cluster.members
        member = self.cluster.watched(self._wait_active())
        if target == "flap":
            host = self.cluster.host_of(member)
            for _flap in network.flap(network.local, host, times=FLAPS, down=FLAP_DOWN, up=FLAP_UP):
                pass
            return f"link to {member.name} flapped {FLAPS} times"
        seconds = self.random.uniform(*PARTITION_SECONDS)
        if target == "link":
            network.cut(network.local, self.cluster.host_of(member))
            what = f"this host cut from {member.name}"
        else:
            if target == "leader":
                member = self.cluster.etcd_cluster.leader()
            network.isolate(
                self.cluster.host_of(member),
                from_hosts=[self.cluster.host_of(other) for other in members],
            )
            what = f"{target} {member.name} cut from the other members"
        try:
            time.sleep(seconds)
        finally:
            network.heal_all()
        return f"{what} for {seconds:.1f}s"
