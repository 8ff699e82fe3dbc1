"""Issue 14, fan-out: several sinks in one bridge process against each of them alone.

Today each sink of a bridge process has its own pipeline: its own etcd watch, its own
protobuf decoding, its own JSON encoding, so a process streaming into three sinks does about
three times the work of one. Issue 14's target: fan-out to file + Kafka + Redis at >= 0.9 x
the rate of the slowest of the three alone, with the process's peak RSS under 250 MB. Two
workloads, each set up as an earlier measurement sets it up:

- **replay** (``bench.burst``'s history, ``burst.prepare``): ``--keys`` keys; each bridge
  below first gives its empty targets the prefix's snapshot (revision R0) and is stopped;
  then ``--transactions`` transactions of 100 puts overwrite the keys (every event has a
  previous value), and each bridge is started again and replays the whole history;
- **snapshot** (``bench.snapshot``'s prefix, ``snapshot.load_prefix``): ``--snapshot-keys``
  keys of ``--value-bytes`` bytes, taken by a fresh bridge into empty targets.

In each workload and attempt: one bridge per sink of ``--sinks`` alone (``BRIDGE_SINKS=file``
...), then one bridge with all of them (``BRIDGE_SINKS=file,kafka,redis``: the fan-out), each
into targets of its own; then, with ``--side-by-side``, one bridge per sink started together
(a process per sink: the fan-out without a shared GIL, each process reading etcd itself),
timed as one from the first mark to the last event in any of them. Rate = events / (the last
event visible in every target of the bridge - the first moment its log says the work began:
``watching`` for the replay, ``snapshot starting`` for the snapshot, from whichever pipeline
says it first, as ``bench.burst`` and ``bench.snapshot`` time one sink), polled every 5 ms.
The fan-out's clock thus starts with its quickest pipeline, and a sink that takes longer to
open (Kafka) counts against it; the rate from the bridge's process start, shown too, counts
every opening in every bridge. Figures (medians of ``--repeat`` attempts): each sink's rate
alone; the fan-out's rate, and each sink's within it (its own last event); the fan-out over
the slowest sink alone (target >= 0.9); the bridges' CPU-seconds and peak RSS (the fan-out's:
target < 250 MB; side by side, the sum of the processes'); and how busy the machine's cores
were from the bridge's start to its last event (``/proc/stat``: the bridge, etcd, the servers
and this benchmark's polling). A group that keeps every core busy is bound by the machine,
not by how the bridge is built.

The same command measures a bridge that reads etcd once per process (issue 14's local log),
given its variable with ``--env``; ``{lab}`` and ``{name}`` in the value give each bridge
name a directory of its own in the run's directory (``bench.common.Lab.bridge``), kept across
the replay's restart of that bridge.

``--profile DIR`` attaches py-spy (``bench.profile``) to the fan-out's first replay and prints
where its GIL-holding samples went, per cost centre and per thread: in one process the sinks
share one GIL, which bounds the fan-out.

    .venv/bin/python -m bench.fanout [--repeat 3] [--snapshot-keys 300000]
        [--workloads replay,snapshot] [--sinks file,kafka,redis] [--env NAME=VALUE ...]
        [--profile DIR] [--side-by-side]
"""

import argparse
import os
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import burst, profile, snapshot
from bench.common import (
    Delivery,
    Lab,
    MachineLoad,
    Stopwatch,
    add_common_arguments,
    deliver,
    describe_machine,
    print_settings,
    print_table,
    snapshot_records,
    verdict,
)

REPLAY_PREFIX = "/fanout-replay/"
SNAPSHOT_PREFIX = "/fanout-snapshot/"
WORKLOADS = ("replay", "snapshot")
TARGET_RATIO = 0.9
"""The fan-out's rate over the slowest sink's alone."""
TARGET_RSS_MIB = snapshot.TARGET_RSS_MIB
PROFILE_RATE = 250
"""py-spy's samples per second, as ``bench.profile``'s default."""
FANOUT_SINKS = ("file", "kafka", "redis")
"""Issue 14's fan-out, in the order its BRIDGE_SINKS is written."""


