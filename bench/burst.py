"""Measurement 2, burst decode: a history of 100-key transactions replayed into each sink.

The prefix holds ``--keys`` keys. Each sink first receives the prefix's snapshot (so its
position is the snapshot's revision R0), with the bridge stopped afterwards. Then
``--transactions`` transactions of 100 puts each overwrite those keys (every event has a
previous value), and the bridge is started again for one sink at a time: it resumes its
watch at R0 + 1 and replays the whole history, with ``prev_kv``, into the sink.

Figures, per sink: the replay rate, events / (last event visible in the sink - the moment
the bridge logged that it opened its watch), polled every 5 ms; the rate from the bridge's
process start (Python start-up, sink open and etcd connect included); CPU-seconds of the
bridge per 100k events (all its threads, start-up included; also net of the start-up cost,
measured by starting it once more on the caught-up sink until it watches); peak RSS; the
CPU of the sink's server (its processes, for PostgreSQL) while the bridge ran, per 100k
events: a bigger record format costs the server too, on the same cores.

Baseline in the same run, on the same history: ``etcdctl watch --prefix --prev-kv --rev R0+1``
(the Go client decoding the same replay and printing every event with its previous value to
a pipe), events / (its last line - its process start), its CPU per 100k and peak RSS. The
ratio is bridge replay rate / etcdctl rate. For reference, a bare gRPC watch in the
benchmark's own process (responses parsed, nothing else done) shows how fast etcd serves the
replay: every rate here is bounded by it, since etcd looks the previous value of each
replayed event up separately. For a sink with a bare client (``bench.common.bare_baseline``:
NATS, PostgreSQL), each replay is followed by a copy of the records it wrote by that client
alone (nats-py publishing the same messages to JetStream with acknowledgements; psycopg's
``COPY`` of the same rows), and the bridge's rate is shown over the copy's as well. Targets on
2 cores: >= 50,000 events/s into Kafka and Redis, >= 30,000 into NATS and PostgreSQL.

With ``--formats native,debezium,cloudevents`` each sink is replayed once per record format
(docs/formats.md), each into a target of its own holding its snapshot in that format; a
non-native format's row gives its rate over the same sink's native rate in the same run,
the formats taking turns in the sink's order from attempt to attempt (``in_turn``).
Target: at most 15% slower than native (ratio >= 0.87). Beside it, the CPU of the bridge (net
of start-up) and the sink's server together over native's: where a format's cost goes when
the rate misses.

With ``--instructions`` each sink and format is replayed once more, into a target of its own,
with the bridge under valgrind's callgrind (``bench.instructions``), and the bridge is started
once more the same way on the caught-up target until it watches: the difference of the two
counts per event is the bridge's own work per event, all its threads, net of starting and
stopping. Unlike a rate or CPU-seconds on 2 shared cores, the count repeats run after run
(within 0.5% here), so a format's cost over native's reads off one run. It leaves out what the
rates include: the sink's server storing bigger records on the same cores, and time that is
not instructions (cache misses). Target: at most 15% more than native's (ratio <= 1.15).
About 40 s per replay of 50,000 events, plus 20 s per start-up.

    .venv/bin/python -m bench.burst [--transactions 2000] [--sinks file,kafka,redis]
        [--formats native,debezium,cloudevents] [--instructions]
"""

import argparse
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.common import (
    BareRun,
    BaselineRun,
    Bridge,
    Delivery,
    Lab,
    Stopwatch,
    add_common_arguments,
    bare_baseline,
    current_revision,
    deliver,
    describe_machine,
    etcdctl,
    print_settings,
    print_table,
    process_tree_cpu_seconds,
    raw_watch,
    snapshot_records,
    verdict,
    write_transactions,
)
from bench.instructions import Callgrind
from tests.sinks.base import Destination

PREFIX = "/burst/"
TARGET_RATES = {"kafka": 50_000, "redis": 50_000, "nats": 30_000, "postgres": 30_000}
"""events/s per sink; the file sink has none."""
FORMAT_COST = 1.15
"""A non-native format may take at most 15% longer than native for the same replay."""
COUNTED_TIMEOUT = 1800.0
"""Seconds a replay or a start-up under callgrind may take: it runs the bridge 30-60 times
slower than without."""
NATIVE = "native"
TXN_KEYS = 100
WATCHING = " watching "
"""What the bridge logs when it opens its watch: the replay starts there."""


