"""Soak (issue 16): half an hour of mixed load with a fault every minute; the bridges' memory,
file descriptors and threads must stay flat, and every sink must hold etcd's history exactly.

It is the chaos suite stretched in time rather than in operations, built from its parts
(``tests.chaos``: the cluster of servers and HA bridge pair, the writer, the chaos thread, the
checker against etcd's own history), so that a fault or a check means the same in both:

- **Load**: the chaos writer's mixed operations (puts, deletes, range deletes, multi-key
  transactions, short leases) paced at ``--rate`` per second, plus now and then a value of
  16-128 KiB (``--large`` of the operations' values), for ``--minutes``.
- **Faults**, one at the start of every minute, in turn: kill -9 of the active bridge (a
  standby takes over and a new standby is started), SIGSTOP/SIGCONT of a sink's server, a
  restart of a sink's server that keeps its data, a restart of etcd.
- **Who is watched**: a kill -9 replaces the active instance every four minutes, so no HA
  instance lives long enough to show a slow leak. A third instance, the *survivor*, runs the
  same sinks into destinations of its own (its own election key, never killed) for the whole
  run, through every server pause and restart: its figures decide whether resources stayed
  flat. The HA pair's figures are printed beside it (which pid is active, which standby) and
  the active role's are judged the same way, for what takeovers alone could leak.
- **Flat** means: after ``--warmup`` minutes, the largest figure of the last ``window``
  minutes is within 10% (RSS), 8 (file descriptors) or 2 (threads) of the largest of the
  first ``window`` minutes after warm-up (``window``: 10 minutes, less for a short run).
  Largest, not mean: a sample falls wherever the minute's fault left the process, and a
  reconnect that opens a socket or a thread for a while must not read as growth.
- **Verdict**: the chaos checker's line for every sink of both pipelines (the HA pair's and
  the survivor's), and the flatness of each figure; exit 1 unless all of it holds.

Not under the benchmarks' lock: it runs for half an hour at a moderate rate, by design.

    .venv/bin/python -m bench.soak [--minutes 30] [--rate 25] [--sinks file,redis,kafka,...]
"""

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.common import MachineLoad, Stopwatch, describe_machine, sinks_argument, verdict
from config.keyspace import KeySpace
from tests.chaos.check import SinkFigures, check_streams
from tests.chaos.cluster import Cluster, holds
from tests.chaos.common import PIPELINE, PREFIX, say
from tests.chaos.engine import SENTINEL, Figures, report
from tests.chaos.faults import Action, Chaos, Kind
from tests.chaos.reference import Recorded
from tests.chaos.writer import Operation, Writer, wait_leases_expired
from tests.fixtures.bridge import BridgeProcess
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import wait_for
from tests.sinks import SINKS
from tests.sinks.base import Destination

SURVIVOR = "survivor"
"""The tag of the survivor's destinations, and its name in the table."""
_RSS_GROWTH = 0.10
_FD_GROWTH = 8
_THREAD_GROWTH = 2


class SoakWriter(Writer):
    """The chaos writer, with now and then a value of 16-128 KiB: large enough to take the
    sinks' large-record paths, small enough for every broker's default record limit."""

    def __init__(self, server: EtcdServer, *, seed: int, large: float) -> None:
        super().__init__([server], seed=seed)
        self.large = large

    def _value(self, number: int) -> bytes:
        if self.random.random() < self.large:
            size = self.random.randrange(8, 64) * 1024  # hex doubles it: 16-128 KiB
            return b"XL%d-" % number + self.random.randbytes(size).hex().encode()
        return super()._value(number)


@dataclass(frozen=True)
class Usage:
    """One process's resources at one moment, from ``/proc/<pid>``."""

    rss_mib: float
    fds: int
    threads: int


def usage(bridge: BridgeProcess | None) -> Usage | None:
    """``bridge``'s resources now; None when there is no such process (any more)."""
    if bridge is None or bridge.process is None or not bridge.running:
        return None
    pid = bridge.process.pid
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return None
    return Usage(
        rss_mib=int(status["VmRSS"].split()[0]) / 1024,
        fds=fds,
        threads=int(status["Threads"]),
    )