@dataclass(frozen=True)
class Group:
    """The bridges of a workload timed as one: one process streaming into ``sinks`` (one:
    alone), or with ``separate`` a process per sink, started together."""

    workload: str
    sinks: tuple[str, ...]
    separate: bool = False

    @property
    def label(self) -> str:
        if self.separate:
            return f"bridges → {' | '.join(self.sinks)} (a process each)"
        if len(self.sinks) == 1:
            return f"bridge → {self.sinks[0]} alone"
        return f"bridge → {','.join(self.sinks)} (one process)"

    def names(self, attempt: int) -> list[tuple[str, tuple[str, ...]]]:
        """Each bridge's name (its pipelines') in one attempt, and its sinks."""
        if self.separate:
            return [
                (f"fanout-{self.workload}-side-{sink}-{attempt}", (sink,)) for sink in self.sinks
            ]
        return [(f"fanout-{self.workload}-{'-'.join(self.sinks)}-{attempt}", self.sinks)]


@dataclass(frozen=True)
class Runs:
    """Every attempt of one group: what each delivered, of how many events."""

    group: Group
    events: int
    deliveries: list[Delivery]
    busy: list[float]
    """Per attempt: the share of the machine's cores busy during the delivery."""

    def rates(self, target: int | None = None) -> list[float]:
        """Per attempt: events / seconds, to the last event in ``target`` or in every one."""
        return [self.events / delivery.seconds(target) for delivery in self.deliveries]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates())

    @property
    def rate_from_start(self) -> float:
        return statistics.median(self.events / d.total_seconds for d in self.deliveries)

    @property
    def peak_rss_mib(self) -> float:
        return max(delivery.peak_rss_mib for delivery in self.deliveries)

    def row(self, *, slowest: float, fanout: bool) -> list[object]:
        rates = self.rates()
        ratio = self.rate / slowest
        if fanout:
            met = ratio >= TARGET_RATIO and self.peak_rss_mib < TARGET_RSS_MIB
            target = f"{verdict(met)} (>= {TARGET_RATIO}, RSS < 250 MB)"
        else:
            target = "(baseline)" if self.rate == slowest else "-"
        return [
            self.group.label,
            self.rate,
            f"{min(rates):,.0f}–{max(rates):,.0f}" if len(rates) > 1 else "-",
            self.rate_from_start,
            statistics.median(d.cpu_seconds for d in self.deliveries),
            self.peak_rss_mib,
            f"{statistics.median(self.busy):.0%}",
            f"{ratio:.2f}",
            target,
        ]

    def within(self) -> list[list[object]]:
        """For a fan-out: one row per sink, its rate to its own last event."""
        return [
            [f"  {sink} within it", statistics.median(self.rates(place))]
            + ["-"] * 5
            + [f"{statistics.median(self.rates(place)) / self.rate:.2f} of the fan-out", ""]
            for place, sink in enumerate(self.group.sinks)
        ]


def groups(workload: str, sinks: Sequence[str], *, side_by_side: bool) -> list[Group]:
    """Each sink alone, all of them in one process, then (``side_by_side``) a process each;
    the one-process fan-out is the one the target is about."""
    every = tuple(sinks)
    alone = [Group(workload, (sink,)) for sink in sinks]
    return (
        alone + [Group(workload, every)] + ([Group(workload, every, True)] if side_by_side else [])
    )


