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

    .venv/bin/python -m bench.latency [--rate 1000] [--seconds 30] [--sinks file,kafka,redis]
"""

import argparse
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
    verdict,
    wait_for_records,
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


def run_round(lab: Lab, sink: str, *, arguments: argparse.Namespace) -> Round:
    prefix = f"/latency/{sink}/"
    write_transactions(lab.endpoint, prefix=prefix.encode(), keys=KEYS, transactions=KEYS // 100)
    target = lab.target(sink, tag=f"latency-{sink}")
    bridge = lab.bridge(target, prefix=prefix, name=f"latency-{sink}").start()
    reader = target.reader()
    wait_for_records(reader, records=KEYS + 2 * target.marker_records, timeout=120, bridge=bridge)
    reader.close()
    seen_dir = lab.directory("seen")
    consumer = lab.agent(
        "consume",
        f"--config={orjson.dumps(target.config()).decode()}",
        f"--out={seen_dir / f'latency-{sink}-sink.json'}",
    )
    watcher = lab.agent(
        "watch",
        f"--endpoint={lab.endpoint}",
        f"--prefix={prefix}",
        f"--start-revision={current_revision(lab.endpoint) + 1}",
        f"--out={seen_dir / f'latency-{sink}-bare.json'}",
    )
    consumer.wait_ready()
    watcher.wait_ready()
    cpu_before = bridge.cpu_seconds()
    acks_path = seen_dir / f"latency-{sink}-acks.json"
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
    consumer.finish(until_revision=writer["last_revision"], count=writer["puts"], timeout=30)
    watcher.finish(until_revision=writer["last_revision"], count=writer["puts"], timeout=30)
    bridge.stop()
    written = orjson.loads(acks_path.read_bytes())
    acks = dict(zip(written["revisions"], written["times"], strict=True))
    result = Round(
        sink=sink,
        puts=writer["puts"],
        rate=writer["puts"] / writer["seconds"],
        sink_latency=Latencies.of(acks, seen_dir / f"latency-{sink}-sink.json"),
        bare=Latencies.of(acks, seen_dir / f"latency-{sink}-bare.json"),
        cpu_cores=cpu / writer["seconds"],
    )
    print(
        f"  {sink}: {result.puts:,} puts at {result.rate:,.0f}/s; sink p50 "
        f"{result.sink_latency.p50:.2f} ms p99 {result.sink_latency.p99:.2f} ms; bare watcher "
        f"p50 {result.bare.p50:.2f} ms",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="puts per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="per sink")
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
        rounds = [run_round(lab, sink, arguments=arguments) for sink in arguments.sinks]
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
    for r in rounds:
        for bare in (True, False):
            latencies = r.bare if bare else r.sink_latency
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
