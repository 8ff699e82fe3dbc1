"""One chaos run from start to figures: servers, snapshot, writes with chaos, catch-up, check.

``run`` owns every process it starts and stops them all before it returns, whatever
happened. Faults of the bridges are counted in the returned ``Figures``, never raised: a run
that finds one still reads every sink back, so that its report shows everything it found.
Only a run that cannot be carried out at all (a server that does not start, etcd's history
unreadable) raises.
"""

import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.keyspace import KeySpace
from config.refusal import RefusalPolicy
from tests.chaos.check import SinkFigures, check_streams, refused
from tests.chaos.cluster import Cluster
from tests.chaos.common import PIPELINE, PREFIX, say
from tests.chaos.faults import Action, Chaos, plan_chaos
from tests.chaos.reference import Recorded
from tests.chaos.writer import Operation, Writer, oversized_at, wait_leases_expired
from tests.fixtures.bridge import read_events
from tests.sinks import SINKS

SENTINEL = PREFIX + b"~end"
"""Put after everything else: a sink that holds it holds every earlier change."""


@dataclass
class Figures:
    """What one run did and found: ``line`` is what it prints, ``ok`` its verdict."""

    seed: int
    operations: int = 0
    kills: int = 0
    pauses: int = 0
    restarts: int = 0
    partitions: int = 0
    storage_faults: int = 0
    """Full disks under the file sink and Redis out of memory, together."""
    failovers: int = 0
    """Times a bridge's pipeline connected to another etcd member than before."""
    refused: int = 0
    """Events of etcd's history that the Kafka and NATS sinks refuse (``--refusals``), each
    checked delivered without its values or diverted to the dead-letter file."""
    retries: int = 0
    events_in_etcd: int = 0
    seconds: float = 0.0
    sinks: list[SinkFigures] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    journal: bool = False
    """Every instance ran with the local log on."""
    sink_down: str = ""
    """The sink whose server was down for a while (``--sink-down``), and for how long."""
    compactions: int = 0
    """Compactions of etcd's history, all inside the sink's outage (``--sink-down``)."""

    def total(self, name: str) -> int:
        """One count (``lost``, ``duplicated``...) summed over the sinks."""
        return sum(int(getattr(sink, name)) for sink in self.sinks)

    @property
    def ok(self) -> bool:
        """Every sink checked, nothing wrong in any, and the chaos went as planned. With the
        local log a resync is wrong too: the log holds what etcd compacts (docs/journal.md)."""
        counts = ["lost", "duplicated", "out_of_order", "unexpected"]
        if self.journal:
            counts.append("resyncs")
        return bool(self.sinks) and not self.problems and not any(self.total(c) for c in counts)

    def line(self) -> str:
        def figure(name: str) -> str:
            value = self.total(name)
            if not value:
                return f"{name}={value}"
            parts = ", ".join(f"{s.name} {getattr(s, name)}" for s in self.sinks)
            return f"{name}={value} ({parts})"

        checked = " ".join(f"{sink.name}={sink.events}" for sink in self.sinks)
        outage = f" sink_down={self.sink_down}" if self.sink_down else ""
        return (
            f"chaos seed={self.seed}{' journal=on' if self.journal else ''}{outage}: "
            f"operations={self.operations} kills={self.kills} "
            f"pauses={self.pauses} restarts={self.restarts} partitions={self.partitions} "
            f"storage_faults={self.storage_faults} "
            f"failovers={self.failovers} refused={self.refused} "
            f"compactions={self.compactions} etcd_events={self.events_in_etcd} "
            f"| checked {checked or 'nothing'} "
            f"| {figure('lost')} {figure('duplicated')} {figure('out_of_order')} "
            f"{figure('unexpected')} {figure('resyncs')} problems={len(self.problems)} "
            f"| {self.seconds:.0f}s"
        )


