"""Issue 14, compaction: what a sink gets when it falls further behind than etcd's history.

etcd keeps history only back to its last compaction (Kubernetes compacts every 5 minutes).
Each pipeline of today's bridge reads that history itself, through its own watch, so a sink
can only be as far behind as the compaction window allows: a sink that was down longer comes
back to a resync snapshot (its consumers lose every change in between), and a snapshot is
read at one pinned revision at the sink's pace, so one whose delivery outlasts the window is
started again and again (issue 14). Two measurements, each beside its baseline in the same
run. The durations are options; the defaults are the issue's (compaction every 60 s, a sink
down for 5 minutes, a snapshot taking 10 windows to deliver: 40 to 50 minutes in all), and
``--compact-every 2 --down 20`` makes a run of a few minutes.

A **compactor** (a thread of the benchmark) compacts etcd to its current revision every
``--compact-every`` s: etcd refuses the older history at once and removes it in the
background (not ``physical``: waiting for the removal would let a slow one, after a large
load, stretch the period). Just before, it puts one key outside every prefix of the run, so
that each compaction passes the revision a snapshot pinned, as a busy cluster's would, even
when nothing else writes.

**A, a sink down under load.** A writer process (``bench.agents paced``) puts ``--rate``
puts/s over ``--write-keys`` keys for ``--warmup`` + ``--down`` + ``--after`` s, recording
the revision of every put etcd acknowledged. One bridge process streams the prefix into
``--sinks`` (file, kafka, redis: a pipeline each), with the compactor running. After the
warm-up, ``--down-sink`` (redis) is unavailable for ``--down`` s, through the benchmark's own
instance of its server (its own port and data directory): a server that keeps its data
across a restart (Redis, with AOF and fsync always) is stopped and started again; any other
(Tansu keeps Kafka's records in memory only) is paused (SIGSTOP) and resumed; the file sink
has no server to take down. Then, per sink:

- changes written (the writer's acknowledged puts) and changes the sink holds (read back
  from the sink after the run: the distinct revisions of its create/update/delete events);
- **missing**: every put whose revision the sink never got as a change (one overwritten
  later still counts: its consumer never saw it); **repeated**: changes held twice;
- **resyncs**: ``snapshot_begin`` markers after the first, with their reasons (``compacted``);
- **catch-up** (of ``--down-sink``, in both rounds): from the server being back (the same
  moment in the baseline) until the sink holds the revision etcd was at then (and is not
  inside a snapshot); compactions are counted while the writer runs.

Baseline in the same run: the same round with no outage. Target: the sink that was down
gets every change, no resync (missing 0, resyncs 0).

**B, a snapshot slower than the window.** ``--snapshot-keys`` keys (the issue's 300,000 by
default) into ``--slow-sink`` (Kafka), on the benchmark's own instance of its server. First a
bridge takes the snapshot at the sink's own pace (its delivery time T). Then the sink is made
slow: its server runs for only T / (``--factor`` x the window) of every second (SIGCONT, then
SIGSTOP: pauses under a second, far below the sinks' timeouts), so that delivering the
snapshot takes about ``--factor`` windows while etcd serves it as fast as ever. Baseline: a
fresh bridge delivers the snapshot into the slow sink with no compaction (its delivery time,
and so the factor reached; if that is off by more than 20%, the share is corrected in
proportion and the baseline taken again, once). Then a fresh bridge again with the compactor
running, until the snapshot completed and ``--settle`` windows passed, or for 1.5 x the
baseline's delivery time + 2 windows. Counted in the sink as the records arrive: snapshots
started and completed (distinct ``snapshot_begin`` and ``snapshot_end`` markers; in Kafka, a
marker in every partition), snapshot records written (x the prefix); and the bridge's
``snapshot starting`` log lines. Target: 1 start, 1 completion.

Today's bridge is expected to miss both targets: that is the baseline issue 14 starts from.
The same command measures a bridge with issue 14's local log, given its variable with
``--env`` (``{lab}`` and ``{name}`` in the value: a directory per bridge name in the run's
directory, see ``bench.common.Lab.bridge``).

    .venv/bin/python -m bench.compaction [--compact-every 60] [--down 300] [--factor 10]
        [--parts a,b] [--sinks file,kafka,redis] [--down-sink redis] [--slow-sink kafka]
        [--snapshot-keys 300000]
        [--env NAME=VALUE ...]
"""

