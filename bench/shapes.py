"""Measurement 6, data shapes: the revisions and values that break a bridge built for small keys.

Why: measurements 1-3 move 100-byte values in revisions of at most 100 changes, so nothing in
them is big at any one moment, and a bridge that holds a whole watch response, a whole
revision or a whole batch looks frugal there. Two shapes found in real prefixes are big, and
the target (peak RSS < 250 MB with three sinks) must hold on them too:

1. **One huge revision.** ``--deletes`` keys of 100 bytes are loaded under a prefix
   (transactions of 100 puts) and snapshotted by one bridge into every sink; then one
   ``DeleteRange`` removes the whole prefix: ONE revision of N delete events, each carrying
   its previous value. etcd sends a revision in one watch response whatever its size, unless
   the watcher asks for fragments (the bridge does once a response is over its limit). Figures:
   from the delete's acknowledgement to the last delete event visible in every sink, delete
   events/s, and the bridge's peak RSS during the delete (its high-water mark is reset once
   the snapshot is in, through ``clear_refs``); the snapshot before it is reported too (N small
   keys, every sink in one process). Baseline, afterwards on the same revision: ``etcdctl
   watch --prefix --prev-kv --rev R``, from its process start to its last line.
2. **Large values.** ``--large-values`` keys of 1 MiB of random bytes (not UTF-8, so base64 in
   the JSON, ~1.4 MB an event), snapshotted into every sink by a fresh bridge (a 4 MiB page is
   4 keys): keys/s, MiB/s of values, peak RSS; baseline ``etcdctl get --prefix`` (rate and its
   RSS). Then, with that bridge stopped, every key is overwritten once (a revision each: a
   1 MiB value and a 1 MiB previous value, ~2.8 MB of JSON) and the bridge is restarted: the
   replay's rate, from its ``watching`` log line, and peak RSS; baseline ``etcdctl watch
   --prev-kv --rev`` of the same history. The values hold no newline byte, so etcdctl's output
   can be counted in lines. Kafka refuses records over ``message.max.bytes`` (1 MB), so this
   shape sets ``BRIDGE_KAFKA__PROPERTIES__MESSAGE_MAX_BYTES`` (printed), as an operator storing
   such values must, unless ``--bridge-env`` sets Kafka properties itself.
3. **The reference**: the small-keys snapshot of measurement 3 by the same code
   (``bench.snapshot.snapshot_into``, one bridge per sink), ``--small-keys`` keys, beside
   ``etcdctl get --prefix`` and beside the rate BENCHMARKS.md publishes for it (its target:
   no lower).

Shapes 1 and 2 run ONE bridge process with every sink of ``--sinks`` (a pipeline each, each with
its own snapshot and watch), since the target is the process's. Everything is read back from
the sinks, polled every 5 ms. A bridge whose peak RSS passes ``--rss-limit`` is killed and its
shape reported failed, with the RSS it had reached, so that the machine survives the code
being measured. Shrink for a quick try (``--deletes 100000 --large-values 50 --small-keys
100000``); 0 skips a shape.

    .venv/bin/python -m bench.shapes [--deletes 1000000] [--large-values 400]
        [--small-keys 1000000] [--rss-limit 4096] [--sinks file,kafka,redis]
"""

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from bench import snapshot
from bench.burst import WATCHING
from bench.common import (
    BaselineRun,
    Bridge,
    Lab,
    Loaded,
    Stopwatch,
    add_common_arguments,
    current_revision,
    delete_prefix,
    describe_machine,
    etcdctl,
    print_settings,
    print_table,
    verdict,
    wait_for_sinks,
    write_transactions,
)
from tests.sinks.base import Destination, SinkReader

DELETES_PREFIX = "/shapes/deletes/"
LARGE_PREFIX = "/shapes/large/"
TXN_KEYS = 100
SMALL_VALUE_BYTES = 100
MIB = 1 << 20
LARGE_VALUE_BYTES = MIB
TARGET_RSS_MIB = snapshot.TARGET_RSS_MIB
PUBLISHED_SNAPSHOT_RATES = {"file": 135_590, "kafka": 85_494, "redis": 90_729}
"""keys/s of measurement 3 in BENCHMARKS.md (1,000,000 keys, commit 0d223d0): the reference's
floor, for the sinks it was published for."""
ETCDCTL_WATCH_LINES = 5
"""``etcdctl watch --prev-kv`` prints an event as 5 lines: type, previous key and value, key
and value (empty for a delete)."""


