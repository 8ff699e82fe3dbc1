"""Measurement 5, CPU profile of measurement 2: where the bridge spends a replay.

Runs the burst replay of ``bench.burst`` (same history, same steps) with py-spy attached to
the bridge process (``py-spy record --pid --gil``: raw collapsed stacks of the thread holding the
GIL, one sample every ``1/--rate`` s), then prints, per sink, the functions with the most
samples on top of the stack (self) and anywhere in it (inclusive), per thread and overall.
The GIL is what bounds a Python process: the share of the replay during which
some thread held it says how close the bridge is to that bound.

py-spy is not a dependency of the project: ``.venv/bin/pip install py-spy`` first.

    .venv/bin/python -m bench.profile [--sinks kafka,redis] [--save DIR]
"""

import argparse
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.burst import NATIVE, Variant, prepare, replay, setups
from bench.common import (
    Bridge,
    Lab,
    Stopwatch,
    add_common_arguments,
    describe_machine,
    print_settings,
    print_table,
)

IGNORED_FRAMES = frozenset(
    {
        "Thread._bootstrap (threading.py)",
        "Thread._bootstrap_inner (threading.py)",
        "Thread.run (threading.py)",
    }
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(shutil.which("python") or "").parent / "py-spy")
    venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"
    if venv.exists():
        return str(venv)
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy")
    return found


def attacher(output: Path, *, rate: int) -> Callable[[Bridge], Callable[[], None]]:
    """Attach py-spy to a started bridge; the returned call stops it and waits for its file."""

    def attach(bridge: Bridge) -> Callable[[], None]:
        profiler = subprocess.Popen(
            [
                py_spy(),
                "record",
                f"--pid={bridge.pid}",
                f"--rate={rate}",
                "--format=raw",
                "--threads",
                "--gil",
                "--nolineno",
                f"--output={output}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def detach() -> None:
            profiler.send_signal(signal.SIGINT)
            try:
                _, errors = profiler.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
                raise
            if not output.exists():
                raise RuntimeError(f"py-spy wrote nothing: {errors.decode(errors='replace')}")

        return detach

    return attach


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: ``frame;frame;...;frame count`` per line, outermost first."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames:
            stack = tuple(f for f in frames.split(";") if f not in IGNORED_FRAMES)
            stacks[stack] += int(count)
    return stacks


def thread_of(stack: tuple[str, ...]) -> str:
    """The thread's name, from py-spy's first frame ``thread (tid): name``."""
    first = stack[0] if stack else ""
    if not first.startswith("thread ("):
        return "?"
    _, _, name = first.partition("): ")
    return name or "MainThread"


COST_CENTRES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "etcd response → Event objects",
        ("WatchStream._normalize", "snapshot_event", "read_snapshot"),
    ),
    ("Event → JSON", ("Event.to_json", "Event.to_dict", "encode_field", "encode_lines")),
    (
        "Kafka sink and client (produce, headers, partition, checkpoint)",
        ("KafkaSink.", "headers_of", "partition_for", "rank_of", "Checkpoint."),
    ),
    (
        "Redis sink and client (arguments, RESP packing, EVALSHA)",
        ("RedisSink.", "_StreamLayout.", "HiredisRespSerializer", "Redis.", "ScriptCommands."),
    ),
    ("file sink (write, fsync)", ("FileSink.",)),
    ("gRPC receive", ("(grpc/",)),
    (
        "local log (record, frames, read)",
        ("Recorder.", "Journal.", "JournalReader.", "JournalChanges.", "(bridge/journal/frames"),
    ),
    ("pump (batches, metrics, queue)", ("Pipeline.", "_read (", "_put (", "Queue.")),
)
"""Where a sample's time goes: the innermost frame matching one of these (prefixes of
py-spy's ``function (file)`` names) names its cost centre."""


def cost_centre(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, prefixes in COST_CENTRES:
            if any(frame.startswith(p) or p in frame for p in prefixes):
                return name
    return "other"


def report(
    sink: str, stacks: Counter[tuple[str, ...]], *, top: int, seconds: float, rate: int
) -> None:
    """Tables of where the GIL-holding samples went; import-time samples counted apart."""
    imports = 0
    by_thread: Counter[str] = Counter()
    centres: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [frame for frame in stack if not frame.startswith("thread (")]
        if not frames:
            continue
        if any(frame.startswith("_find_and_load ") for frame in frames):
            imports += count
            continue
        by_thread[thread_of(stack)] += count
        centres[cost_centre(frames)] += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = sum(by_thread.values())
    print(
        f"\n## bridge → {sink}: {total:,} samples holding the GIL after start-up, over "
        f"{seconds:.1f} s (the GIL was held {(total + imports) / (seconds * rate):.0%} of the "
        f"time; {imports:,} more samples were imports at start-up)\n"
    )

    def table(title: str, counts: Counter[str], limit: int) -> None:
        rows = [[name, n, f"{n / total:.1%}"] for name, n in counts.most_common(limit)]
        print_table([title, "samples", "share"], rows)
        print()

    table("cost centre", centres, len(COST_CENTRES) + 1)
    table("thread", by_thread, 8)
    table("self (top of stack)", own, top)
    table("inclusive (anywhere in the stack)", inclusive, top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--transactions", type=int, default=2000, help="of 100 puts each")
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--save", type=Path, help="directory to keep the raw profiles in")
    parser.add_argument("--format", default=NATIVE, help="record format (docs/formats.md)")
    add_common_arguments(parser)
    arguments = parser.parse_args(argv)
    py_spy()
    clock = Stopwatch()
    describe_machine("CPU profile of the burst replay (measurement 5)")
    print_settings(arguments)
    with Lab.for_run("profile", arguments) as lab:
        variants = [Variant(sink, arguments.format) for sink in arguments.sinks]
        history = prepare(
            lab, setups(variants), keys=arguments.keys, transactions=arguments.transactions
        )
        for variant in variants:
            sink = variant.label
            output = lab.directory("profiles") / f"burst-{variant.sink}-{variant.format}.txt"
            result = replay(
                lab, history, variant, startup_cpu=0.0, attach=attacher(output, rate=arguments.rate)
            )
            print(
                f"  bridge → {sink} under py-spy: {result.rate:,.0f} events/s, "
                f"{result.cpu_per_100k():.2f} CPU-s per 100k events",
                flush=True,
            )
            if arguments.save:
                arguments.save.mkdir(parents=True, exist_ok=True)
                shutil.copy(output, arguments.save / output.name)
            report(
                sink,
                read_stacks(output),
                top=arguments.top,
                seconds=result.total_seconds,
                rate=arguments.rate,
            )
    print(f"\ntotal {clock}")
    print(lab.load_summary)


if __name__ == "__main__":
    main()