def fault_cycle(cluster: Cluster) -> Iterator[Action]:
    """The faults in turn, endlessly: kill the active bridge, pause a sink's server, restart a
    sink's server that keeps its data, restart etcd; the sinks' servers take turns. A step
    with no server to act on is left out (the file sink alone: kills and etcd restarts).
    ``at`` is 0: the soak triggers each action by the clock, not by an operation number."""
    paused = list(cluster.servers)
    restarted = [name for name in cluster.restartable() if name != "etcd"]
    turn = 0
    while True:
        yield Action(kind=Kind.KILL, target="bridge", at=0)
        if paused:
            yield Action(kind=Kind.PAUSE, target=paused[turn % len(paused)], at=0)
        if restarted:
            yield Action(kind=Kind.RESTART, target=restarted[turn % len(restarted)], at=0)
        yield Action(kind=Kind.RESTART, target="etcd", at=0)
        turn += 1


@dataclass
class Minute:
    """One row of the table: what happened in the minute and the processes at its end."""

    minute: int
    fault: str
    operations: int
    survivor: Usage | None
    active: tuple[int, Usage | None]
    standby: tuple[int, Usage | None]

    HEADERS: ClassVar[tuple[str, ...]] = (
        "min", "fault", "ops", "survivor RSS MiB", "fds", "thr",
        "active pid", "RSS MiB", "fds", "thr", "standby pid", "RSS MiB", "fds", "thr",
    )  # fmt: skip
    WIDTHS: ClassVar[tuple[int, ...]] = (3, 16, 7, 16, 3, 3, 10, 7, 3, 3, 11, 7, 3, 3)

    def row(self) -> str:
        cells: list[object] = [self.minute, self.fault, self.operations]
        cells += _figures(self.survivor)
        for pid, figures in (self.active, self.standby):
            cells += [pid or "-", *_figures(figures)]
        return _row(cells, self.WIDTHS)


def _figures(figures: Usage | None) -> list[object]:
    if figures is None:
        return ["-", "-", "-"]
    return [f"{figures.rss_mib:.1f}", figures.fds, figures.threads]