@dataclass(frozen=True)
class Variant:
    """One sink written in one record format."""

    sink: str
    format: str = NATIVE

    @property
    def label(self) -> str:
        return self.sink if self.format == NATIVE else f"{self.sink} [{self.format}]"

    def settings(self) -> dict[str, str]:
        """The format's variable; none for native, so that ``--bridge-code`` can run a
        bridge from before formats existed."""
        if self.format == NATIVE:
            return {}
        return {f"BRIDGE_{self.sink.upper()}__FORMAT": self.format}


@dataclass(frozen=True)
class Setup:
    """One bridge to replay the history into: its name (its pipelines'), its sinks (a
    pipeline each, in one process) and its extra settings."""

    name: str
    sinks: Sequence[str]
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Positioned:
    """A ``Setup``'s targets, each holding the snapshot taken at R0, and how many records
    each holds before the replay (the snapshot and its markers)."""

    setup: Setup
    targets: list[Destination]
    held: list[int]


@dataclass(frozen=True)
class History:
    """The prepared history and the sinks positioned just before it."""

    prefix: str
    bridges: dict[str, Positioned]
    """Per bridge name."""
    start_revision: int
    events: int
    load_seconds: float


@dataclass(frozen=True)
class Replay:
    variant: Variant
    events: int
    replay_seconds: float
    total_seconds: float
    cpu_seconds: float
    startup_cpu_seconds: float
    peak_rss_mib: float
    server_cpu_seconds: float | None
    """The sink's server's CPU while the bridge ran (None: the sink has no server)."""

    @property
    def rate(self) -> float:
        return self.events / self.replay_seconds

    @property
    def rate_with_startup(self) -> float:
        return self.events / self.total_seconds

    def cpu_per_100k(self, *, net: bool = False) -> float:
        spent = self.cpu_seconds - (self.startup_cpu_seconds if net else 0.0)
        return spent / self.events * 100_000

    @property
    def server_cpu_per_100k(self) -> float | None:
        if self.server_cpu_seconds is None:
            return None
        return self.server_cpu_seconds / self.events * 100_000


def setups(variants: list[Variant], *, repeat: int = 1) -> list[Setup]:
    """One bridge per variant and replay: the variant's sink alone, in its format."""
    return [
        Setup(_name(variant, attempt), [variant.sink], variant.settings())
        for variant in variants
        for attempt in range(repeat)
    ]


