"""Measurement 3, snapshot: a prefix of 1,000,000 keys with 100-byte values into each sink.

The prefix is loaded once (transactions of 100 puts, 16 in flight) and reused by every sink.
For each sink a fresh bridge takes its initial snapshot: the whole prefix read in pages at
one pinned revision (``BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES``, default), each key an event, into
a sink that starts empty; the benchmark polls the sink (every 5 ms) until it holds every key
and both markers.

Figures, per sink: keys/s from the moment the bridge logs ``snapshot starting`` to the last
record visible in the sink, keys/s from the bridge's process start, the bridge's peak RSS
(VmHWM) and CPU-seconds. Baseline in the same run, on the same keys: ``etcdctl get --prefix``
(one response holding every key: unbounded memory) printing to a pipe, its time, keys/s, CPU
and peak RSS. For a sink with a bare client (``bench.common.bare_baseline``: NATS,
PostgreSQL), the records the bridge wrote are then copied by that client alone into a fresh
destination, and the bridge's rate is shown over the copy's too. Target: >= 50,000 keys/s
(aiming for 100,000; >= 30,000 for NATS and PostgreSQL) with peak RSS under 250 MB.

    .venv/bin/python -m bench.snapshot [--keys 1000000] [--sinks file,kafka,redis]
"""

import argparse
from dataclasses import dataclass

from bench.common import (
    BareRun,
    Lab,
    Stopwatch,
    add_common_arguments,
    bare_baseline,
    count_keys,
    deliver,
    describe_machine,
    etcdctl,
    print_settings,
    print_table,
    snapshot_records,
    verdict,
    write_transactions,
)
from tests.sinks.base import Destination

PREFIX = "/snap/"
TARGET_RATE = 50_000
TARGET_RATES = {"nats": 30_000, "postgres": 30_000}
"""keys/s for the sinks whose target is not ``TARGET_RATE``."""
AIM_RATE = 100_000
TARGET_RSS_MIB = 250 * 1_000_000 / 2**20
"""250 MB, in MiB (VmHWM is reported in KiB)."""
STARTING = " snapshot starting "


@dataclass(frozen=True)
class SnapshotRun:
    sink: str
    keys: int
    snapshot_seconds: float
    total_seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    target: Destination
    """Where the snapshot went."""
    pipeline: str

    @property
    def rate(self) -> float:
        return self.keys / self.snapshot_seconds

    @property
    def target_rate(self) -> int:
        return TARGET_RATES.get(self.sink, TARGET_RATE)

    @property
    def met(self) -> bool:
        return self.rate >= self.target_rate and self.peak_rss_mib < TARGET_RSS_MIB


def snapshot_into(lab: Lab, sink: str, *, keys: int) -> SnapshotRun:
    target = lab.target(sink, tag=f"snapshot-{sink}")
    pipeline = f"snapshot-{sink}"
    delivery = deliver(
        lab,
        [target],
        prefix=PREFIX,
        name=pipeline,
        records=snapshot_records([target], keys=keys),
        mark=STARTING,
    )
    return SnapshotRun(
        sink=sink,
        keys=keys,
        snapshot_seconds=delivery.seconds(),
        total_seconds=delivery.total_seconds,
        cpu_seconds=delivery.cpu_seconds,
        peak_rss_mib=delivery.peak_rss_mib,
        target=target,
        pipeline=pipeline,
    )


def load_prefix(lab: Lab, *, prefix: str, keys: int, value_bytes: int) -> None:
    """Write ``keys`` keys of ``value_bytes`` under ``prefix`` (transactions of 100, 16 in
    flight), check etcd holds them, and say how fast that went."""
    loaded = write_transactions(
        lab.endpoint,
        prefix=prefix.encode(),
        keys=keys,
        transactions=keys // 100,
        value_bytes=value_bytes,
        in_flight=16,
    )
    assert count_keys(lab.endpoint, prefix.encode()) == keys
    print(
        f"prefix {prefix}: {keys:,} keys of {value_bytes} bytes, loaded in "
        f"{loaded.seconds:.1f} s ({keys / loaded.seconds:,.0f} keys/s, transactions of 100)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot", description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    add_common_arguments(parser)
    arguments = parser.parse_args(argv)
    clock = Stopwatch()
    describe_machine("Snapshot (measurement 3)")
    print_settings(arguments)
    keys = arguments.keys
    with Lab.for_run("snapshot", arguments) as lab:
        load_prefix(lab, prefix=PREFIX, keys=keys, value_bytes=arguments.value_bytes)
        go = etcdctl(lab.etcd().url, "get", "--prefix", PREFIX)
        if go.lines != 2 * keys:
            raise RuntimeError(f"etcdctl printed {go.lines} lines, expected {2 * keys}")
        print(f"  etcdctl get --prefix: {go.seconds:.2f} s", flush=True)
        runs = []
        bares: dict[str, BareRun] = {}
        for sink in arguments.sinks:
            run = snapshot_into(lab, sink, keys=keys)
            print(
                f"  bridge → {sink}: {run.rate:,.0f} keys/s, peak RSS {run.peak_rss_mib:.0f} MiB",
                flush=True,
            )
            runs.append(run)
            bare = bare_baseline(
                lab, run.target, pipeline=run.pipeline, tag=f"snapshot-bare-{sink}"
            )
            if bare is not None:
                print(f"  {sink}, {bare.client}: {bare.rate:,.0f} records/s", flush=True)
                bares[sink] = bare
    print()
    rows: list[list[object]] = [
        [
            "etcdctl get --prefix (baseline)",
            go.seconds,
            keys / go.seconds,
            keys / go.seconds,
            go.cpu_seconds,
            go.peak_rss_mib,
            "1.00",
            "-",
            "(baseline)",
        ]
    ]
    go_rate = keys / go.seconds
    for r in runs:
        bare = bares.get(r.sink)
        if bare is not None:
            rows.append(
                [
                    f"{r.sink}: {bare.client}, same records (baseline)",
                    bare.seconds,
                    bare.rate,
                    "-",
                    bare.cpu_seconds,
                    "-",
                    f"{bare.rate / go_rate:.2f}",
                    "1.00",
                    "(baseline)",
                ]
            )
        rows.append(
            [
                f"bridge → {r.sink}",
                r.snapshot_seconds,
                r.rate,
                r.keys / r.total_seconds,
                r.cpu_seconds,
                r.peak_rss_mib,
                f"{r.rate / go_rate:.2f}",
                "-" if bare is None else f"{r.rate / bare.rate:.2f}",
                f"{verdict(r.met)} (>= {r.target_rate:,}/s)"
                + (" (and >= 100k/s)" if r.rate >= AIM_RATE else ""),
            ]
        )
    print_table(
        [
            "reader",
            "seconds",
            "keys/s",
            "keys/s from process start",
            "CPU-s",
            "peak RSS (MiB)",
            "rate / etcdctl",
            "rate / bare client",
            "target (keys/s), RSS < 250 MB",
        ],
        rows,
    )
    print(f"\ntotal {clock}")
    print(lab.load_summary)


if __name__ == "__main__":
    main()
