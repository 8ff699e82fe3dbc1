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
from tests.chaos.reference import Recorded
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
    SINK_DOWN = "sink_down"


PARTITIONS = ("member", "leader", "link", "flap")
"""The targets of partitions, taken in this order (see the module docstring)."""
PARTITION_SECONDS = (3.0, 12.0)
"""How long a partition lasts: some shorter than the bridges' stall timeout (6 s) and etcd's
no-leader cancellation (about 4 s), which they must ride out, most longer."""
FLAPS, FLAP_DOWN, FLAP_UP = 3, 2.5, 0.5
"""A flapping link: cut this many times for this long, healed for that long in between."""
OUTAGE_AT = (0.15, 0.35)
"""Where in the run a sink's outage begins, as shares of the operations: early, so that the
writer goes on for the whole outage and the chaos planned after it still follows it."""
OUTAGE_COMPACTIONS = 3
"""Compactions of etcd's history during a sink's outage, evenly spaced inside it."""
CATCH_UP_SECONDS = 180.0
"""How long every sink may take to get past the last compaction once the outage ends."""


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
    sink_down: str | None = None,
) -> list[Action]:
    """``kills`` kills, ``pauses`` pauses of each of ``servers``, one restart of each of
    ``restartable``, ``partitions`` partitions, ``disk_fulls`` full disks under the file sink
    and ``ooms`` times Redis out of memory, shuffled and spread over the operations (one per
    slot, at a random point of it); and the outage of the sink ``sink_down`` names, early in
    the run (``OUTAGE_AT``, drawn apart, so that the rest of the plan is the same without it)."""
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
    actions = [
        Action(
            kind=kind,
            target=target,
            at=max(1, int(operations * (0.03 + 0.92 * (slot + chooser.random()) / slots))),
        )
        for slot, (kind, target) in enumerate(kinds)
    ]
    if sink_down is not None:
        outage = random.Random(f"outage-{seed}").uniform(*OUTAGE_AT)  # noqa: S311 - as above
        actions.append(Action(Kind.SINK_DOWN, sink_down, at=max(1, int(operations * outage))))
    return actions


class Chaos:
    """Performs actions one at a time in its own thread; counts what it did.

    An action that fails is recorded in ``errors`` (a problem of the run) and sets ``abort``,
    which stops the writer: writing on after chaos that did not go as planned tests nothing.
    While a sink's outage lasts, ``outage`` is set: the writer writes on rather than wait
    for it to hand over the next action (etcd must take writes all along).
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        seed: int,
        pause_seconds: tuple[float, float],
        recorded: Recorded,
        outage_seconds: float = 0.0,
    ) -> None:
        """``recorded``: etcd's history as read so far, which the compactions of a sink's
        outage (``outage_seconds`` long) read on before they drop it."""
        self.cluster = cluster
        self.random = random.Random(f"chaos-{seed}")  # noqa: S311 - reproducible chaos
        self.pause_seconds = pause_seconds
        self.recorded = recorded
        self.outage_seconds = outage_seconds
        self.compactions = 0
        self.outage = threading.Event()
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
        if action.kind is Kind.SINK_DOWN:
            self.outage.set()
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
                self.outage.clear()
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
        elif action.kind is Kind.SINK_DOWN:
            self._sink_down(action.target)
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

    def _sink_down(self, sink: str) -> None:
        """Stop ``sink``'s server for ``outage_seconds`` while the writer goes on, compacting
        etcd's history ``OUTAGE_COMPACTIONS`` times meanwhile: past the revision etcd had when
        the server stopped, so the sink needs history etcd no longer has. Then start it again
        and wait until every sink is past the last compaction before the next action: a
        takeover before that would find a sink's place compacted (each instance has a log of
        its own, docs/journal.md), which is a documented limit, not what this tests."""
        recorded = self.recorded
        self.cluster.wait_held(  # the sink's place is in the active instance's log
            revision=recorded.latest_write(), timeout=CATCH_UP_SECONDS, what="the outage"
        )
        server = self.cluster.servers[sink]
        started = time.monotonic()
        server.stop()
        stopped_at = recorded.latest_write()
        try:
            for number in range(1, OUTAGE_COMPACTIONS + 1):
                _sleep_until(started + self.outage_seconds * number / (OUTAGE_COMPACTIONS + 1))
                revision = recorded.compact()
                if revision is not None:
                    self.compactions += 1
                    say(f"compaction at revision {revision}: {sink} down since {stopped_at}")
            _sleep_until(started + self.outage_seconds)
        finally:
            server.start()
        down = time.monotonic() - started
        if recorded.compacted <= stopped_at:
            raise RuntimeError(
                f"etcd took no write during {sink}'s outage (still at {stopped_at}): "
                "nothing was compacted that the sink needs; give the run more --operations"
            )
        self.cluster.wait_held(
            revision=recorded.compacted, timeout=CATCH_UP_SECONDS, what="the outage's end"
        )
        say(
            f"sink down: {sink} for {down:.1f}s, etcd compacted up to {recorded.compacted}; "
            f"every sink past it {time.monotonic() - started - down:.1f}s later"
        )

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


def _sleep_until(moment: float) -> None:
    """Let the fault in hand last until ``moment`` (``time.monotonic``)."""
    time.sleep(max(0.0, moment - time.monotonic()))