class RssLimitError(RuntimeError):
    """The bridge under test passed ``--rss-limit``."""


@dataclass(frozen=True)
class Result:
    """One row: a bridge process (or a baseline) delivering one shape."""

    shape: str
    reader: str
    events: int
    payload_bytes: int
    """Value bytes the events carry (values and previous values), for MiB/s."""
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    peak_rss_mib: float = float("nan")
    per_sink: dict[str, float] = field(default_factory=dict)
    """Seconds until each sink held its last record."""
    failure: str = ""
    baseline: bool = False
    floor_rate: float = 0.0
    """A rate it must reach (the reference: BENCHMARKS.md's), 0 for none."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def mib_per_second(self) -> float:
        return self.payload_bytes / MIB / self.seconds if self.seconds > 0 else float("nan")

    def target(self) -> str:
        if self.baseline:
            return "(baseline)"
        if self.failure:
            return "**FAILED**: " + self.failure.splitlines()[0][:100]
        missed = []
        if not self.peak_rss_mib < TARGET_RSS_MIB:
            missed.append(f"RSS {self.peak_rss_mib:.0f} MiB")
        if self.rate < self.floor_rate:
            missed.append(f"{self.rate:,.0f}/s < {self.floor_rate:,.0f}/s of BENCHMARKS.md")
        return verdict(not missed) + (f" ({'; '.join(missed)})" if missed else "")


def etcdctl_result(
    shape: str, reader: str, run: BaselineRun, *, events: int, payload: int
) -> Result:
    return Result(
        shape=shape,
        reader=reader,
        events=events,
        payload_bytes=payload,
        seconds=run.seconds,
        cpu_seconds=run.cpu_seconds,
        peak_rss_mib=run.peak_rss_mib,
        baseline=True,
    )


class Pipelines:
    """One target per sink for one shape, and their readers (kept across the shape's bridge
    processes: what a sink holds is counted once, as it grows). A context manager that closes
    the readers."""

    def __init__(self, lab: Lab, sinks: Sequence[str], *, tag: str) -> None:
        self.targets: list[Destination] = [
            lab.target(sink, tag=f"shapes-{tag}-{sink}") for sink in sinks
        ]
        self.readers: list[SinkReader] = [target.reader() for target in self.targets]
        self.per_delete = [target.records_per_delete(lab.bridge_env) for target in self.targets]
        """Records a delete event becomes in each sink (Kafka: and its tombstone, if asked)."""

    def snapshot_records(self, keys: int) -> list[int]:
        """What each sink holds once a snapshot of ``keys`` keys is in: keys and markers."""
        return [keys + 2 * target.marker_records for target in self.targets]

    def __enter__(self) -> "Pipelines":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for reader in self.readers:
            reader.close()


def deliver(
    bridge: Bridge,
    pipelines: Pipelines,
    *,
    shape: str,
    records: list[int],
    start: str | float,
    events: int,
    payload_bytes: int,
    rss_limit: float,
    cpu_before: float = 0.0,
) -> Result:
    """Wait until every sink of ``pipelines`` holds its ``records``; the figures of the
    ``events`` that took, timed from ``start``: a moment, or the first time the bridge's log
    holds that text. A bridge that exits, stalls or passes ``rss_limit`` is a failure, and is
    stopped."""
    started = start if isinstance(start, float) else 0.0

    def on_poll(now: float) -> None:
        nonlocal started
        if not started and isinstance(start, str) and start in bridge.process.log_text():
            started = now
        if bridge.process.running and (peak := bridge.peak_rss_mib()) > rss_limit:
            raise RssLimitError(f"peak RSS {peak:,.0f} MiB passed --rss-limit {rss_limit:,.0f}")

    sinks = [target.name for target in pipelines.targets]
    reader = "bridge → " + ",".join(sinks) + " (one process)"
    # slower than 2,500 events/s or 4 MiB/s is a failure. A huge revision of small keys comes
    # through etcd's fragments, which etcd cuts in quadratic time: about 5k events/s with
    # three watchers cutting at once on 2 cores (README, "Large revisions and values").
    timeout = 60 + events / 2_500 + payload_bytes / (4 * MIB)
    try:
        seen = wait_for_sinks(
            list(zip(pipelines.readers, records, strict=True)),
            timeout=timeout,
            bridge=bridge,
            on_poll=on_poll,
        )
    except (RuntimeError, TimeoutError) as error:
        peak = bridge.peak_rss_mib() if bridge.process.running else float("nan")
        bridge.process.kill()
        print(f"  ! {shape}: {error}", flush=True)
        return Result(
            shape=shape,
            reader=reader,
            events=events,
            payload_bytes=payload_bytes,
            peak_rss_mib=peak,
            failure=str(error),
        )
    started = started or bridge.started_at
    per_sink = {sink: last - started for sink, (_, last) in zip(sinks, seen, strict=True)}
    result = Result(
        shape=shape,
        reader=reader,
        events=events,
        payload_bytes=payload_bytes,
        seconds=max(per_sink.values()),
        cpu_seconds=bridge.cpu_seconds() - cpu_before,
        peak_rss_mib=bridge.peak_rss_mib(),
        per_sink=per_sink,
    )
    print(
        f"  bridge, {shape}: {result.rate:,.0f} events/s, {result.mib_per_second:,.1f} MiB/s, "
        f"peak RSS {result.peak_rss_mib:,.0f} MiB",
        flush=True,
    )
    return result


def small_keys(lab: Lab, sinks: Sequence[str], *, keys: int) -> list[Result]:
    """The reference: measurement 3's snapshot, one bridge per sink, and its baseline."""
    shape = f"reference: snapshot of {keys:,} small keys (measurement 3)"
    loaded = write_transactions(
        lab.endpoint,
        prefix=snapshot.PREFIX.encode(),
        keys=keys,
        transactions=keys // TXN_KEYS,
        value_bytes=SMALL_VALUE_BYTES,
        in_flight=16,
    )
    print(f"small keys: {keys:,} keys of 100 bytes loaded in {loaded.seconds:.1f} s", flush=True)
    payload = keys * SMALL_VALUE_BYTES
    go = etcdctl(lab.etcd().url, "get", "--prefix", snapshot.PREFIX)
    if go.lines != 2 * keys:
        raise RuntimeError(f"etcdctl printed {go.lines} lines, expected {2 * keys}")
    results = [etcdctl_result(shape, "etcdctl get --prefix", go, events=keys, payload=payload)]
    for sink in sinks:
        reader = f"bridge → {sink} (a process per sink)"
        try:
            run = snapshot.snapshot_into(lab, sink, keys=keys)
        except (RuntimeError, TimeoutError) as error:
            print(f"  ! {shape}, {sink}: {error}", flush=True)
            results.append(Result(shape, reader, keys, payload, failure=str(error)))
            continue
        print(f"  bridge → {sink}: {run.rate:,.0f} keys/s, peak RSS {run.peak_rss_mib:.0f} MiB")
        results.append(
            Result(
                shape=shape,
                reader=reader,
                events=keys,
                payload_bytes=payload,
                seconds=run.snapshot_seconds,
                cpu_seconds=run.cpu_seconds,
                peak_rss_mib=run.peak_rss_mib,
                per_sink={sink: run.snapshot_seconds},
                floor_rate=PUBLISHED_SNAPSHOT_RATES.get(sink, 0.0),
            )
        )
    return results