def run(
    *,
    operations: int,
    kills: int,
    seed: int,
    workdir: Path,
    sinks: Sequence[str] = tuple(SINKS),
    pauses: int = 2,
    pause_seconds: tuple[float, float] = (1.0, 4.0),
    initial_keys: int = 300,
    catch_up_timeout: float = 180.0,
    members: int = 1,
    partitions: int = 0,
    disk_fulls: int = 0,
    ooms: int = 0,
    journal: bool = False,
    refusals: int = 0,
    sink_down: tuple[str, float] | None = None,
) -> Figures:
    """One chaos run of ``sinks`` in ``workdir`` against ``members`` etcd members (in network
    namespaces when more than one, which ``partitions`` needs), with ``refusals`` operations
    putting a value the Kafka and NATS sinks refuse for good, and ``sink_down`` (a sink and
    seconds) that sink's server down that long while etcd compacts; every process it starts,
    and every namespace, is removed before it returns."""
    started = time.monotonic()
    figures = Figures(seed=seed, journal=journal)
    if sink_down is not None:
        figures.sink_down = f"{sink_down[0]}/{sink_down[1]:.0f}s"
    cluster = Cluster(
        workdir,
        sinks=sinks,
        members=members,
        small_disk=disk_fulls > 0,
        journal=journal,
        refusals=refusals > 0,
    )
    try:
        say(f"starting etcd and the servers of {', '.join(sinks)} in {workdir}")
        cluster.start()
        recorded = Recorded(cluster.etcd)
        chaos = Chaos(
            cluster,
            seed=seed,
            pause_seconds=pause_seconds,
            recorded=recorded,
            outage_seconds=0.0 if sink_down is None else sink_down[1],
        )
        oversized = oversized_at(operations=operations, count=refusals, seed=seed)
        writer = Writer(cluster.members, seed=seed, oversized=oversized)
        writer.populate(initial_keys)
        cluster.start_bridge()
        cluster.start_bridge()
        cluster.wait_held(revision=0, timeout=120, what="the initial snapshot in every sink")
        say("snapshots are in every sink; writing, with chaos")
        schedule = plan_chaos(
            operations=operations,
            kills=kills,
            pauses=pauses,
            seed=seed,
            servers=["etcd", *cluster.servers],
            restartable=cluster.restartable(),
            partitions=partitions,
            disk_fulls=disk_fulls,
            ooms=ooms,
            sink_down=None if sink_down is None else sink_down[0],
        )
        chaos.start()
        try:
            _write_with_chaos(writer, operations=operations, schedule=schedule, chaos=chaos)
        finally:
            chaos.finish()
        figures.operations, figures.retries = writer.operations, writer.retries
        figures.kills, figures.pauses, figures.restarts = chaos.kills, chaos.pauses, chaos.restarts
        figures.partitions = chaos.partitions
        figures.storage_faults, figures.compactions = chaos.storage_faults, chaos.compactions
        figures.problems += chaos.errors
        say(f"{writer.operations} operations ({writer.retries} retried attempts); catching up")
        wait_leases_expired(cluster.etcd)
        last = writer.execute(Operation(puts=((SENTINEL, b"end"),)))
        try:
            cluster.wait_held(revision=last, timeout=catch_up_timeout, what=f"revision {last}")
        except TimeoutError as error:
            figures.problems.append(f"{error}; {cluster.election_state()}")
        figures.problems += cluster.stop_bridges()
        figures.failovers = cluster.failovers()
        figures.problems += cluster.crashes
        say("bridges stopped; reading etcd's history and every sink back")
        history = recorded.read(until=last)
        figures.events_in_etcd = len(history)
        figures.refused = sum(refused(event) for event in history)
        for name, destination in cluster.sinks.items():
            sink = SinkFigures(name=name)
            streams = destination.read_back(
                pipeline=PIPELINE, keyspace=KeySpace.of([PREFIX]), flaw=sink.flaw
            )
            policy = cluster.policies.get(name, RefusalPolicy.STOP)
            diverted = (
                read_events(cluster.dead_letters(name))
                if policy is RefusalPolicy.DEAD_LETTER and cluster.dead_letters(name).exists()
                else []
            )
            check_streams(sink, streams=streams, history=history, policy=policy, diverted=diverted)
            figures.sinks.append(sink)
    finally:
        cluster.stop()
        figures.seconds = time.monotonic() - started
    return figures


def _write_with_chaos(
    writer: Writer, *, operations: int, schedule: Sequence[Action], chaos: Chaos
) -> None:
    """``operations`` operations, each scheduled action triggered when the writer reaches
    its number, or after a sink's outage that lasts past it (any left over, after the last
    operation); stops early once the chaos aborted."""
    pending = deque(sorted(schedule, key=lambda action: action.at))
    try:
        for number in range(1, operations + 1):
            while pending and pending[0].at <= number and not chaos.outage.is_set():
                chaos.trigger(pending.popleft())
            if chaos.abort.is_set():
                return
            writer.step(number, abort=chaos.abort)
        while pending:
            chaos.trigger(pending.popleft())
    finally:
        writer.close()


def report(figures: Figures) -> None:
    """Details of anything wrong, on stderr."""
    for problem in figures.problems:
        say(f"problem: {problem}")
    for sink in figures.sinks:
        if sink.examples:
            say(f"{sink.name} (snapshot at {sink.snapshot_revision}):")
            for example in sink.examples:
                print(f"    {example}", file=sys.stderr)