def _row(cells: Sequence[object], widths: Sequence[int]) -> str:
    """A Markdown table row, padded so the rows printed minute by minute line up."""
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def flat(series: Sequence[Usage | None], *, warmup: int) -> tuple[bool, str]:
    """Whether ``series`` (one sample a minute) stayed flat (module docstring), and the
    figures that say so."""
    window = min(10, (len(series) - warmup) // 2)
    if window < 1:
        return False, f"too short to judge ({len(series)} minutes, {warmup} of warm-up)"
    first = [s for s in series[warmup : warmup + window] if s is not None]
    last = [s for s in series[-window:] if s is not None]
    if not first or not last:
        return False, "no samples in a window"
    before = Usage(
        max(s.rss_mib for s in first), max(s.fds for s in first), max(s.threads for s in first)
    )
    after = Usage(
        max(s.rss_mib for s in last), max(s.fds for s in last), max(s.threads for s in last)
    )
    ok = (
        after.rss_mib <= before.rss_mib * (1 + _RSS_GROWTH)
        and after.fds <= before.fds + _FD_GROWTH
        and after.threads <= before.threads + _THREAD_GROWTH
    )
    start = warmup + 1
    text = (
        f"max of minutes {start}-{start + window - 1} vs {len(series) - window + 1}-{len(series)}: "
        f"RSS {before.rss_mib:.1f} -> {after.rss_mib:.1f} MiB "
        f"({(after.rss_mib / before.rss_mib - 1) * 100:+.1f}%), "
        f"fds {before.fds} -> {after.fds}, threads {before.threads} -> {after.threads}"
    )
    return ok, text


class Soak:
    """One soak run: the chaos cluster (HA pair), the survivor, the writer and the faults."""

    def __init__(self, workdir: Path, *, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.cluster = Cluster(workdir, sinks=arguments.sinks)
        self.chaos = Chaos(
            self.cluster,
            seed=arguments.seed,
            pause_seconds=(2.0, arguments.max_pause),
            recorded=Recorded(self.cluster.etcd),
        )
        self.survivor_sinks: dict[str, Destination] = {
            name: SINKS[name].fresh(
                self.cluster.servers.get(name), directory=workdir / name, tag=SURVIVOR
            )
            for name in arguments.sinks
        }
        self.survivor: BridgeProcess | None = None
        self.minutes: list[Minute] = []
        self.figures = Figures(seed=arguments.seed)

    def start_survivor(self) -> None:
        """The instance that is never killed: the HA pair's settings, its own destinations
        and its own election key (it is alone, so it leads the whole run)."""
        own = {
            variable: value
            for sink in self.survivor_sinks.values()
            for variable, value in sink.env(**sink.impatient).items()
        }
        self.survivor = self.cluster.factory.start(
            place=None,
            **{
                **self.cluster.settings(),
                **own,
                "BRIDGE_HA__KEY_PREFIX": f"/soak-{SURVIVOR}-leader/",
            },
        )

    def survivor_holds(self, revision: int) -> bool:
        """Whether every destination of the survivor holds ``revision`` (past its snapshot)."""
        # Sinks whose tail may create the destination last: by then the bridge has run.
        ordered = sorted(self.survivor_sinks.values(), key=lambda sink: sink.tail_creates)
        return all(
            holds(sink.tail(pipeline=PIPELINE, prefix=PREFIX), revision=revision)
            for sink in ordered
        )

    def run(self) -> None:
        arguments = self.arguments
        cluster = self.cluster
        say(f"starting etcd and the servers of {', '.join(arguments.sinks)}")
        cluster.start()
        writer = SoakWriter(cluster.etcd, seed=arguments.seed, large=arguments.large)
        writer.populate(300)
        cluster.start_bridge()
        cluster.start_bridge()
        self.start_survivor()
        cluster.wait_held(revision=0, timeout=120, what="the initial snapshot in every sink")
        wait_for(
            lambda: self.survivor_holds(0),
            timeout=120,
            what="the survivor's snapshots",
            interval=0.5,
        )
        say(f"snapshots are in; {arguments.minutes} minutes of load at {arguments.rate}/s")
        print(_row(Minute.HEADERS, Minute.WIDTHS))
        print("|" + "|".join("-" * (w + 2) for w in Minute.WIDTHS) + "|", flush=True)
        faults = fault_cycle(cluster)
        self.chaos.start()
        try:
            self._load(writer, faults=faults)
        finally:
            self.chaos.finish()
            writer.close()
        self._check(writer)

    def _load(self, writer: SoakWriter, *, faults: Iterator[Action]) -> None:
        """The minutes of load, a fault at the start of each, a row at the end of each."""
        interval = 1 / self.arguments.rate
        started = time.monotonic()
        number = 0
        for minute in range(1, self.arguments.minutes + 1):
            fault = next(faults)
            self.chaos.trigger(fault)
            minute_ends = started + 60 * minute
            next_at = time.monotonic()
            while (now := time.monotonic()) < minute_ends and not self.chaos.abort.is_set():
                if now < next_at:
                    time.sleep(min(next_at, minute_ends) - now)  # pacing, not waiting for a state
                    continue
                number += 1
                writer.step(number, abort=self.chaos.abort)
                next_at = max(next_at + interval, time.monotonic() - 1)
            if self.chaos.abort.is_set():
                return
            self.minutes.append(self._sample(minute, fault=fault, operations=writer.operations))
            print(self.minutes[-1].row(), flush=True)

    def _sample(self, minute: int, *, fault: Action, operations: int) -> Minute:
        cluster = self.cluster
        cluster.reap()
        active: BridgeProcess | None = None
        with contextlib.suppress(Exception):  # etcd may be restarting: then nobody is named
            active = cluster.active()
        standby = next((b for b in cluster.bridges if b is not active and b.running), None)
        return Minute(
            minute=minute,
            fault=f"{fault.kind.value} {fault.target}",
            operations=operations,
            survivor=usage(self.survivor),
            active=(_pid(active), usage(active)),
            standby=(_pid(standby), usage(standby)),
        )

    def _check(self, writer: SoakWriter) -> None:
        """Catch up to a sentinel, stop every bridge, and check every sink of both pipelines
        against etcd's history."""
        cluster, figures = self.cluster, self.figures
        figures.operations, figures.retries = writer.operations, writer.retries
        figures.kills, figures.pauses = self.chaos.kills, self.chaos.pauses
        figures.restarts = self.chaos.restarts
        figures.problems += self.chaos.errors
        say(f"{writer.operations} operations; catching up")
        wait_leases_expired(cluster.etcd)
        last = writer.execute(Operation(puts=((SENTINEL, b"end"),)))
        timeout = self.arguments.catch_up_timeout
        try:
            cluster.wait_held(revision=last, timeout=timeout, what=f"revision {last}")
            wait_for(
                lambda: self.survivor_holds(last),
                timeout=timeout,
                what=f"revision {last} in the survivor's sinks",
                interval=0.5,
            )
        except TimeoutError as error:
            figures.problems.append(f"{error}; {cluster.election_state()}")
        figures.problems += cluster.stop_bridges()
        figures.problems += cluster.crashes
        if self.survivor is not None and self.survivor.running:
            code = self.survivor.terminate(timeout=30)
            if code != 0:
                figures.problems.append(f"the survivor exited with {code} on SIGTERM")
        say("bridges stopped; reading etcd's history and every sink back")
        history = self.chaos.recorded.read(until=last)
        figures.events_in_etcd = len(history)
        for suffix, destinations in (("", cluster.sinks), (f"/{SURVIVOR}", self.survivor_sinks)):
            for name, destination in destinations.items():
                sink = SinkFigures(name=name + suffix)
                streams = destination.read_back(
                    pipeline=PIPELINE, keyspace=KeySpace.of([PREFIX]), flaw=sink.flaw
                )
                check_streams(sink, streams=streams, history=history)
                figures.sinks.append(sink)


def _pid(bridge: BridgeProcess | None) -> int:
    return bridge.process.pid if bridge is not None and bridge.process is not None else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=25.0, help="writer operations per second")
    parser.add_argument("--large", type=float, default=0.004, help="share of 16-128 KiB values")
    parser.add_argument("--warmup", type=int, default=5, help="minutes not judged for flatness")
    parser.add_argument("--max-pause", type=float, default=5.0, help="longest SIGSTOP, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catch-up-timeout", type=float, default=300.0)
    parser.add_argument(
        "--sinks",
        type=sinks_argument,
        default=",".join(SINKS),
        help=f"comma-separated, from {', '.join(SINKS)} (default: all)",
    )
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary one)")
    arguments = parser.parse_args(None if argv is None else list(argv))
    clock, load = Stopwatch(), MachineLoad()
    describe_machine("Soak (issue 16)")
    print(
        f"{arguments.minutes} min, {arguments.rate:g} ops/s of the chaos writer's mix "
        f"(+{arguments.large:.1%} values of 16-128 KiB), sinks {','.join(arguments.sinks)}, "
        f"seed {arguments.seed}; a fault at the start of every minute\n"
    )
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="etcd-bridge-soak-"))
    soak = Soak(workdir, arguments=arguments)
    try:
        soak.run()
    except Exception as error:  # noqa: BLE001 - one line, then the logs say the rest
        print(f"soak: the run itself failed: {error!r}; logs kept in {workdir}", flush=True)
        return 2
    finally:
        soak.cluster.stop()
    figures = soak.figures
    figures.seconds = time.monotonic() - clock.started
    report(figures)
    print()
    print(figures.line())
    print(f"nothing lost or duplicated: {verdict(figures.ok)}")
    judged = [
        ("survivor (one process, whole run)", [m.survivor for m in soak.minutes]),
        ("HA active role (a new process after each kill)", [m.active[1] for m in soak.minutes]),
    ]
    steady = True
    for what, series in judged:
        ok, text = flat(series, warmup=arguments.warmup)
        steady = steady and ok
        print(f"{what} flat: {verdict(ok)}; {text}")
    print(load.report())
    print(f"done in {clock}")
    if figures.ok and steady and arguments.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and sink data kept in {workdir}")
    return 0 if figures.ok and steady else 1


if __name__ == "__main__":
    sys.exit(main())