import argparse
import functools
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import orjson
from pyetcd import etcdrpc

from bench import snapshot
from bench.common import (
    CHANGE_OPS,
    Bridge,
    Lab,
    Stopwatch,
    add_common_arguments,
    await_records,
    compact,
    current_revision,
    deliver,
    describe_machine,
    etcd_call,
    print_settings,
    print_table,
    snapshot_records,
    verdict,
)
from bridge.events import Event, Op, SnapshotReason
from tests.fixtures.processes import wait_for
from tests.sinks.base import Destination, SinkServer

CLOCK_KEY = b"/compaction-clock"
"""The key the compactor puts before each compaction, outside every prefix of the run."""
PARTS = ("a", "b")
STARTING = snapshot.STARTING
SNAPSHOTTING = frozenset({Op.SNAPSHOT_BEGIN, Op.SNAPSHOT})
"""A sink whose last record is one of these is inside a snapshot."""


class Background:
    """A loop (``run``) in a thread of its own while used as a context manager; ``run``
    returns once ``stopping`` is set, and what it raised is raised by the owning thread on
    exit."""

    def __init__(self, *, name: str) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=name, daemon=True)
        self._error: BaseException | None = None

    def run(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self.run()
        except BaseException as error:  # noqa: BLE001 - raised by the owning thread, on exit
            self._error = error

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.stopping.set()
        self._thread.join(60)
        if self._error is not None and exc_type is None:
            raise RuntimeError(f"{self._thread.name}: {self._error}") from self._error


class Compactor(Background):
    """Compacts etcd to its current revision every ``every`` s (never if 0); counts the
    compactions."""

    def __init__(self, endpoint: str, *, every: float) -> None:
        super().__init__(name="compactor")
        self.endpoint = endpoint
        self.every = every
        self.compactions = 0

    def run(self) -> None:
        while self.every and not self.stopping.wait(self.every):
            etcd_call(
                self.endpoint,
                lambda kv: kv.Put(etcdrpc.PutRequest(key=CLOCK_KEY, value=b"tick"), timeout=30),
            )
            compact(self.endpoint, physical=False)
            self.compactions += 1


# --- A: a sink down under load ---------------------------------------------------------------


@dataclass(frozen=True)
class SinkFigures:
    """One sink's figures in one round of A."""

    round: str
    sink: str
    down: bool
    written: int
    held: int
    missing: int
    repeated: int
    resyncs: Counter[str]
    catch_up: float
    flaws: int

    def row(self, *, compactions: int) -> list[object]:
        if not self.down:
            target = "(baseline)" if self.round == "no outage" else "-"
        else:
            met = self.missing == 0 and not self.resyncs and self.repeated == 0
            target = f"{verdict(met)} (missing 0, resyncs 0)"
        resyncs = sum(self.resyncs.values())
        reasons = ", ".join(
            reason if len(self.resyncs) == 1 else f"{reason} {n}"
            for reason, n in sorted(self.resyncs.items())
        )
        return [
            self.round,
            self.sink + (" (down)" if self.down else ""),
            compactions,
            self.written,
            self.held,
            self.missing,
            f"{self.missing / self.written:.1%}" if self.written else "-",
            self.repeated,
            f"{resyncs} ({reasons})" if resyncs else "0",
            self.catch_up,
            self.flaws,
            target,
        ]


class Outage:
    """Makes one sink's server unavailable and available again: stopped and started (it keeps
    its data on disk), or paused and resumed (it keeps its data in memory only)."""

    def __init__(self, server: SinkServer, *, restartable: bool) -> None:
        self.server = server
        self.restartable = restartable

    @property
    def fault(self) -> str:
        return "server stopped, then started" if self.restartable else "server paused (SIGSTOP)"

    def begin(self) -> None:
        if self.restartable:
            self.server.stop()
        else:
            self.server.process.pause()

    def end(self) -> None:
        if self.restartable:
            self.server.start()
        else:
            self.server.process.resume()


def outage_round(
    lab: Lab, arguments: argparse.Namespace, *, down: bool
) -> tuple[list[SinkFigures], int]:
    """One round of A; its figures per sink, and the compactions during it."""
    tag = "outage" if down else "baseline"
    label = f"{arguments.down_sink} down {arguments.down:g} s" if down else "no outage"
    prefix = f"/compaction-a-{tag}/"
    name = f"compaction-a-{tag}"
    server = lab.own_server(arguments.down_sink, name=f"{arguments.down_sink}-{tag}")
    targets = [
        lab.target(
            sink, tag=f"{name}-{sink}", server=server if sink == arguments.down_sink else None
        )
        for sink in arguments.sinks
    ]
    bridge = lab.bridge(targets, prefix=prefix, name=name).start()
    readers = [target.reader() for target in targets]
    try:
        await_records(
            bridge, readers, records=snapshot_records(targets, keys=0), timeout=120
        )  # the first snapshot (of nothing): each pipeline then watches
    finally:
        for reader in readers:
            reader.close()
    place = arguments.sinks.index(arguments.down_sink)
    outage = Outage(server, restartable=type(targets[place]).restartable)
    acks = lab.directory("writer") / f"{name}.json"
    seconds = arguments.warmup + arguments.down + arguments.after
    with Compactor(lab.endpoint, every=arguments.compact_every) as compactions:
        writer = lab.agent(
            "paced",
            f"--endpoint={lab.endpoint}",
            f"--prefix={prefix}",
            f"--keys={arguments.write_keys}",
            f"--rate={arguments.rate}",
            f"--seconds={seconds}",
            f"--out={acks}",
        )
        began = time.monotonic()
        pause_until(began + arguments.warmup, bridge)
        if down:
            outage.begin()
            print(f"  {label}: {outage.fault} at {time.monotonic() - began:.1f} s", flush=True)
        pause_until(began + arguments.warmup + arguments.down, bridge)
        if down:
            outage.end()
        back_at = time.monotonic()
        back_revision = current_revision(lab.endpoint)
        holding = functools.partial(
            caught_up, since=back_at, bridge=bridge, prefix=prefix, pipeline=name
        )
        [catch_up] = holding([targets[place]], revision=back_revision)
        written = writer.result(timeout=seconds + 120)
        during_load = compactions.compactions
        holding(targets, revision=written["last_revision"])
    bridge.stop()
    revisions = set(orjson.loads(Path(acks).read_bytes())["revisions"])
    figures = [
        read_back(
            target,
            pipeline=name,
            revisions=revisions,
            round=label,
            down=down and target.name == arguments.down_sink,
            catch_up=catch_up if target.name == arguments.down_sink else float("nan"),
        )
        for target in targets
    ]
    print(
        f"  {label}: {written['puts']:,} puts at {written['puts'] / written['seconds']:,.0f}/s, "
        f"{during_load} compactions; "
        + "; ".join(
            f"{each.sink}: missing {each.missing:,}, resyncs {sum(each.resyncs.values())}"
            for each in figures
        )
        + f"; {arguments.down_sink} caught up in {catch_up:.2f} s",
        flush=True,
    )
    return figures, during_load


def pause_until(moment: float, bridge: Bridge) -> None:
    """The round's schedule: wait until ``moment``, checking that the bridge still runs."""
    while (left := moment - time.monotonic()) > 0:
        bridge.check()
        time.sleep(min(left, 0.5))


def caught_up(
    targets: Sequence[Destination],
    *,
    revision: int,
    since: float,
    bridge: Bridge,
    prefix: str,
    pipeline: str,
) -> list[float]:
    """Per target, seconds from ``since`` until it durably holds ``revision`` (its tail, as the
    product reads it back, at or past it and outside a snapshot), polled every 0.1 s; NaN if
    not within 10 minutes."""
    taken = [0.0] * len(targets)

    def all_hold() -> bool:
        bridge.check()
        for place, target in enumerate(targets):
            if not taken[place]:
                tail = target.tail(pipeline=pipeline, prefix=prefix.encode())
                if tail is not None and tail.revision >= revision and tail.op not in SNAPSHOTTING:
                    taken[place] = time.monotonic() - since
        return all(taken)

    try:
        wait_for(all_hold, timeout=600, what=f"the sinks to hold revision {revision}", interval=0.1)
    except TimeoutError as error:
        print(f"  ! {error}", flush=True)
    return [seconds or float("nan") for seconds in taken]


def read_back(
    target: Destination,
    *,
    pipeline: str,
    revisions: set[int],
    round: str,
    down: bool,
    catch_up: float,
) -> SinkFigures:
    """Everything ``target`` holds, against the writer's record."""
    flaws: list[str] = []
    events = [
        event
        for stream in target.streams(pipeline=pipeline, flaw=flaws.append).values()
        for event in stream
    ]
    target.close()
    changes = Counter(event.position for event in events if event.op.value in CHANGE_OPS)
    held = {position.revision for position in changes}
    return SinkFigures(
        round=round,
        sink=target.name,
        down=down,
        written=len(revisions),
        held=len(held & revisions),
        missing=len(revisions - held),
        repeated=sum(count - 1 for count in changes.values()),
        resyncs=resyncs(events),
        catch_up=catch_up,
        flaws=len(flaws),
    )


def resyncs(events: Sequence[Event]) -> Counter[str]:
    """The snapshots after the first, by reason (a marker stands in every Kafka partition:
    counted once, by its position)."""
    begins = {
        event.position: event.reason
        for event in events
        if event.op is Op.SNAPSHOT_BEGIN and event.reason is not SnapshotReason.INITIAL
    }
    return Counter(str(reason) for reason in begins.values())


def part_a(lab: Lab, arguments: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    for down in (False, True):
        figures, compactions = outage_round(lab, arguments, down=down)
        rows.extend(each.row(compactions=compactions) for each in figures)
    return rows


A_HEADERS = [
    "round",
    "sink",
    "compactions (during load)",
    "changes written",
    "changes held",
    "missing",
    "missing share",
    "repeated",
    "resyncs (reason)",
    "catch-up (s)",
    "flaws",
    "target",
]


# --- B: a snapshot slower than the window ---------------------------------------------------


class Throttle(Background):
    """Lets a sink's server run for only ``share`` of every second (SIGCONT, then SIGSTOP): a
    slow sink, whose server and not the bridge sets the pace. Each pause is shorter than a
    second, far below the sinks' timeouts, so the bridge sees a slow server, never an
    unavailable one."""

    PERIOD = 1.0

    def __init__(self, server: SinkServer, *, share: float) -> None:
        super().__init__(name="throttle")
        self.process = server.process
        self.share = share

    def run(self) -> None:
        running, paused = self.share * self.PERIOD, (1 - self.share) * self.PERIOD
        try:
            while paused > 0 and not self.stopping.wait(running):
                self.process.pause()
                self.stopping.wait(paused)
                self.process.resume()
        finally:
            self.process.resume()


@dataclass(frozen=True)
class SnapshotRound:
    """One snapshot of B into the slow sink."""

    round: str
    keys: int
    share: float
    compactions: int
    starts: int
    completions: int
    snapshot_records: int
    logged_starts: int
    seconds: float
    """From the first snapshot_begin seen to the first snapshot completed (NaN: none)."""
    window: float
    baseline: bool

    def row(self) -> list[object]:
        if self.baseline:
            target = "(baseline)"
        else:
            met = self.starts == 1 and self.completions == 1
            target = f"{verdict(met)} (1 start, 1 completion)"
        return [
            self.round,
            self.keys,
            f"{self.share:.1%}",
            self.compactions,
            self.starts,
            self.completions,
            self.logged_starts,
            self.snapshot_records,
            f"{self.snapshot_records / self.keys:.2f}",
            self.seconds,
            self.seconds / self.window,
            target,
        ]


B_HEADERS = [
    "round",
    "prefix keys",
    "sink server runs",
    "compactions",
    "snapshots started (sink)",
    "completed (sink)",
    "'snapshot starting' (log)",
    "snapshot records written",
    "x prefix",
    "delivery (s)",
    "x window",
    "target",
]


def snapshot_round(
    lab: Lab,
    arguments: argparse.Namespace,
    *,
    server: SinkServer,
    share: float,
    keys: int,
    prefix: str,
    baseline: float | None,
    attempt: int,
) -> SnapshotRound:
    """A fresh bridge takes the prefix's snapshot into a fresh target on the slow sink's
    ``server``, throttled to ``share``; with compaction unless this is the baseline
    (``baseline`` None; else the baseline's delivery seconds). The sink is read as the records
    arrive: a snapshot started at its first ``snapshot_begin`` and completed once its
    ``snapshot_end`` is in (in every Kafka partition)."""
    window = arguments.compact_every
    compacting = baseline is not None
    name = f"compaction-b-{'compacted' if compacting else 'baseline'}-{attempt}"
    target = lab.target(arguments.slow_sink, tag=name, server=server)
    reader = target.reader()
    markers: Counter[tuple[str, int]] = Counter()
    records = 0
    first_begin = first_end = 0.0
    if baseline is None:
        give_up = 600 + 5 * arguments.factor * window
    else:
        give_up = 1.5 * baseline + 2 * window
    with (
        Throttle(server, share=share),
        Compactor(lab.endpoint, every=window if compacting else 0) as compactions,
    ):
        bridge = lab.bridge(target, prefix=prefix, name=name).start()
        deadline = settled = time.monotonic() + give_up
        try:
            while time.monotonic() < min(deadline, settled):
                bridge.check()
                for revision, op in reader.follow(timeout=0.2):
                    if op == Op.SNAPSHOT.value:
                        records += 1
                        continue
                    markers[op, revision] += 1
                    if op == Op.SNAPSHOT_BEGIN.value:
                        first_begin = first_begin or time.monotonic()
                    complete = markers[op, revision] == target.marker_records
                    if op == Op.SNAPSHOT_END.value and complete and not first_end:
                        first_end = time.monotonic()
                        settled = first_end + (arguments.settle * window if compacting else 0)
        finally:
            reader.close()
        logged = bridge.process.log_text().count(STARTING)
        bridge.stop()
    result = SnapshotRound(
        round=f"compaction every {window:g} s" if compacting else "no compaction",
        keys=keys,
        share=share,
        compactions=compactions.compactions,
        starts=sum(1 for op, _ in markers if op == Op.SNAPSHOT_BEGIN.value),
        completions=sum(
            1
            for (op, _), count in markers.items()
            if op == Op.SNAPSHOT_END.value and count == target.marker_records
        ),
        snapshot_records=records,
        logged_starts=logged,
        seconds=first_end - first_begin if first_end else float("nan"),
        window=window,
        baseline=not compacting,
    )
    print(
        f"  {result.round}: {result.starts} started, {result.completions} completed, "
        f"{records:,} snapshot records ({records / keys:.2f} x the prefix), "
        + (f"delivered in {result.seconds:.1f} s" if first_end else "never delivered"),
        flush=True,
    )
    return result


def part_b(lab: Lab, arguments: argparse.Namespace) -> list[list[object]]:
    """The slow sink's own pace first, then the throttled baseline and compacted rounds."""
    keys: int = arguments.snapshot_keys
    window: float = arguments.compact_every
    prefix = "/compaction-b/"
    snapshot.load_prefix(lab, prefix=prefix, keys=keys, value_bytes=arguments.value_bytes)
    server = lab.own_server(arguments.slow_sink, name=f"{arguments.slow_sink}-slow")
    target = lab.target(arguments.slow_sink, tag="compaction-b-own-pace", server=server)
    own_pace = deliver(
        lab,
        [target],
        prefix=prefix,
        name="compaction-b-own-pace",
        records=snapshot_records([target], keys=keys),
        mark=STARTING,
    ).seconds()
    wanted = arguments.factor * window
    share = min(1.0, own_pace / wanted)
    print(
        f"  {arguments.slow_sink} at its own pace: {keys:,} keys in {own_pace:.1f} s "
        f"({keys / own_pace:,.0f} keys/s); its server to run {share:.1%} of each second for "
        f"{arguments.factor:g} windows of {window:g} s",
        flush=True,
    )

    measure = functools.partial(
        snapshot_round, lab, arguments, server=server, keys=keys, prefix=prefix
    )
    base = measure(share=share, baseline=None, attempt=1)
    if base.completions and share < 1 and not 0.8 <= base.seconds / wanted <= 1.25:
        share = min(1.0, share * base.seconds / wanted)
        print(f"  {base.seconds / window:.1f} windows: again, the server running {share:.1%}")
        base = measure(share=share, baseline=None, attempt=2)
    if not base.completions:
        raise RuntimeError("the baseline snapshot did not complete: nothing to compare with")
    rounds = [base, measure(share=share, baseline=base.seconds, attempt=1)]
    return [each.row() for each in rounds]


# --- the command ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compaction", description=__doc__)
    parser.add_argument(
        "--parts",
        type=lambda value: [part.strip().lower() for part in value.split(",") if part.strip()],
        default=list(PARTS),
        help="a (a sink down under load), b (a snapshot slower than the window), or both",
    )
    parser.add_argument(
        "--compact-every", type=float, default=60.0, help="seconds between compactions"
    )
    group = parser.add_argument_group("A, a sink down under load")
    group.add_argument("--down", type=float, default=300.0, help="seconds the sink is down")
    group.add_argument("--down-sink", default="redis", help="the sink taken down (one of --sinks)")
    group.add_argument("--warmup", type=float, default=10.0, help="seconds of load before")
    group.add_argument("--after", type=float, default=30.0, help="seconds of load after")
    group.add_argument("--rate", type=float, default=1000.0, help="the writer's puts/s")
    group.add_argument("--write-keys", type=int, default=1000, help="the writer's key space")
    group = parser.add_argument_group("B, a snapshot slower than the window")
    group.add_argument("--slow-sink", default="kafka", help="the sink the snapshot goes to")
    group.add_argument(
        "--factor", type=float, default=10.0, help="the snapshot's delivery time, in windows"
    )
    group.add_argument("--snapshot-keys", type=int, default=300_000, help="the prefix's size")
    group.add_argument("--value-bytes", type=int, default=100)
    group.add_argument(
        "--settle", type=float, default=2.0, help="windows to wait after the snapshot completed"
    )
    add_common_arguments(parser)
    parser.set_defaults(sinks=["file", "kafka", "redis"])
    arguments = parser.parse_args(argv)
    if set(arguments.parts) - set(PARTS):
        parser.error(f"--parts: from {', '.join(PARTS)}")
    if arguments.down_sink not in arguments.sinks:
        parser.error("--down-sink must be one of --sinks")
    clock = Stopwatch()
    describe_machine("Compaction: a sink behind etcd's history (issue 14)")
    print_settings(arguments)
    print(
        f"settings: compaction every {arguments.compact_every:g} s; "
        f"A: sinks {','.join(arguments.sinks)}, {arguments.down_sink} down {arguments.down:g} s "
        f"after {arguments.warmup:g} s, load {arguments.rate:g} puts/s over "
        f"{arguments.write_keys:,} keys for {arguments.warmup + arguments.down + arguments.after:g}"
        f" s; B: {arguments.snapshot_keys:,} keys of {arguments.value_bytes} bytes into "
        f"{arguments.slow_sink} slowed to {arguments.factor:g} windows, settle "
        f"{arguments.settle:g} windows; parts {','.join(arguments.parts)}",
        flush=True,
    )
    tables: list[tuple[str, list[str], list[list[object]]]] = []
    with Lab.for_run("compaction", arguments) as lab:
        if "a" in arguments.parts:
            tables.append(("A: a sink down under load", A_HEADERS, part_a(lab, arguments)))
        if "b" in arguments.parts:
            rows = part_b(lab, arguments)
            tables.append(("B: a snapshot slower than the window", B_HEADERS, rows))
    for title, headers, rows in tables:
        print(f"\n### {title}\n")
        print_table(headers, rows)
    print(f"\ntotal {clock}")
    print(lab.load_summary)


if __name__ == "__main__":
    main()
