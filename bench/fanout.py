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
into targets of its own. Rate = events / (the last event visible in every target of the
bridge - the first moment its log says the work began: ``watching`` for the replay, ``snapshot
starting`` for the snapshot, from whichever pipeline says it first, as ``bench.burst`` and
``bench.snapshot`` time one sink), polled every 5 ms. The fan-out's clock thus starts with its
quickest pipeline, and a sink that takes longer to open (Kafka) counts against it; the rate
from the bridge's process start, shown too, counts every opening in every bridge. Figures
(medians of ``--repeat`` attempts): each sink's rate alone; the fan-out's rate, and each
sink's within it (its own last event); the fan-out over the slowest sink alone (target >=
0.9); the bridges' CPU-seconds and peak RSS (the fan-out's: target < 250 MB).

The same command measures a bridge that reads etcd once per process (issue 14's local log),
given its variable with ``--env``; ``{lab}`` and ``{name}`` in the value give each bridge
name a directory of its own in the run's directory (``bench.common.Lab.bridge``), kept across
the replay's restart of that bridge.

``--profile DIR`` attaches py-spy (``bench.profile``) to the fan-out's first replay and prints
where its GIL-holding samples went, per cost centre and per thread: in one process the sinks
share one GIL, which bounds the fan-out.

    .venv/bin/python -m bench.fanout [--repeat 3] [--snapshot-keys 300000]
        [--workloads replay,snapshot] [--sinks file,kafka,redis] [--env NAME=VALUE ...]
        [--profile DIR]
"""

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import burst, profile, snapshot
from bench.common import (
    Delivery,
    Lab,
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
    """One bridge process of a workload: the sinks it streams into (one: alone)."""

    workload: str
    sinks: tuple[str, ...]

    @property
    def label(self) -> str:
        if len(self.sinks) == 1:
            return f"bridge → {self.sinks[0]} alone"
        return f"bridge → {','.join(self.sinks)} (one process)"

    def name(self, attempt: int) -> str:
        """The bridge's name (its pipelines') in one attempt."""
        return f"fanout-{self.workload}-{'-'.join(self.sinks)}-{attempt}"


@dataclass(frozen=True)
class Runs:
    """Every attempt of one group: what each delivered, of how many events."""

    group: Group
    events: int
    deliveries: list[Delivery]

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
            f"{ratio:.2f}",
            target,
        ]

    def within(self) -> list[list[object]]:
        """For a fan-out: one row per sink, its rate to its own last event."""
        return [
            [f"  {sink} within it", statistics.median(self.rates(place))]
            + ["-"] * 4
            + [f"{statistics.median(self.rates(place)) / self.rate:.2f} of the fan-out", ""]
            for place, sink in enumerate(self.group.sinks)
        ]


def groups(workload: str, sinks: Sequence[str]) -> list[Group]:
    """Each sink alone, then all of them in one process."""
    return [Group(workload, (sink,)) for sink in sinks] + [Group(workload, tuple(sinks))]


def replays(lab: Lab, arguments: argparse.Namespace) -> list[Runs]:
    """The replay workload: every group, ``--repeat`` times, alone and fan-out in turn."""
    bridges = groups("replay", arguments.sinks)
    history = burst.prepare(
        lab,
        [
            burst.Setup(group.name(attempt), group.sinks)
            for attempt in range(arguments.repeat)
            for group in bridges
        ],
        keys=arguments.keys,
        transactions=arguments.transactions,
        prefix=REPLAY_PREFIX,
    )
    runs = {group: Runs(group, history.events, []) for group in bridges}
    for attempt in range(arguments.repeat):
        for group in bridges:
            profiled = arguments.profile is not None and attempt == 0 and group is bridges[-1]
            output = arguments.profile / "fanout-replay.txt" if profiled else None
            attach = profile.attacher(output, rate=PROFILE_RATE) if output else None
            delivery = burst.replay_into(lab, history, group.name(attempt), attach=attach)
            runs[group].deliveries.append(delivery)
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
    bridges = groups("snapshot", arguments.sinks)
    runs = {group: Runs(group, keys, []) for group in bridges}
    for attempt in range(arguments.repeat):
        for group in bridges:
            name = group.name(attempt)
            targets = lab.targets(group.sinks, tag=name)
            delivery = deliver(
                lab,
                targets,
                prefix=SNAPSHOT_PREFIX,
                name=name,
                records=snapshot_records(targets, keys=keys),
                mark=snapshot.STARTING,
            )
            runs[group].deliveries.append(delivery)
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
    *alone, fanout = runs
    slowest = min(each.rate for each in alone)
    rows = [each.row(slowest=slowest, fanout=False) for each in alone]
    rows.append(fanout.row(slowest=slowest, fanout=True))
    rows.extend(fanout.within())
    print(f"\n### {workload}: {fanout.events:,} events\n")
    print_table(
        [
            "bridge",
            "events/s (median)",
            "min–max",
            "events/s from process start",
            "CPU-s",
            "peak RSS (MiB)",
            "rate / slowest alone",
            "target",
        ],
        rows,
    )
    ratio = fanout.rate / slowest
    from_start = fanout.rate_from_start / min(each.rate_from_start for each in alone)
    rss = fanout.peak_rss_mib
    return (
        f"{workload}: fan-out {fanout.rate:,.0f} events/s / slowest alone {slowest:,.0f} = "
        f"{ratio:.2f} (>= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}; from process "
        f"start: {from_start:.2f}); fan-out peak RSS {rss:,.0f} MiB (< 250 MB: "
        f"{verdict(rss < TARGET_RSS_MIB)})"
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