def huge_revision(lab: Lab, sinks: Sequence[str], *, keys: int, rss_limit: float) -> list[Result]:
    """Shape 1: a snapshot of ``keys`` small keys, then one revision deleting them all."""
    prefix = DELETES_PREFIX.encode()
    loaded = write_transactions(
        lab.endpoint, prefix=prefix, keys=keys, transactions=keys // TXN_KEYS, in_flight=16
    )
    print(f"deletes: {keys:,} keys of 100 bytes loaded in {loaded.seconds:.1f} s", flush=True)
    payload = keys * SMALL_VALUE_BYTES
    shape = f"one revision of {keys:,} deletes (with previous values)"
    with Pipelines(lab, sinks, tag="deletes") as pipelines:
        bridge = lab.bridge(pipelines.targets, prefix=DELETES_PREFIX, name="shapes-deletes")
        bridge.start()
        held = pipelines.snapshot_records(keys)
        first = deliver(
            bridge,
            pipelines,
            shape=f"snapshot of {keys:,} small keys before the delete",
            records=held,
            start=snapshot.STARTING,
            events=keys,
            payload_bytes=payload,
            rss_limit=rss_limit,
        )
        if first.failure:
            return [first]
        if not bridge.reset_peak_rss():
            shape += " (peak RSS since the bridge started: clear_refs refused)"
        cpu_before = bridge.cpu_seconds()
        asked = time.monotonic()
        deleted, revision = delete_prefix(lab.endpoint, prefix)
        acknowledged = time.monotonic()
        if deleted != keys:
            raise RuntimeError(f"DeleteRange deleted {deleted} keys, expected {keys}")
        print(
            f"  DeleteRange: {deleted:,} keys at revision {revision}, acknowledged in "
            f"{acknowledged - asked:.2f} s (the clock starts there)",
            flush=True,
        )
        deletes = deliver(
            bridge,
            pipelines,
            shape=shape,
            records=[count + keys * n for count, n in zip(held, pipelines.per_delete, strict=True)],
            start=acknowledged,
            events=keys,
            payload_bytes=payload,
            rss_limit=rss_limit,
            cpu_before=cpu_before,
        )
        if not deletes.failure:
            bridge.stop()
    go = etcdctl(
        lab.etcd().url,
        "watch",
        "--prefix",
        "--prev-kv",
        f"--rev={revision}",
        DELETES_PREFIX,
        until_lines=ETCDCTL_WATCH_LINES * keys,
        timeout=60 + keys / 5_000,
    )
    print(f"  etcdctl watch: {keys / go.seconds:,.0f} events/s", flush=True)
    baseline = etcdctl_result(
        shape, "etcdctl watch --prev-kv --rev", go, events=keys, payload=payload
    )
    return [first, baseline, deletes]