def together(bridges: Sequence[Callable[[], Delivery]]) -> tuple[Delivery, float]:
    """Deliver through each of ``bridges`` at once (a thread each), as one delivery: from the
    first start and mark to each one's last record; CPU and peak RSS summed (the processes
    run at the same time). And the share of the machine's cores busy meanwhile."""
    before = MachineLoad.busy_seconds()
    delivered: dict[int, Delivery] = {}

    def run(place: int) -> None:
        delivered[place] = bridges[place]()

    threads = [threading.Thread(target=run, args=(place,)) for place in range(len(bridges))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(delivered) != len(bridges):
        raise RuntimeError("a bridge of the group failed; its error is above")
    deliveries = [delivered[place] for place in range(len(bridges))]
    busy = MachineLoad.busy_seconds() - before
    delivery = Delivery(
        started_at=min(d.started_at for d in deliveries),
        marked_at=min(d.marked_at for d in deliveries),
        last_seen=tuple(last for d in deliveries for last in d.last_seen),
        cpu_seconds=sum(d.cpu_seconds for d in deliveries),
        peak_rss_mib=sum(d.peak_rss_mib for d in deliveries),
    )
    return delivery, busy / ((os.cpu_count() or 1) * delivery.total_seconds)


def replays(lab: Lab, arguments: argparse.Namespace) -> list[Runs]:
    """The replay workload: every group, ``--repeat`` times, alone and fan-out in turn."""
    bridges = groups("replay", arguments.sinks, side_by_side=arguments.side_by_side)
    history = burst.prepare(
        lab,
        [
            burst.Setup(name, sinks)
            for attempt in range(arguments.repeat)
            for group in bridges
            for name, sinks in group.names(attempt)
        ],
        keys=arguments.keys,
        transactions=arguments.transactions,
        prefix=REPLAY_PREFIX,
    )
    runs = {group: Runs(group, history.events, [], []) for group in bridges}
    fanout = bridges[len(arguments.sinks)]
    for attempt in range(arguments.repeat):
        for group in bridges:
            profiled = arguments.profile is not None and attempt == 0 and group is fanout
            output = arguments.profile / "fanout-replay.txt" if profiled else None
            attach = profile.attacher(output, rate=PROFILE_RATE) if output else None
            delivery, busy = together(
                [
                    lambda name=name, attach=attach: burst.replay_into(
                        lab, history, name, attach=attach
                    )
                    for name, _sinks in group.names(attempt)
                ]
            )
            runs[group].deliveries.append(delivery)
            runs[group].busy.append(busy)
            report(group, events=history.events, delivery=delivery)
            if output is not None:
                stacks = profile.read_stacks(output)
                seconds = delivery.total_seconds
                profile.report(group.label, stacks, top=20, seconds=seconds, rate=PROFILE_RATE)
    return list(runs.values())


def snapshots(lab: Lab, arguments: argparse.Namespace) -> list[Runs]:
    """The snapshot workload: every group, ``--repeat`` times, alone and fan-out in turn."""
    keys = arguments.snapshot_keys
    snapshot.load_prefix(lab, prefix=SNAPSHOT_PREFIX, keys=keys, value_bytes=arguments.value_bytes)
    bridges = groups("snapshot", arguments.sinks, side_by_side=arguments.side_by_side)
    runs = {group: Runs(group, keys, [], []) for group in bridges}

    def snapshot_into(name: str, sinks: tuple[str, ...]) -> Delivery:
        targets = lab.targets(sinks, tag=name)
        return deliver(
            lab,
            targets,
            prefix=SNAPSHOT_PREFIX,
            name=name,
            records=snapshot_records(targets, keys=keys),
            mark=snapshot.STARTING,
        )

    for attempt in range(arguments.repeat):
        for group in bridges:
            delivery, busy = together(
                [
                    lambda name=name, sinks=sinks: snapshot_into(name, sinks)
                    for name, sinks in group.names(attempt)
                ]
            )
            runs[group].deliveries.append(delivery)
            runs[group].busy.append(busy)
            report(group, events=keys, delivery=delivery)
    return list(runs.values())


def report(group: Group, *, events: int, delivery: Delivery) -> None:
    print(
        f"  {group.workload}, {group.label}: {events / delivery.seconds():,.0f} events/s, "
        f"peak RSS {delivery.peak_rss_mib:,.0f} MiB",
        flush=True,
    )


def summarize(workload: str, runs: list[Runs]) -> str:
    """The workload's table, printed; its one-line verdict, returned."""
    alone = [each for each in runs if len(each.group.sinks) == 1]
    fanout, *side_by_side = runs[len(alone) :]
    slowest = min(each.rate for each in alone)
    rows = [each.row(slowest=slowest, fanout=False) for each in alone]
    rows.append(fanout.row(slowest=slowest, fanout=True))
    rows.extend(fanout.within())
    for each in side_by_side:
        rows.append(each.row(slowest=slowest, fanout=False))
        rows.extend(each.within())
    print(f"\n### {workload}: {fanout.events:,} events\n")
    print_table(
        [
            "bridge",
            "events/s (median)",
            "min–max",
            "events/s from process start",
            "CPU-s",
            "peak RSS (MiB)",
            "machine busy",
            "rate / slowest alone",
            "target",
        ],
        rows,
    )
    ratio = fanout.rate / slowest
    from_start = fanout.rate_from_start / min(each.rate_from_start for each in alone)
    rss = fanout.peak_rss_mib
    apart = "".join(f"; a process per sink: {each.rate / slowest:.2f}" for each in side_by_side)
    return (
        f"{workload}: fan-out {fanout.rate:,.0f} events/s / slowest alone {slowest:,.0f} = "
        f"{ratio:.2f} (>= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}; from process "
        f"start: {from_start:.2f}); fan-out peak RSS {rss:,.0f} MiB (< 250 MB: "
        f"{verdict(rss < TARGET_RSS_MIB)}){apart}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument(
        "--workloads",
        type=lambda value: [part.strip() for part in value.split(",") if part.strip()],
        default=list(WORKLOADS),
        help=f"from {', '.join(WORKLOADS)} (default: both)",
    )
    parser.add_argument("--keys", type=int, default=20_000, help="replay: key space overwritten")
    parser.add_argument("--transactions", type=int, default=2000, help="replay: of 100 puts each")
    parser.add_argument("--snapshot-keys", type=int, default=300_000, help="snapshot: its keys")
    parser.add_argument("--value-bytes", type=int, default=100, help="snapshot: value size")
    parser.add_argument("--repeat", type=int, default=3, help="attempts per bridge; medians")
    parser.add_argument(
        "--profile", type=Path, help="directory for py-spy's profile of the first fan-out replay"
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="also a process per sink, started together",
    )
    add_common_arguments(parser)
    parser.set_defaults(sinks=list(FANOUT_SINKS))
    arguments = parser.parse_args(argv)
    unknown = set(arguments.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"--workloads: unknown {sorted(unknown)}")
    if len(arguments.sinks) < 2:
        parser.error("--sinks: a fan-out needs two sinks at least")
    if arguments.profile is not None:
        profile.py_spy()
        arguments.profile.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()
    describe_machine("Fan-out: several sinks in one bridge process (issue 14)")
    print_settings(arguments)
    print(
        f"settings: sinks {','.join(arguments.sinks)}; workloads {','.join(arguments.workloads)}; "
        f"replay {arguments.keys:,} keys, {arguments.transactions:,} transactions of 100 puts; "
        f"snapshot {arguments.snapshot_keys:,} keys of {arguments.value_bytes} bytes; "
        f"{arguments.repeat} attempt(s) per bridge",
        flush=True,
    )
    measure = {"replay": replays, "snapshot": snapshots}
    results: dict[str, list[Runs]] = {}
    with Lab.for_run("fanout", arguments) as lab:
        for workload in arguments.workloads:
            results[workload] = measure[workload](lab, arguments)
    verdicts = [summarize(workload, runs) for workload, runs in results.items()]
    print()
    for line in verdicts:
        print(line)
    print(f"total {clock}")
    print(lab.load_summary)


if __name__ == "__main__":
    main()
