"""Measurement 1, live keep-up: can the bridge follow etcd at the fastest rate etcd takes puts?

For each round a writer (``bench.agents flood``: grpc.aio, ``--in-flight`` puts outstanding)
overwrites keys of a pre-loaded prefix for ``--seconds``, so every event carries a previous
value and etcd serves each watch with ``prev_kv``. A consumer process reads what reaches the
sink back from the sink and stamps when it saw each revision. Rounds:

- ``bare watcher`` (the baseline): one raw gRPC watch stream with ``prev_kv`` and no sink, to
  show what etcd itself lets a watcher keep up with under this writer on this machine;
- one round per sink: the bridge (``python -m bridge run``) streams the prefix into it.

Figures, per round: the writer's rate (puts acknowledged / its duration); the delivered rate
(events visible in the sink by the writer's last acknowledgement / the same duration); their
ratio; the lag at the end, in revisions (last revision written minus the newest visible at the
writer's last acknowledgement) and in seconds (from that acknowledgement until the sink shows
the last revision). Targets: ratio >= 0.99 and lag under 1 s for every sink.

    .venv/bin/python -m bench.keepup [--seconds 30] [--sinks file,kafka,redis]
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    Bridge,
    Lab,
    Stopwatch,
    add_common_arguments,
    compact,
    current_revision,
    describe_machine,
    print_settings,
    print_table,
    verdict,
    wait_for_records,
    write_transactions,
)

TARGET_RATIO = 0.99
TARGET_LAG_SECONDS = 1.0


@dataclass(frozen=True)
class Round:
    """One round's figures."""

    name: str
    writer_rate: float
    delivered_rate: float
    ratio: float
    lag_revisions: int
    lag_seconds: float
    cpu_cores: float
    peak_rss_mib: float
    missing: int
    duplicates: int

    @property
    def met(self) -> bool:
        return self.ratio >= TARGET_RATIO and self.lag_seconds < TARGET_LAG_SECONDS


def analyze(
    name: str, writer: dict[str, Any], seen: dict[str, Any], *, cpu: float, rss: float
) -> Round:
    revisions: list[int] = seen["revisions"]
    times: list[float] = seen["times"]
    last_ack, last_revision = writer["last_ack"], writer["last_revision"]
    duration = last_ack - writer["started"]
    at_end = [
        revision for revision, moment in zip(revisions, times, strict=True) if moment <= last_ack
    ]
    newest_at_end = max(at_end, default=writer["first_revision"] - 1)
    caught_up = next(
        (
            moment
            for revision, moment in zip(revisions, times, strict=True)
            if revision >= last_revision
        ),
        None,
    )
    written = set(range(writer["first_revision"], last_revision + 1))
    distinct = set(revisions)
    return Round(
        name=name,
        writer_rate=writer["puts"] / duration,
        delivered_rate=len(at_end) / duration,
        ratio=len(at_end) / writer["puts"],
        lag_revisions=last_revision - newest_at_end,
        lag_seconds=float("nan") if caught_up is None else caught_up - last_ack,
        cpu_cores=cpu / duration,
        peak_rss_mib=rss,
        missing=len(written - distinct),
        duplicates=len(revisions) - len(distinct),
    )


def run_round(lab: Lab, name: str, *, arguments: argparse.Namespace) -> Round:
    tag = name.replace(" ", "-")
    prefix = f"/keepup/{tag}/"
    keys = arguments.keys
    write_transactions(lab.endpoint, prefix=prefix.encode(), keys=keys, transactions=keys // 100)
    out = lab.directory("seen") / f"keepup-{tag}.json"
    bridge: Bridge | None = None
    if name == "bare watcher":
        consumer = lab.agent(
            "watch",
            f"--endpoint={lab.endpoint}",
            f"--prefix={prefix}",
            f"--start-revision={current_revision(lab.endpoint) + 1}",
            f"--out={out}",
        )
    else:
        target = lab.target(name, tag=f"keepup-{tag}")
        bridge = lab.bridge(target, prefix=prefix, name=f"keepup-{tag}").start()
        reader = target.reader()
        wait_for_records(
            reader, records=keys + 2 * target.marker_records, timeout=120, bridge=bridge
        )
        reader.close()
        consumer = lab.agent(
            "consume", f"--config={orjson.dumps(target.config()).decode()}", f"--out={out}"
        )
    consumer.wait_ready()
    cpu_before = bridge.cpu_seconds() if bridge else 0.0
    writer = lab.agent(
        "flood",
        f"--endpoint={lab.endpoint}",
        f"--prefix={prefix}",
        f"--keys={keys}",
        f"--seconds={arguments.seconds}",
        f"--in-flight={arguments.in_flight}",
    ).result(timeout=arguments.seconds + 60)
    cpu_after = bridge.cpu_seconds() if bridge else 0.0
    summary = consumer.finish(
        until_revision=writer["last_revision"], count=writer["puts"], timeout=arguments.drain
    )
    rss = float("nan")
    if bridge is not None:
        rss = bridge.peak_rss_mib()
        bridge.stop()
    seen = orjson.loads(Path(out).read_bytes())
    result = analyze(name, writer, seen, cpu=cpu_after - cpu_before, rss=rss)
    print(
        f"  {name}: {writer['puts']:,} puts, {summary['events']:,} events seen, "
        f"ratio {result.ratio:.4f}, lag {result.lag_revisions} revisions / "
        f"{result.lag_seconds:.3f} s",
        flush=True,
    )
    compact(lab.endpoint)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.keepup", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="writer duration per round")
    parser.add_argument("--in-flight", type=int, default=64, help="puts outstanding")
    parser.add_argument("--keys", type=int, default=10_000, help="key space overwritten")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds allowed to catch up")
    add_common_arguments(parser)
    arguments = parser.parse_args(argv)
    clock = Stopwatch()
    describe_machine("Live keep-up (measurement 1)")
    print_settings(arguments)
    print(
        f"writer: puts of 100-byte values over {arguments.keys:,} existing keys, "
        f"{arguments.in_flight} in flight, {arguments.seconds:g} s per round; watch with prev_kv"
    )
    with Lab.for_run("keepup", arguments) as lab:
        lab.etcd()
        rounds = [
            run_round(lab, name, arguments=arguments) for name in ["bare watcher", *arguments.sinks]
        ]
    print()
    print_table(
        [
            "consumer",
            "writer puts/s",
            "delivered/s",
            "ratio",
            "lag at end (revisions)",
            "lag at end (s)",
            "bridge CPU (cores)",
            "bridge peak RSS (MiB)",
            "missing / duplicated",
            "target",
        ],
        [
            [
                r.name if r.name == "bare watcher" else f"bridge → {r.name}",
                r.writer_rate,
                r.delivered_rate,
                f"{r.ratio:.4f}",
                r.lag_revisions,
                f"{r.lag_seconds:.3f}",
                "-" if r.name == "bare watcher" else r.cpu_cores,
                r.peak_rss_mib,
                f"{r.missing} / {r.duplicates}",
                "(baseline)" if r.name == "bare watcher" else verdict(r.met),
            ]
            for r in rounds
        ],
    )
    print(
        f"\ntargets: ratio >= {TARGET_RATIO} and lag < {TARGET_LAG_SECONDS:g} s for every sink; "
        f"total {clock}"
    )
    print(lab.load_summary)


if __name__ == "__main__":
    main()