def random_values(size: int, *, seed: int) -> Callable[[int], bytes]:
    """Random bytes (almost surely not UTF-8) without a newline, so that etcdctl prints one
    line per value."""
    generator = random.Random(seed)
    return lambda _number: generator.randbytes(size).replace(b"\n", b"\x0b")


def large_values(lab: Lab, sinks: Sequence[str], *, keys: int, rss_limit: float) -> list[Result]:
    """Shape 2: a snapshot of ``keys`` 1 MiB values, then a replay overwriting each once."""
    prefix = LARGE_PREFIX.encode()
    values = random_values(LARGE_VALUE_BYTES, seed=keys)

    def write_each(first: int) -> Loaded:
        """One put per key, numbered from ``first``: a revision per 1 MiB value."""
        return write_transactions(
            lab.endpoint,
            prefix=prefix,
            keys=keys,
            transactions=keys,
            txn_keys=1,
            in_flight=4,
            first=first,
            values=values,
        )

    loaded = write_each(0)
    print(f"large values: {keys:,} keys of 1 MiB loaded in {loaded.seconds:.1f} s", flush=True)
    payload = keys * LARGE_VALUE_BYTES
    snapshot_shape = f"snapshot of {keys:,} values of 1 MiB"
    replay_shape = f"replay of {keys:,} puts of 1 MiB over 1 MiB"
    go_get = etcdctl(lab.etcd().url, "get", "--prefix", LARGE_PREFIX, timeout=60 + keys / 10)
    if go_get.lines != 2 * keys:
        raise RuntimeError(f"etcdctl printed {go_get.lines} lines, expected {2 * keys}")
    print(f"  etcdctl get --prefix: {keys / go_get.seconds:,.0f} keys/s", flush=True)
    results = [
        etcdctl_result(snapshot_shape, "etcdctl get --prefix", go_get, events=keys, payload=payload)
    ]
    with Pipelines(lab, sinks, tag="large") as pipelines:
        held = pipelines.snapshot_records(keys)
        settings = {  # what a sink needs for ~2.8 MB records, unless --bridge-env says
            variable: value
            for target in pipelines.targets
            for variable, value in target.env(**target.large_values).items()
            if variable not in lab.bridge_env
        }

        def bridge() -> Bridge:
            return lab.bridge(
                pipelines.targets, prefix=LARGE_PREFIX, name="shapes-large", **settings
            ).start()

        first = bridge()
        results.append(
            deliver(
                first,
                pipelines,
                shape=snapshot_shape,
                records=held,
                start=snapshot.STARTING,
                events=keys,
                payload_bytes=payload,
                rss_limit=rss_limit,
            )
        )
        if results[-1].failure:
            return results
        first.stop()
        overwritten = write_each(keys)
        if overwritten.last_revision != current_revision(lab.endpoint):
            raise RuntimeError("something else wrote to etcd")
        go_watch = etcdctl(
            lab.etcd().url,
            "watch",
            "--prefix",
            "--prev-kv",
            f"--rev={overwritten.first_revision}",
            LARGE_PREFIX,
            until_lines=ETCDCTL_WATCH_LINES * keys,
            timeout=60 + keys / 10,
        )
        print(f"  etcdctl watch: {keys / go_watch.seconds:,.0f} events/s", flush=True)
        results.append(
            etcdctl_result(
                replay_shape,
                "etcdctl watch --prev-kv --rev",
                go_watch,
                events=keys,
                payload=2 * payload,
            )
        )
        again = bridge()
        results.append(
            deliver(
                again,
                pipelines,
                shape=replay_shape,
                records=[count + keys for count in held],
                start=WATCHING,
                events=keys,
                payload_bytes=2 * payload,
                rss_limit=rss_limit,
            )
        )
        if not results[-1].failure:
            again.stop()
    if settings:
        print("  (large values: " + ", ".join(f"{n}={v}" for n, v in settings.items()) + ")")
    return results


