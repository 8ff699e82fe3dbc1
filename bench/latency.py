"""Measurement 4, latency: from a put's acknowledgement to its event visible in each sink.

For each sink: the bridge streams a prefix (1,000 existing keys) into the sink; a writer
(``bench.agents paced``) puts at ``--rate`` puts/s for ``--seconds`` on a fixed schedule and
records each put's revision and the moment its acknowledgement arrived. At the same time, in
separate processes:

- a consumer of the sink (``bench.agents consume``) stamps when each revision became visible
  in it: the file's new complete lines (polled every 0.2 ms), ``XREAD BLOCK`` on the Redis
  stream, a Kafka consumer with assigned partitions (``fetch.wait.max.ms=10``);
- a bare watcher (the baseline, ``bench.agents watch``): one raw gRPC watch stream with
  ``prev_kv`` on the same prefix, stamping when each revision arrived.

Latency = sighting - acknowledgement, per put; p50, p99 and max over all puts. All processes
stamp with CLOCK_MONOTONIC. For Kafka, a floor is measured first in the same run: records
produced straight to the broker at the same rate for as long (the bridge's producer
settings, one flush per record) and read by the same consumer: what the broker and consumer
take on their own.
Target: p50 under 3 ms and p99 under 15 ms for every sink.

``--together`` runs one bridge streaming into every sink of ``--sinks`` at once (a pipeline
each, in one process) in a single round, with a consumer per sink: the latency of each sink
while the others share its process (issue 14 asks for it with three sinks and the local log).

    .venv/bin/python -m bench.latency [--rate 1000] [--seconds 30] [--sinks file,kafka,redis]
        [--together]
"""

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import (
    Lab,
    Stopwatch,
    add_common_arguments,
    current_revision,
    describe_machine,
    percentile,
    print_settings,
    print_table,
    snapshot_records,
    verdict,
    wait_for_sinks,
    write_transactions,
)
from tests.sinks.kafka import KafkaDestination

KEYS = 1000
TARGET_P50_MS = 3.0
TARGET_P99_MS = 15.0


@dataclass(frozen=True)
class Latencies:
    """Milliseconds from acknowledgement to sighting, one per put seen."""

    values: list[float]
    missing: int

    @classmethod
    def of(cls, acks: dict[int, float], path: Path) -> "Latencies":
        seen = orjson.loads(path.read_bytes())
        first: dict[int, float] = {}
        for revision, moment in zip(seen["revisions"], seen["times"], strict=True):
            first.setdefault(revision, moment)
        values = [(first[r] - ack) * 1000 for r, ack in acks.items() if r in first]
        return cls(values=values, missing=len(acks) - len(values))

    @property
    def p50(self) -> float:
        return percentile(self.values, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.values, 0.99)

    @property
    def max(self) -> float:
        return max(self.values, default=float("nan"))


@dataclass(frozen=True)
class Round:
    sink: str
    puts: int
    rate: float
    sink_latency: Latencies
    bare: Latencies
    cpu_cores: float
    """The bridge's CPU while the writer ran, in cores."""

    @property
    def met(self) -> bool:
        return (
            self.sink_latency.p50 < TARGET_P50_MS
            and self.sink_latency.p99 < TARGET_P99_MS
            and not self.sink_latency.missing
        )


def kafka_floor(lab: Lab, *, arguments: argparse.Namespace) -> Latencies:
    """The broker's and the consumer's share: records produced straight to a topic at the
    same rate (bridge-like producer settings, one flush each) and read by the same consumer."""
    floor_topic = lab.target("kafka", tag="latency-floor")
    assert isinstance(floor_topic, KafkaDestination)
    bootstrap, topic = floor_topic.bootstrap, floor_topic.topic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, floor_topic.partitions, 1)]).values():
        future.result()
    seen_dir = lab.directory("seen")
    consumer = lab.agent(
        "consume",
        f"--config={orjson.dumps(floor_topic.config()).decode()}",
        f"--out={seen_dir / 'floor.json'}",
    )
    consumer.wait_ready()
    seconds = arguments.seconds  # as long as a bridge round: Tansu slows as batches pile up
    writer = lab.agent(
        "kafka-floor",
        f"--bootstrap={bootstrap}",
        f"--topic={topic}",
        f"--rate={arguments.rate}",
        f"--seconds={seconds}",
        f"--out={seen_dir / 'floor-acks.json'}",
    ).result(timeout=seconds + 60)
    consumer.finish(until_revision=writer["last_revision"], count=writer["puts"], timeout=30)
    written = orjson.loads((seen_dir / "floor-acks.json").read_bytes())
    acks = dict(zip(written["revisions"], written["times"], strict=True))
    floor = Latencies.of(acks, seen_dir / "floor.json")
    print(f"  kafka floor (no bridge): p50 {floor.p50:.2f} ms p99 {floor.p99:.2f} ms", flush=True)
    return floor