def prepare(
    lab: Lab, bridges: list[Setup], *, keys: int, transactions: int, prefix: str = PREFIX
) -> History:
    """Load the keys under ``prefix``, give every bridge's targets their snapshot (that
    bridge, started and stopped), then write the history."""
    encoded = prefix.encode()
    write_transactions(lab.endpoint, prefix=encoded, keys=keys, transactions=keys // TXN_KEYS)
    positioned: dict[str, Positioned] = {}
    for setup in bridges:
        targets = lab.targets(setup.sinks, tag=setup.name)
        held = snapshot_records(targets, keys=keys)
        deliver(
            lab,
            targets,
            prefix=prefix,
            name=setup.name,
            records=held,
            timeout=120,
            settings=setup.settings,
        )
        positioned[setup.name] = Positioned(setup=setup, targets=targets, held=held)
    start_revision = current_revision(lab.endpoint) + 1
    loaded = write_transactions(
        lab.endpoint,
        prefix=encoded,
        keys=keys,
        transactions=transactions,
        first=keys // TXN_KEYS,
        in_flight=16,
    )
    assert loaded.first_revision == start_revision, "something else wrote to etcd"
    print(
        f"history: {loaded.transactions:,} transactions x {TXN_KEYS} puts = "
        f"{loaded.keys_written:,} events, revisions {loaded.first_revision}.."
        f"{loaded.last_revision}, loaded at {loaded.keys_written / loaded.seconds:,.0f} keys/s",
        flush=True,
    )
    return History(
        prefix=prefix,
        bridges=positioned,
        start_revision=start_revision,
        events=loaded.keys_written,
        load_seconds=loaded.seconds,
    )


def baseline(lab: Lab, history: History) -> BaselineRun:
    """``etcdctl watch`` of the same replay; 5 lines an event: type, key, value, previous
    key and value."""
    return etcdctl(
        lab.etcd().url,
        "watch",
        "--prefix",
        "--prev-kv",
        f"--rev={history.start_revision}",
        history.prefix,
        until_lines=5 * history.events,
    )


def _name(variant: Variant, attempt: int) -> str:
    """The pipeline (and target tag) of one variant's ``attempt``-th replay."""
    return f"burst-{variant.sink}-{variant.format}-{attempt}"


def replay_into(
    lab: Lab,
    history: History,
    name: str,
    *,
    attach: Callable[[Bridge], Callable[[], None]] | None = None,
    place: Callgrind | None = None,
) -> Delivery:
    """Replay the history with the bridge ``name`` into its targets, timed from its log
    saying it watches (the first pipeline to say so) to the last event in every target;
    under ``place`` (callgrind) if given, with the time that takes."""
    positioned = history.bridges[name]
    return deliver(
        lab,
        positioned.targets,
        prefix=history.prefix,
        name=name,
        records=[held + history.events for held in positioned.held],
        mark=WATCHING,
        attach=attach,
        settings=positioned.setup.settings,
        place=place,
        timeout=240 if place is None else COUNTED_TIMEOUT,
    )


def replay(
    lab: Lab,
    history: History,
    variant: Variant,
    *,
    attempt: int = 0,
    startup_cpu: float | None = None,
    attach: Callable[[Bridge], Callable[[], None]] | None = None,
) -> Replay:
    """Replay the history into ``variant`` (its ``attempt``-th target). The start-up cost is
    measured unless given. ``attach`` (a profiler) is called with the started bridge and
    returns what to call once the replay is complete."""
    name = _name(variant, attempt)
    server = lab.server(variant.sink)
    popen = None if server is None else server.process.process
    server_cpu_before = 0.0 if popen is None else process_tree_cpu_seconds(popen.pid)
    delivery = replay_into(lab, history, name, attach=attach)
    server_cpu = None if popen is None else process_tree_cpu_seconds(popen.pid) - server_cpu_before
    if startup_cpu is None:
        again = start_again(lab, history, name)
        startup_cpu = again.cpu_seconds()
        again.stop()
    return Replay(
        variant=variant,
        events=history.events,
        replay_seconds=delivery.seconds(),
        total_seconds=delivery.total_seconds,
        cpu_seconds=delivery.cpu_seconds,
        startup_cpu_seconds=startup_cpu,
        peak_rss_mib=delivery.peak_rss_mib,
        server_cpu_seconds=server_cpu,
    )


def start_again(lab: Lab, history: History, name: str, *, place: Callgrind | None = None) -> Bridge:
    """The bridge ``name`` started once more on its caught-up targets and waited for until it
    watches: what starting costs, without the replay (stopping it is the caller's)."""
    positioned = history.bridges[name]
    again = lab.bridge(
        positioned.targets,
        prefix=history.prefix,
        name=name,
        place=place,
        **positioned.setup.settings,
    ).start()
    again.wait_log(WATCHING, timeout=60 if place is None else COUNTED_TIMEOUT)
    return again


@dataclass(frozen=True)
class Counted:
    """One replay of a variant with the bridge under callgrind, and one start-up alone."""

    variant: Variant
    events: int
    replay_instructions: int
    """Start, replay, stop."""
    startup_instructions: int
    """Start until it watches, stop."""

    @property
    def per_event(self) -> float:
        """Instructions per event, net of starting and stopping."""
        return (self.replay_instructions - self.startup_instructions) / self.events


def counted_replay(lab: Lab, history: History, variant: Variant, *, attempt: int) -> Counted:
    """Replay the history into ``variant``'s ``attempt``-th target with the bridge under
    callgrind, then start it once more (the same way) on the caught-up target until it
    watches, and count the instructions of both (``bench.instructions``)."""
    name = _name(variant, attempt)
    counts = lab.directory("callgrind")
    replayed, started = (Callgrind(counts / f"{name}.{run}") for run in ("replay", "startup"))
    replay_into(lab, history, name, place=replayed)
    start_again(lab, history, name, place=started).stop()
    return Counted(
        variant=variant,
        events=history.events,
        replay_instructions=replayed.instructions(),
        startup_instructions=started.instructions(),
    )


def in_turn(variants: list[Variant], *, attempt: int) -> list[Variant]:
    """The order of one attempt's replays: each sink's formats rotated by ``attempt``, so that
    over as many attempts as formats each format takes each place once. Where a replay comes
    in the sink's row moves its rate: into NATS, with native always first, Debezium and
    CloudEvents ran at 0.76 and 0.71 of native, and in the reverse order (no bare client
    between) at 0.92 and 1.04 (BENCHMARKS.md, 1 Dec 2026, ninth session)."""
    by_sink: dict[str, list[Variant]] = {}
    for variant in variants:
        by_sink.setdefault(variant.sink, []).append(variant)
    turned: list[Variant] = []
    for row in by_sink.values():
        shift = attempt % len(row)
        turned += row[shift:] + row[:shift]
    return turned


def server_cpu_per_100k(results: list[Replay]) -> float | None:
    """The median of the sink's server's CPU per 100k events (None: the sink has none)."""
    spent = [r.server_cpu_per_100k for r in results if r.server_cpu_per_100k is not None]
    return median(spent) if spent else None


def cpu_with_server(results: list[Replay]) -> float:
    """The median CPU per 100k events of the bridge (net of start-up) and the sink's server
    together: what a record format costs the machine, whichever process pays it."""
    return median([r.cpu_per_100k(net=True) + (r.server_cpu_per_100k or 0.0) for r in results])


def target(sink: str, rate: float) -> str:
    wanted = TARGET_RATES.get(sink)
    return "-" if wanted is None else f"{verdict(rate >= wanted)} (>= {wanted:,}/s)"


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}–{max(values):,.0f}" if len(values) > 1 else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    parser.add_argument("--transactions", type=int, default=2000, help="of 100 puts each")
    parser.add_argument("--keys", type=int, default=20_000, help="key space overwritten")
    parser.add_argument(
        "--repeat", type=int, default=3, help="replays per sink (and baseline runs); medians"
    )
    parser.add_argument(
        "--formats",
        type=lambda value: [part.strip() for part in value.split(",") if part.strip()],
        default=[NATIVE],
        help="record formats to replay each sink in (default: native); the first must be native",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also replay each sink and format once with the bridge under valgrind's "
        "callgrind, and compare the instructions it executes per event (bench.instructions)",
    )
    add_common_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.formats[0] != NATIVE:
        parser.error("--formats: list native first, the baseline of the others")
    variants = [Variant(sink, name) for sink in arguments.sinks for name in arguments.formats]
    clock = Stopwatch()
    describe_machine("Burst decode (measurement 2)")
    print_settings(arguments)
    with Lab.for_run("burst", arguments) as lab:
        history = prepare(
            lab,
            setups(variants, repeat=arguments.repeat + arguments.instructions),
            keys=arguments.keys,
            transactions=arguments.transactions,
        )
        events = history.events
        raw_rates = [
            events
            / raw_watch(
                lab.endpoint,
                prefix=history.prefix.encode(),
                start_revision=history.start_revision,
                events=events,
            )
            for _ in range(arguments.repeat)
        ]
        print(f"  bare gRPC watch: {median(raw_rates):,.0f} events/s", flush=True)
        go_runs = [baseline(lab, history) for _ in range(arguments.repeat)]
        go_rates = [events / run.seconds for run in go_runs]
        go_rate = median(go_rates)
        print(f"  etcdctl watch: {go_rate:,.0f} events/s", flush=True)
        replays: dict[Variant, list[Replay]] = {}
        bares: dict[Variant, list[BareRun]] = {}
        for attempt in range(arguments.repeat):
            for variant in in_turn(variants, attempt=attempt):
                first = replays.get(variant, [None])[0]
                result = replay(
                    lab,
                    history,
                    variant,
                    attempt=attempt,
                    startup_cpu=None if first is None else first.startup_cpu_seconds,
                )
                print(f"  bridge → {variant.label}: {result.rate:,.0f} events/s", flush=True)
                replays.setdefault(variant, []).append(result)
                if variant.format != NATIVE:
                    continue  # the bare client writes the native records
                bare = bare_baseline(
                    lab,
                    history.bridges[_name(variant, attempt)].targets[0],
                    pipeline=_name(variant, attempt),
                    from_revision=history.start_revision,
                    tag=f"burst-bare-{variant.sink}-{attempt}",
                )
                if bare is not None:
                    print(f"  {variant.sink}, {bare.client}: {bare.rate:,.0f} events/s", flush=True)
                    bares.setdefault(variant, []).append(bare)
        counted = {
            variant: counted_replay(lab, history, variant, attempt=arguments.repeat)
            for variant in (variants if arguments.instructions else [])
        }
        for variant, count in counted.items():
            print(f"  bridge → {variant.label}: {count.per_event:,.0f} instructions per event")
    print()
    rows: list[list[object]] = [
        [
            "bare gRPC watch (etcd's serving rate)",
            median(raw_rates),
            spread(raw_rates),
            "-",
            "-",
            "-",
            "-",
            f"{median(raw_rates) / go_rate:.2f}",
            "-",
            "(reference)",
        ],
        [
            "etcdctl watch (baseline)",
            go_rate,
            spread(go_rates),
            go_rate,
            median([run.cpu_seconds / events * 100_000 for run in go_runs]),
            "-",
            max(run.peak_rss_mib for run in go_runs),
            "1.00",
            "-",
            "(baseline)",
        ],
    ]
    for variant, results in replays.items():
        rate = median([r.rate for r in results])
        copies = bares.get(variant, [])
        bare_rate = median([copy.rate for copy in copies]) if copies else float("nan")
        if copies:
            rows.append(
                [
                    f"{variant.sink}: {copies[0].client}, same records (baseline)",
                    bare_rate,
                    spread([copy.rate for copy in copies]),
                    "-",
                    "-",
                    median([copy.cpu_per_100k for copy in copies]),
                    "-",
                    f"{bare_rate / go_rate:.2f}",
                    "1.00",
                    "(baseline)",
                ]
            )
        server_cpu = server_cpu_per_100k(results)
        cpu_over_native = "-"
        if variant.format == NATIVE:
            verdict_text = target(variant.sink, rate)
        else:
            native_results = replays[Variant(variant.sink)]
            native = median([r.rate for r in native_results])
            verdict_text = (
                f"{rate / native:.2f} of native "
                f"{verdict(rate * FORMAT_COST >= native)} (>= {1 / FORMAT_COST:.2f})"
            )
            cpu_over_native = f"{cpu_with_server(results) / cpu_with_server(native_results):.2f}"
        rows.append(
            [
                f"bridge → {variant.label}",
                rate,
                spread([r.rate for r in results]),
                median([r.rate_with_startup for r in results]),
                median([r.cpu_per_100k() for r in results]),
                median([r.cpu_per_100k(net=True) for r in results]),
                max(r.peak_rss_mib for r in results),
                f"{rate / go_rate:.2f}",
                f"{rate / bare_rate:.2f}" if copies else "-",
                verdict_text,
                "-" if server_cpu is None else server_cpu,
                cpu_over_native,
            ]
        )
    headers = [
        "consumer",
        "events/s (replay, median)",
        "min–max",
        "events/s from process start",
        "CPU-s per 100k",
        "CPU-s per 100k net of start-up",
        "peak RSS (MiB)",
        "rate / etcdctl",
        "rate / bare client",
        "target (formats: vs native)",
        "sink server CPU-s per 100k",
        "bridge (net) + server CPU / native's",
    ]
    # The reference and baseline rows have no sink server nor format: their cells are empty.
    print_table(headers, [row + ["-"] * (len(headers) - len(row)) for row in rows])
    print(
        f"\n{events:,} events replayed from revision {history.start_revision}, "
        f"{arguments.repeat} time(s) per consumer (medians; peak RSS: the highest); bridge "
        "start-up CPU: "
        + ", ".join(f"{v.label} {r[0].startup_cpu_seconds:.2f} s" for v, r in replays.items())
        + f"; total {clock}"
    )
    if counted:
        print_counts(counted)
    print(lab.load_summary)


def print_counts(counted: Mapping[Variant, Counted]) -> None:
    """The table of the replays under callgrind: each format's instructions per event over
    its sink's native's, against the same target as the rates."""
    rows: list[list[object]] = []
    for variant, count in counted.items():
        native = counted[Variant(variant.sink)].per_event
        ratio = count.per_event / native
        rows.append(
            [
                f"bridge → {variant.label}",
                f"{count.per_event:,.0f}",
                f"{count.startup_instructions / 1e6:,.0f}",
                "-"
                if variant.format == NATIVE
                else f"{ratio:.3f} of native's {verdict(ratio <= FORMAT_COST)} (<= {FORMAT_COST})",
            ]
        )
    print()
    print_table(
        [
            "consumer (under callgrind)",
            "instructions per event, net of start-up",
            "start-up and stop (M instructions)",
            "target (formats: vs native)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