def print_results(results: list[Result]) -> None:
    """One table; a bridge's rate is compared with the baseline of the same shape, if any."""
    baselines = {result.shape: result.rate for result in results if result.baseline}
    rows: list[list[object]] = []
    for result in results:
        baseline_rate = baselines.get(result.shape, float("nan"))
        rows.append(
            [
                result.shape,
                result.reader,
                result.events,
                result.seconds,
                result.rate,
                result.mib_per_second,
                result.rate / baseline_rate,
                result.cpu_seconds,
                result.peak_rss_mib,
                " · ".join(f"{sink} {seconds:.2f}" for sink, seconds in result.per_sink.items())
                or "-",
                result.target(),
            ]
        )
    print_table(
        [
            "shape",
            "reader",
            "events",
            "seconds",
            "events/s",
            "MiB/s of values",
            "rate / etcdctl",
            "CPU-s",
            "peak RSS (MiB)",
            "per sink (s)",
            "target: RSS < 250 MB with 3 sinks; reference rate >= BENCHMARKS.md",
        ],
        rows,
    )


def hundreds(value: str) -> int:
    number = int(value)
    if number < 0 or number % TXN_KEYS:
        raise argparse.ArgumentTypeError(f"use a multiple of {TXN_KEYS} (0 skips)")
    return number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.shapes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--deletes", type=hundreds, default=1_000_000, help="keys deleted in one revision"
    )
    parser.add_argument(
        "--large-values", type=int, default=400, help="keys holding 1 MiB values (0 skips)"
    )
    parser.add_argument(
        "--small-keys", type=hundreds, default=1_000_000, help="keys of the reference snapshot"
    )
    parser.add_argument(
        "--rss-limit",
        type=float,
        default=4096,
        metavar="MIB",
        help="kill a bridge whose peak RSS passes this (its shape is reported failed)",
    )
    add_common_arguments(parser)
    arguments = parser.parse_args(argv)
    clock = Stopwatch()
    describe_machine("Data shapes (measurement 6)")
    print_settings(arguments)
    results: list[Result] = []
    with Lab.for_run("shapes", arguments) as lab:
        if arguments.small_keys:
            results += small_keys(lab, arguments.sinks, keys=arguments.small_keys)
        if arguments.deletes:
            results += huge_revision(
                lab, arguments.sinks, keys=arguments.deletes, rss_limit=arguments.rss_limit
            )
        if arguments.large_values > 0:
            results += large_values(
                lab, arguments.sinks, keys=arguments.large_values, rss_limit=arguments.rss_limit
            )
    print()
    print_results(results)
    if arguments.small_keys and arguments.small_keys != 1_000_000:
        print(
            "\n(BENCHMARKS.md's snapshot rates are for 1,000,000 keys; "
            f"these are for {arguments.small_keys:,})"
        )
    failures = [result for result in results if result.failure]
    for result in failures:
        print(f"\n{result.shape}, {result.reader} failed:\n{result.failure}")
    print(f"\ntotal {clock}")
    print(lab.load_summary)


if __name__ == "__main__":
    main()