def run_round(lab: Lab, sinks: Sequence[str], *, arguments: argparse.Namespace) -> list[Round]:
    """One bridge streaming a prefix of its own into ``sinks`` (one pipeline each) while the
    writer runs; a Round per sink, sharing the bare watcher and the bridge's CPU."""
    label = "-".join(sinks)
    prefix = f"/latency/{label}/"
    write_transactions(lab.endpoint, prefix=prefix.encode(), keys=KEYS, transactions=KEYS // 100)
    targets = [lab.target(sink, tag=f"latency-{label}-{sink}") for sink in sinks]
    bridge = lab.bridge(targets, prefix=prefix, name=f"latency-{label}").start()
    readers = [target.reader() for target in targets]
    records = snapshot_records(targets, keys=KEYS)
    wait_for_sinks(list(zip(readers, records, strict=True)), timeout=120, bridge=bridge)
    for reader in readers:
        reader.close()
    seen_dir = lab.directory("seen")
    consumers = [
        lab.agent(
            "consume",
            f"--config={orjson.dumps(target.config()).decode()}",
            f"--out={seen_dir / f'latency-{label}-{sink}.json'}",
        )
        for sink, target in zip(sinks, targets, strict=True)
    ]
    watcher = lab.agent(
        "watch",
        f"--endpoint={lab.endpoint}",
        f"--prefix={prefix}",
        f"--start-revision={current_revision(lab.endpoint) + 1}",
        f"--out={seen_dir / f'latency-{label}-bare.json'}",
    )
    for consumer in consumers:
        consumer.wait_ready()
    watcher.wait_ready()
    cpu_before = bridge.cpu_seconds()
    acks_path = seen_dir / f"latency-{label}-acks.json"
    writer = lab.agent(
        "paced",
        f"--endpoint={lab.endpoint}",
        f"--prefix={prefix}",
        f"--keys={KEYS}",
        f"--rate={arguments.rate}",
        f"--seconds={arguments.seconds}",
        f"--out={acks_path}",
    ).result(timeout=arguments.seconds + 60)
    cpu = bridge.cpu_seconds() - cpu_before
    for consumer in [*consumers, watcher]:
        consumer.finish(until_revision=writer["last_revision"], count=writer["puts"], timeout=30)
    bridge.stop()
    written = orjson.loads(acks_path.read_bytes())
    acks = dict(zip(written["revisions"], written["times"], strict=True))
    bare = Latencies.of(acks, seen_dir / f"latency-{label}-bare.json")
    rounds = [
        Round(
            sink=sink if len(sinks) == 1 else f"{sink} (with {label})",
            puts=writer["puts"],
            rate=writer["puts"] / writer["seconds"],
            sink_latency=Latencies.of(acks, seen_dir / f"latency-{label}-{sink}.json"),
            bare=bare,
            cpu_cores=cpu / writer["seconds"],
        )
        for sink in sinks
    ]
    for result in rounds:
        print(
            f"  {result.sink}: {result.puts:,} puts at {result.rate:,.0f}/s; sink p50 "
            f"{result.sink_latency.p50:.2f} ms p99 {result.sink_latency.p99:.2f} ms; bare "
            f"watcher p50 {result.bare.p50:.2f} ms",
            flush=True,
        )
    return rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="puts per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="per round")
    parser.add_argument(
        "--together", action="store_true", help="one bridge into every sink, in one round"
    )
    add_common_arguments(parser)
    arguments = parser.parse_args(argv)
    clock = Stopwatch()
    describe_machine("Latency (measurement 4)")
    print(
        f"writer: {arguments.rate:g} puts/s of 100-byte values over {KEYS:,} existing keys for "
        f"{arguments.seconds:g} s per sink; watch with prev_kv"
    )
    print_settings(arguments)
    with Lab.for_run("latency", arguments) as lab:
        lab.etcd()
        floor = kafka_floor(lab, arguments=arguments) if "kafka" in arguments.sinks else None
        groups = [arguments.sinks] if arguments.together else [[s] for s in arguments.sinks]
        rounds = [r for sinks in groups for r in run_round(lab, sinks, arguments=arguments)]
    print()
    rows: list[list[object]] = []
    if floor is not None:
        rows.append(
            [
                "Kafka broker + consumer, no bridge",
                floor.p50,
                floor.p99,
                floor.max,
                len(floor.values),
                floor.missing,
                "-",
                "(floor)",
            ]
        )
    shown_bare: Latencies | None = None
    for r in rounds:
        for bare in (True, False):
            if bare and r.bare is shown_bare:
                continue  # the round's bare watcher, already shown with its first sink
            latencies = r.bare if bare else r.sink_latency
            shown_bare = r.bare
            rows.append(
                [
                    f"bare watcher ({r.sink} round)" if bare else f"bridge → {r.sink}",
                    latencies.p50,
                    latencies.p99,
                    latencies.max,
                    len(latencies.values),
                    latencies.missing,
                    "-" if bare else r.cpu_cores,
                    "(baseline)" if bare else verdict(r.met),
                ]
            )
    print_table(
        [
            "consumer",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "puts seen",
            "missing",
            "bridge CPU (cores)",
            "target",
        ],
        rows,
    )
    print(
        f"\ntargets: p50 < {TARGET_P50_MS:g} ms and p99 < {TARGET_P99_MS:g} ms for every sink; "
        f"total {clock}"
    )
    print(lab.load_summary)


if __name__ == "__main__":
    main()
