"""``python -m tests.chaos``: one chaos run from the command line (``scripts/chaos.sh``).

Prints one line of figures on stdout and exits 0 when nothing was wrong, 1 when something
was (details on stderr, the working directory kept), 2 when the run itself failed.
"""

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import tests.chaos
from tests.chaos.common import say
from tests.chaos.engine import report, run
from tests.sinks import SINKS


def sinks_argument(value: str) -> list[str]:
    """``--sinks``: names of ``tests.sinks.SINKS``, comma-separated."""
    sinks = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(sinks) - set(SINKS))
    if unknown or not sinks:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SINKS)} (not {unknown})")
    return sinks


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=(tests.chaos.__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--operations", type=int, default=30_000)
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the active bridge")
    parser.add_argument("--pauses", type=int, default=2, help="SIGSTOP/SIGCONT of each server")
    parser.add_argument("--max-pause", type=float, default=4.0, help="longest SIGSTOP, seconds")
    parser.add_argument(
        "--cluster", type=int, choices=(1, 3), default=1, help="etcd members (3: in namespaces)"
    )
    parser.add_argument(
        "--partitions", type=int, default=0, help="partition/heal faults (needs --cluster 3)"
    )
    parser.add_argument(
        "--disk-full", type=int, default=0, help="times the file sink's disk fills up for a while"
    )
    parser.add_argument(
        "--oom", type=int, default=0, help="times Redis refuses writes for want of memory"
    )
    parser.add_argument(
        "--journal", action="store_true", help="every instance with the local log on"
    )
    parser.add_argument(
        "--refusals",
        type=int,
        default=0,
        help="oversized values Kafka (omit_value) and NATS (dead_letter) refuse for good",
    )
    parser.add_argument(
        "--sink-down",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="one sink's server down this long early in the run, etcd compacted meanwhile",
    )
    parser.add_argument(
        "--down-sink",
        default="redis",
        help="the sink --sink-down stops (one whose server keeps its data: redis, nats, postgres)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catch-up-timeout", type=float, default=180.0)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary one)")
    parser.add_argument(
        "--sinks",
        type=sinks_argument,
        default=list(SINKS),
        help=f"comma-separated sinks to check (default: all, {','.join(SINKS)})",
    )
    arguments = parser.parse_args(None if argv is None else list(argv))
    if arguments.partitions and arguments.cluster == 1:
        parser.error("--partitions needs --cluster 3")
    if arguments.disk_full and "file" not in arguments.sinks:
        parser.error("--disk-full fills the file sink's disk: include file in --sinks")
    if arguments.oom and "redis" not in arguments.sinks:
        parser.error("--oom starves Redis: include redis in --sinks")
    if arguments.refusals and not {"kafka", "nats"} & set(arguments.sinks):
        parser.error("--refusals needs a sink that refuses them: include kafka or nats")
    if arguments.refusals > arguments.operations * 4 // 5:
        parser.error("--refusals: at most four fifths of --operations")
    down = arguments.down_sink
    if arguments.sink_down and (down not in arguments.sinks or not SINKS[down].restartable):
        parser.error(f"--down-sink {down}: a sink of --sinks whose server keeps its data")
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))  # run the finally blocks
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="etcd-bridge-chaos-"))
    try:
        figures = run(
            operations=arguments.operations,
            kills=arguments.kills,
            pauses=arguments.pauses,
            pause_seconds=(1.0, max(1.0, arguments.max_pause)),
            seed=arguments.seed,
            workdir=workdir,
            sinks=arguments.sinks,
            catch_up_timeout=arguments.catch_up_timeout,
            members=arguments.cluster,
            partitions=arguments.partitions,
            disk_fulls=arguments.disk_full,
            ooms=arguments.oom,
            journal=arguments.journal,
            refusals=arguments.refusals,
            sink_down=(down, arguments.sink_down) if arguments.sink_down > 0 else None,
        )
    except Exception as error:  # noqa: BLE001 - one line, then the logs say the rest
        print(f"chaos seed={arguments.seed}: the run itself failed: {error!r}", flush=True)
        say(f"logs kept in {workdir}")
        return 2
    report(figures)
    print(figures.line(), flush=True)
    if not figures.ok:
        say(f"logs and sink files kept in {workdir}")
    elif arguments.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
