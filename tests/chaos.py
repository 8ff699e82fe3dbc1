"""The chaos suite (issue 5): every sink checked against etcd's own history after a storm.

One run, all on 127.0.0.1 with free ports, starts etcd 3.5, the Kafka-protocol broker (Tansu),
a persistent Redis (``appendonly yes``, ``appendfsync always``) and two bridge instances with
the same ``BRIDGE_NAME`` and leader election on, feeding the ``kafka``, ``redis`` and ``file``
sinks. Once every sink holds its initial snapshot, a writer performs thousands of mixed
operations on the prefix: puts, updates, deletes, range deletes, multi-key transactions
(some also touching keys outside the prefix), values that are empty, binary or large, and keys
bound to 1-2 s leases that etcd itself deletes when they expire. Meanwhile the chaos thread
SIGKILLs the active bridge (and starts a new instance, so two always exist), SIGSTOPs and
SIGCONTs etcd, Redis and the broker, and restarts etcd and Redis (same data) once each.

Then the bridges catch up to a sentinel put after everything else, are stopped, and each
sink is read back independently (the file line by line, the Redis stream with XRANGE, every
Kafka partition with aiokafka) and compared with **etcd's own history of the prefix**, read
by a watch from revision 1 with ``prev_kv``. The writer records nothing: lease expiries and
operations retried across a pause happen as etcd decides, so etcd is the only reference.
Each sink must hold its snapshot at revision R (equal to etcd's state at R) and then every
change after R: every ``(revision, index)`` once, in order (per partition for Kafka, where
each key must also sit in its murmur2 partition), with the exact event etcd implies (type,
op, key, value, previous value, revisions, version, lease).

Design choices that keep the run honest rather than lucky:

- *One chaos action at a time.* Actions are scheduled at operation numbers drawn from the
  seed; the writer triggers them and keeps writing while they run, but waits for the previous
  one to finish before triggering the next. So a kill never coincides with a frozen broker:
  that overlap is a documented limit of the Kafka sink (docs/kafka.md, "one instance per
  pipeline"), not something this suite should report as a bug.
- *The active bridge is the one etcd names.* The election key's value ends with the
  holder's pid; the chaos thread kills that process once its log also says it leads.
- *No compaction*: etcd keeps its whole history, which the check replays.

``python -m tests.chaos --operations 30000 --kills 10 --seed 1`` prints one line of figures
and exits 1 unless lost, duplicated, out-of-order and unexpected are all zero (and the
chaos itself went as planned). ``tests/integration/test_chaos.py`` runs a shorter variant.
"""

import argparse
import contextlib
import enum
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyetcd
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from pyetcd import etcdrpc

from bridge.events import Event, EventType, Op, Position, SnapshotReason, snapshot_marker
from config.kafka import KafkaSettings
from sinks.kafka import KafkaSink
from tests.fixtures.bridge import BridgeFactory, BridgeProcess
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.kafka import KafkaBroker, Record, read_topic
from tests.fixtures.processes import ManagedProcess, wait_for
from tests.fixtures.redis import RedisServer

PREFIX = b"/chaos/"
OUTSIDE = b"/chaos-outside/"
SENTINEL = PREFIX + b"~end"
PIPELINE = "chaos"
TOPIC = "chaos-events"
PARTITIONS = 3
STREAM = "chaos:events"
ELECTION_PREFIX = "/bridge-leader/"
KEYS = 400
GROUPS = 8
SINKS = ("file", "redis", "kafka")
_STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, so that stdout carries the one line of figures only."""
    print(f"[chaos {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` of every key starting with ``prefix`` (prefixes here end below 0xff)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def etcd_client(server: EtcdServer, *, timeout: float) -> Any:
    """A fresh client: pyetcd refuses an endpoint for minutes once a call to it failed."""
    return pyetcd.client(
        host="127.0.0.1",
        port=server.port,
        timeout=timeout,
        grpc_options=[("grpc.max_receive_message_length", -1)],
    )


# --- the servers and the two bridge instances --------------------------------------------------


class Cluster:
    """etcd, the broker, Redis and the bridge instances of one run; ``stop`` ends them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for part in ("etcd", "kafka", "redis", "bridges"):
            (workdir / part).mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(version="3.5", workdir=workdir / "etcd")
        self.kafka = KafkaBroker(workdir=workdir / "kafka")
        self.redis = RedisServer(workdir=workdir / "redis", persistent=True)
        self.output = workdir / "events.jsonl"
        self.factory = BridgeFactory(workdir / "bridges")
        self.bridges: list[BridgeProcess] = []
        self.crashes: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.etcd.start()
        self.kafka.start()
        self.redis.start()

    def settings(self) -> dict[str, str]:
        return {
            "BRIDGE_NAME": PIPELINE,
            "BRIDGE_SINKS": "kafka,redis,file",
            "BRIDGE_CHECKPOINT_DIR": str(self.workdir / "checkpoints"),
            "BRIDGE_ETCD__ENDPOINTS": self.etcd.url,
            "BRIDGE_ETCD__PREFIX": PREFIX.decode(),
            "BRIDGE_ETCD__TIMEOUT": "3",
            "BRIDGE_ETCD__STALL_TIMEOUT": "6",
            "BRIDGE_FILE__PATH": str(self.output),
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "BRIDGE_KAFKA__TOPIC": TOPIC,
            "BRIDGE_KAFKA__PARTITIONS": str(PARTITIONS),
            "BRIDGE_KAFKA__FLUSH_TIMEOUT": "3",
            "BRIDGE_KAFKA__TIMEOUT": "5",
            "BRIDGE_REDIS__URL": self.redis.url,
            "BRIDGE_REDIS__STREAM": STREAM,
            "BRIDGE_REDIS__TIMEOUT": "3",
            "BRIDGE_HA__ENABLED": "true",
            "BRIDGE_HA__TTL": "2",
            "BRIDGE_HA__KEY_PREFIX": ELECTION_PREFIX,
            "BRIDGE_PUMP__BATCH_EVENTS": "200",
            "BRIDGE_HTTP__ENABLED": "false",
            "BRIDGE_LOG__FORMAT": "text",
        }

    def start_bridge(self) -> BridgeProcess:
        with self._lock:
            bridge = self.factory.start(**self.settings())
            self.bridges.append(bridge)
            return bridge

    def kill(self, bridge: BridgeProcess) -> None:
        """SIGKILL ``bridge`` and start another instance in its place."""
        with self._lock:
            bridge.kill()
            self.bridges.remove(bridge)
        self.start_bridge()

    def reap(self) -> None:
        """Replace instances that exited by themselves, and remember them: that is a bug."""
        with self._lock:
            gone = [bridge for bridge in self.bridges if not bridge.running]
        for bridge in gone:
            assert bridge.process is not None
            code = bridge.process.returncode
            self.crashes.append(
                f"bridge pid {bridge.process.pid} exited by itself with code {code} "
                f"({bridge.log_path}):\n{bridge.log_tail(15)}"
            )
            say(f"bridge pid {bridge.process.pid} exited by itself (code {code}); replacing it")
            with self._lock:
                self.bridges.remove(bridge)
            self.start_bridge()

    def leader_pid(self) -> int | None:
        """The pid etcd's election key names (its value is ``host:pid``), if any."""
        client = etcd_client(self.etcd, timeout=2)
        try:
            value, _meta = client.get(ELECTION_PREFIX + PIPELINE)
        finally:
            client.close()
        return None if value is None else int(value.rsplit(b":", 1)[-1])

    def active(self) -> BridgeProcess | None:
        """The running instance that holds the election key and whose log says it leads."""
        pid = self.leader_pid()
        with self._lock:
            candidates = list(self.bridges)
        for bridge in candidates:
            if bridge.process is None or bridge.process.pid != pid or not bridge.running:
                continue
            lines = [
                line for line in bridge.log_text().splitlines()
                if "leadership gained" in line or "back to standby" in line
            ]  # fmt: skip
            if lines and "leadership gained" in lines[-1]:
                return bridge
        return None

    def election_state(self) -> str:
        """Who holds the election key, and each instance's last election line: for reports."""
        try:
            holder: int | str | None = self.leader_pid()
        except Exception as error:  # noqa: BLE001 - a diagnosis, not a check
            holder = f"unknown ({error!r})"
        with self._lock:
            bridges = list(self.bridges)
        lines = []
        for bridge in bridges:
            assert bridge.process is not None
            election = [
                line for line in bridge.log_text().splitlines()
                if "leadership" in line or "standby" in line
            ]  # fmt: skip
            last = election[-1] if election else "(none)"
            lines.append(f"pid {bridge.process.pid} ({bridge.log_path.name}): {last}")
        return f"election key held by pid {holder}; " + "; ".join(lines)

    def stop_bridges(self) -> list[str]:
        """SIGTERM every running instance; one line per instance that did not exit cleanly."""
        problems = []
        with self._lock:
            running = [bridge for bridge in self.bridges if bridge.running]
        for bridge in running:
            assert bridge.process is not None
            try:
                code = bridge.terminate(timeout=30)
            except Exception as error:  # noqa: BLE001 - reported, then killed by stop()
                problems.append(f"bridge pid {bridge.process.pid} did not stop: {error!r}")
                continue
            if code != 0:
                problems.append(
                    f"bridge pid {bridge.process.pid} exited with {code} on SIGTERM "
                    f"({bridge.log_path})"
                )
        return problems

    def stop(self) -> None:
        """Stop everything this run started, whatever state it is in."""
        self.factory.stop_all()
        for server in (self.etcd, self.kafka, self.redis):
            with contextlib.suppress(Exception):
                server.stop()


# --- the writer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One writer operation: one etcd transaction, optionally under a fresh short lease."""

    puts: tuple[tuple[bytes, bytes], ...] = ()
    deletes: tuple[tuple[bytes, bytes], ...] = ()
    """(key, range_end): an empty range_end deletes one key."""
    lease_ttl: int = 0


class Writer:
    """Mixed operations on the prefix, each retried until etcd takes it; records nothing."""

    def __init__(self, server: EtcdServer, *, seed: int) -> None:
        self.server = server
        self.random = random.Random(f"writer-{seed}")  # noqa: S311 - reproducible, not security
        self.operations = 0
        self.retries = 0
        self.leases = 0
        self._client: Any = None

    # planning: a function of the seed only, never of what etcd answered

    def _key(self) -> bytes:
        roll = self.random.random()
        if roll < 0.02:
            return PREFIX + b"bin/\xfe\xff" + bytes([self.random.randrange(16)])
        number = self.random.randrange(KEYS)
        return PREFIX + b"g%d/k%04d" % (number % GROUPS, number)

    def _value(self, number: int) -> bytes:
        roll = self.random.random()
        if roll < 0.80:
            return (
                b"v%d-" % number
                + self.random.randbytes(self.random.randrange(0, 16)).hex().encode()
            )
        if roll < 0.90:
            return self.random.randbytes(self.random.randrange(1, 40))  # mostly not UTF-8
        if roll < 0.95:
            return b""
        return b"L%d-" % number + b"x" * self.random.randrange(512, 4096)

    def plan(self, number: int) -> Operation:
        roll = self.random.random()
        if roll < 0.40:
            return Operation(puts=((self._key(), self._value(number)),))
        if roll < 0.52:
            return Operation(deletes=((self._key(), b""),))
        if roll < 0.75:
            keys = sorted({self._key() for _ in range(self.random.randrange(2, 9))})
            puts, deletes = [], []
            for key in keys:
                if self.random.random() < 0.3:
                    deletes.append((key, b""))
                else:
                    puts.append((key, self._value(number)))
            if self.random.random() < 0.1:
                puts.append((OUTSIDE + b"k%d" % self.random.randrange(20), b"o%d" % number))
            return Operation(puts=tuple(puts), deletes=tuple(deletes))
        if roll < 0.88:
            keys = sorted({self._key() for _ in range(self.random.randrange(1, 4))})
            return Operation(
                puts=tuple((key, self._value(number)) for key in keys),
                lease_ttl=self.random.choice((1, 2)),
            )
        if roll < 0.90:
            group = PREFIX + b"g%d/" % self.random.randrange(GROUPS)
            return Operation(deletes=((group, prefix_end(group)),))
        return Operation(puts=((self._key(), b"u%d" % number),))  # short, mostly an update

    # executing

    def populate(self, count: int) -> None:
        """The keys the bridges' initial snapshot will hold."""
        for number in range(count):
            self.execute(Operation(puts=((self._key(), self._value(-number)),)))

    def execute(self, operation: Operation, abort: threading.Event | None = None) -> int:
        """Apply ``operation``, retrying while etcd is away; the revision etcd gave it."""
        delay = 0.05
        deadline = time.monotonic() + 180
        while True:
            try:
                return self._apply(operation)
            except Exception:  # etcd paused, restarting or timing out: try again
                self.retries += 1
                self._close()
                if (abort is not None and abort.is_set()) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _apply(self, operation: Operation) -> int:
        if self._client is None:
            self._client = etcd_client(self.server, timeout=2)
        lease = 0
        if operation.lease_ttl:
            grant = self._client.leasestub.LeaseGrant(
                etcdrpc.LeaseGrantRequest(TTL=operation.lease_ttl), timeout=2
            )
            lease = int(grant.ID)
            self.leases += 1
        requests = [
            etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease))
            for key, value in operation.puts
        ] + [
            etcdrpc.RequestOp(
                request_delete_range=etcdrpc.DeleteRangeRequest(key=key, range_end=end)
            )
            for key, end in operation.deletes
        ]
        response = self._client.kvstub.Txn(etcdrpc.TxnRequest(success=requests), timeout=2)
        return int(response.header.revision)

    def _close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def run(
        self,
        *,
        operations: int,
        schedule: Sequence["Action"],
        chaos: "Chaos",
        abort: threading.Event,
    ) -> None:
        """``operations`` operations; each scheduled action is triggered at its number."""
        pending = deque(sorted(schedule, key=lambda action: action.at))
        try:
            for number in range(1, operations + 1):
                while pending and pending[0].at <= number:
                    chaos.trigger(pending.popleft(), abort)
                if abort.is_set():
                    return
                self.execute(self.plan(number), abort)
                self.operations += 1
            while pending:
                chaos.trigger(pending.popleft(), abort)
        finally:
            self._close()


# --- the chaos ----------------------------------------------------------------------------------


class Kind(enum.Enum):
    KILL = "kill"
    PAUSE = "pause"
    RESTART = "restart"


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str
    """``bridge`` (the active one), ``etcd``, ``redis`` or ``kafka``."""
    at: int
    """The operation number that triggers it."""


def plan_chaos(*, operations: int, kills: int, pauses: int, seed: int) -> list[Action]:
    """``kills`` kills, ``pauses`` pauses of each server, one restart of etcd and of Redis,
    shuffled and spread over the operations (one per slot, at a random point of it)."""
    chooser = random.Random(f"schedule-{seed}")  # noqa: S311 - reproducible chaos
    kinds = [(Kind.KILL, "bridge")] * kills
    kinds += [(Kind.PAUSE, server) for server in ("etcd", "redis", "kafka")] * pauses
    kinds += [(Kind.RESTART, "etcd"), (Kind.RESTART, "redis")]
    chooser.shuffle(kinds)
    slots = len(kinds)
    return [
        Action(
            kind=kind,
            target=target,
            at=max(1, int(operations * (0.03 + 0.92 * (slot + chooser.random()) / slots))),
        )
        for slot, (kind, target) in enumerate(kinds)
    ]


class Chaos:
    """Performs actions one at a time in its own thread; counts what it did."""

    def __init__(self, cluster: Cluster, *, seed: int, pause_seconds: tuple[float, float]) -> None:
        self.cluster = cluster
        self.random = random.Random(f"chaos-{seed}")  # noqa: S311 - reproducible chaos
        self.pause_seconds = pause_seconds
        self.kills = 0
        self.pauses = 0
        self.restarts = 0
        self.errors: list[str] = []
        self.abort = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._actions: queue.Queue[Action | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def trigger(self, action: Action, abort: threading.Event) -> None:
        """Hand ``action`` over once the previous one is done."""
        while not self._idle.wait(0.2):
            if abort.is_set():
                return
        if abort.is_set():
            return
        self._idle.clear()
        self._actions.put(action)

    def finish(self) -> None:
        """Wait for the action in hand, then end the thread."""
        self._actions.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (action := self._actions.get()) is not None:
            try:
                self.cluster.reap()
                self._perform(action)
            except Exception as error:  # noqa: BLE001 - reported in the figures, run aborted
                state = self.cluster.election_state()
                self.errors.append(f"{action.kind.value} {action.target}: {error}; {state}")
                say(f"chaos failed: {action.kind.value} {action.target}: {error}")
                self.abort.set()
            finally:
                self._idle.set()

    def _process(self, target: str) -> ManagedProcess:
        servers: dict[str, ManagedProcess] = {
            "etcd": self.cluster.etcd.process,
            "redis": self.cluster.redis.process,
            "kafka": self.cluster.kafka.process,
        }
        return servers[target]

    def _wait_active(self, *, other_than: BridgeProcess | None = None) -> BridgeProcess:
        def elected() -> BridgeProcess | None:
            bridge = self.cluster.active()
            return bridge if bridge is not None and bridge is not other_than else None

        return wait_for(elected, timeout=60, what="an active bridge", interval=0.1)

    def _perform(self, action: Action) -> None:
        if action.kind is Kind.KILL:
            time.sleep(self.random.uniform(0, 0.4))  # a random moment of the stream
            leader = self._wait_active()
            assert leader.process is not None
            pid = leader.process.pid
            self.cluster.kill(leader)
            self.kills += 1
            successor = self._wait_active(other_than=leader)
            assert successor.process is not None
            say(
                f"kill {self.kills}: active bridge pid {pid}; pid {successor.process.pid} took over"
            )
        elif action.kind is Kind.PAUSE:
            seconds = self.random.uniform(*self.pause_seconds)
            process = self._process(action.target)
            process.pause()
            self.pauses += 1
            try:
                time.sleep(seconds)
            finally:
                process.resume()
            say(f"pause {self.pauses}: {action.target} stopped for {seconds:.1f}s")
            if action.target == "etcd":
                self._wait_active()
        else:
            started = time.monotonic()
            if action.target == "etcd":
                self.cluster.etcd.restart()
            else:
                self.cluster.redis.restart()
            self.restarts += 1
            say(f"restart {self.restarts}: {action.target} in {time.monotonic() - started:.1f}s")
            if action.target == "etcd":
                self._wait_active()


# --- reading etcd's history and the sinks back ----------------------------------------------------


def read_history(server: EtcdServer, *, until: int, timeout: float = 180) -> list[Event]:
    """Every change of the prefix from revision 1 to ``until``, as etcd reports it to a watch
    with ``prev_kv``, turned into the events docs/events.md says a sink must hold (numbered
    within their revision). The raw gRPC stream, so that nothing is hidden from us."""
    client = etcd_client(server, timeout=10)
    requests: queue.Queue[Any] = queue.Queue()
    requests.put(
        etcdrpc.WatchRequest(
            create_request=etcdrpc.WatchCreateRequest(
                key=PREFIX, range_end=prefix_end(PREFIX), start_revision=1, prev_kv=True
            )
        )
    )
    stream = etcdrpc.WatchStub(client.channel).Watch(iter(requests.get, None), timeout=timeout)
    events: list[Event] = []
    try:
        for response in stream:
            if response.canceled:
                raise RuntimeError(f"etcd cancelled the history watch: {response.cancel_reason}")
            for raw in response.events:
                kv = raw.kv
                revision = int(kv.mod_revision)
                same = bool(events) and events[-1].revision == revision
                is_put = raw.type == raw.PUT
                events.append(
                    Event(
                        revision=revision,
                        index=events[-1].index + 1 if same else 0,
                        type=EventType.PUT if is_put else EventType.DELETE,
                        op=(Op.CREATE if kv.version == 1 else Op.UPDATE) if is_put else Op.DELETE,
                        key=bytes(kv.key),
                        value=bytes(kv.value) if is_put else None,
                        prev_value=bytes(raw.prev_kv.value) if raw.HasField("prev_kv") else None,
                        mod_revision=revision,
                        create_revision=int(kv.create_revision),
                        version=int(kv.version),
                        lease=int(kv.lease),
                    )
                )
            if events and events[-1].revision >= until:
                break
    finally:
        stream.cancel()
        requests.put(None)
        client.close()
    if not events or events[-1].revision < until:
        raise RuntimeError(f"etcd's history of the prefix ended before revision {until}")
    return events


def expected_after_snapshot(
    history: Sequence[Event], revision: int
) -> tuple[list[Event], list[Event]]:
    """What a sink whose snapshot was taken at ``revision`` must hold: (the snapshot's
    markers, its keys at etcd's state then plus every later change)."""
    state: dict[bytes, Event] = {}
    for event in history:
        if event.revision > revision:
            break
        if event.type is EventType.DELETE:
            state.pop(event.key, None)
        else:
            state[event.key] = event
    snapshot = [
        Event(
            revision=revision,
            index=number,
            type=EventType.PUT,
            op=Op.SNAPSHOT,
            key=key,
            value=state[key].value,
            mod_revision=state[key].mod_revision,
            create_revision=state[key].create_revision,
            version=state[key].version,
            lease=state[key].lease,
        )
        for number, key in enumerate(sorted(state), start=1)
    ]
    markers = [
        snapshot_marker(
            revision=revision,
            index=0,
            op=Op.SNAPSHOT_BEGIN,
            prefix=PREFIX,
            reason=SnapshotReason.INITIAL,
        ),
        snapshot_marker(
            revision=revision,
            index=len(snapshot) + 1,
            op=Op.SNAPSHOT_END,
            prefix=PREFIX,
            reason=SnapshotReason.INITIAL,
        ),
    ]
    return markers, snapshot + [event for event in history if event.revision > revision]


@dataclass
class SinkFigures:
    """What one sink's check found."""

    name: str
    events: int = 0
    """Events read (snapshot keys and changes; markers and tombstones not counted)."""
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unexpected: int = 0
    """Events etcd's history does not imply: wrong content, unknown position, wrong place."""
    snapshot_revision: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 12:
            self.examples.append(text)


def describe(event: Event) -> str:
    return (
        f"{event.position} {event.op.value} {event.key!r} value={event.value!r:.40} "
        f"prev={event.prev_value!r:.40}"
    )


def check_streams(
    figures: SinkFigures,
    streams: dict[str, list[Event]],
    history: Sequence[Event],
) -> None:
    """Compare ``streams`` (one per Kafka partition, or the sink's single stream), each in
    the order the sink holds it, with etcd's ``history``; add the counts to ``figures``."""
    begins = [
        event.position
        for stream in streams.values()
        for event in stream
        if event.op is Op.SNAPSHOT_BEGIN
    ]
    if not begins:
        figures.note("no snapshot_begin at all")
    revision = min(begins).revision if begins else 0
    figures.snapshot_revision = revision
    markers, changes = expected_after_snapshot(history, revision)
    expected = {event.position: event for event in changes}
    seen: dict[Position, list[Event]] = defaultdict(list)
    for name, stream in streams.items():
        last: Position | None = None
        positions: set[Position] = set()
        held_markers: list[Event] = []
        for event in stream:
            position = event.position
            if position in positions:
                pass  # counted as a duplicate below
            elif last is not None and position < last:
                figures.out_of_order += 1
                figures.note(f"out of order in {name}: {position} after {last}")
            positions.add(position)
            last = position if last is None else max(last, position)
            if event.type is EventType.MARKER:
                held_markers.append(event)
            else:
                seen[position].append(event)
        for marker in markers:
            count = held_markers.count(marker)
            if count == 0:
                figures.lost += 1
                figures.note(f"lost in {name}: marker {describe(marker)}")
            figures.duplicated += max(0, count - 1)
        for marker in held_markers:
            if marker not in markers:
                figures.unexpected += 1
                figures.note(f"unexpected in {name}: marker {describe(marker)}")
    for position, events in seen.items():
        figures.events += len(events)
        if len(events) > 1:
            figures.duplicated += len(events) - 1
            figures.note(f"duplicated x{len(events)}: {describe(events[0])}")
        for event in set(events):
            if expected.get(position) != event:
                figures.unexpected += 1
                figures.note(f"unexpected: {describe(event)}")
    run: list[Event] = []  # consecutive lost events, reported as one range
    for change in [*changes, None]:
        if change is not None and change not in seen.get(change.position, ()):
            figures.lost += 1
            run.append(change)
        elif run:
            more = f" .. {run[-1].position}, {len(run)} events" if len(run) > 1 else ""
            figures.note(f"lost: {describe(run[0])}{more}")
            run = []


def read_file_sink(path: Path, figures: SinkFigures) -> dict[str, list[Event]]:
    content = path.read_bytes() if path.exists() else b""
    if content and not content.endswith(b"\n"):
        figures.unexpected += 1
        figures.note("the file ends with a torn line")
    events = []
    for line in content.splitlines():
        try:
            events.append(Event.from_json(line))
        except (ValueError, KeyError) as error:
            figures.unexpected += 1
            figures.note(f"unreadable line {line[:80]!r}: {error}")
    return {"file": events}


def read_redis_sink(server: RedisServer, figures: SinkFigures) -> dict[str, list[Event]]:
    events = []
    with server.client() as client:
        start = "-"
        while True:
            entries = client.xrange(STREAM, min=start, max="+", count=5000)
            for entry_id, fields in entries:
                event = Event.from_json(fields[b"event"])
                if entry_id.decode() != str(event.position) or fields[b"key"] != event.key:
                    figures.unexpected += 1
                    figures.note(f"entry {entry_id!r} holds {describe(event)}")
                events.append(event)
            if len(entries) < 5000:
                break
            start = "(" + entries[-1][0].decode()
    return {"redis": events}


def read_kafka_sink(broker: KafkaBroker, figures: SinkFigures) -> dict[str, list[Event]]:
    """Every partition read with aiokafka (not the sink's client), each record checked to be
    where it belongs and to carry the headers of its event."""
    records: list[Record] = read_topic(broker.bootstrap, TOPIC)
    partitions = sorted({record.partition for record in records})
    streams: dict[str, list[Event]] = {f"partition {p}": [] for p in range(PARTITIONS)}
    if partitions and partitions[-1] >= PARTITIONS:
        figures.unexpected += 1
        figures.note(f"partitions {partitions}, expected {PARTITIONS}")
    for record in records:
        where = f"partition {record.partition}"
        if record.value is None:
            figures.unexpected += 1
            figures.note(f"a null-value record at offset {record.offset} of {where}")
            continue
        event = Event.from_json(record.value)
        headers = record.headers
        wanted = {
            "revision": str(event.revision).encode(),
            "index": str(event.index).encode(),
            "type": event.type.value.encode(),
            "op": event.op.value.encode(),
            "pipeline": PIPELINE.encode(),
        }
        home = (murmur2(event.key) & 0x7FFFFFFF) % PARTITIONS
        misplaced = event.type is not EventType.MARKER and record.partition != home
        if headers != wanted or record.key != event.key or misplaced:
            figures.unexpected += 1
            figures.note(f"record at offset {record.offset} of {where}: {describe(event)}")
        streams.setdefault(where, []).append(event)
    return streams


# --- tails, for waiting on the bridges ------------------------------------------------------------


def file_tail(path: Path) -> Event | None:
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        chunk = handle.read()
    lines = chunk[: chunk.rfind(b"\n") + 1].splitlines()
    return Event.from_json(lines[-1]) if lines else None


def redis_tail(server: RedisServer) -> Event | None:
    with server.client() as client:
        entries = client.xrevrange(STREAM, count=1)
    return Event.from_json(entries[0][1][b"event"]) if entries else None


def kafka_tail(broker: KafkaBroker) -> Event | None:
    """The durable position, as a sink configured like the bridges' reads it back."""
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap, topic=TOPIC, partitions=PARTITIONS, timeout=5
    )
    with KafkaSink(settings=settings, pipeline=PIPELINE, prefix=PREFIX) as sink:
        return sink.open()


def holds(tail: Event | None, revision: int) -> bool:
    """Whether a sink whose last event is ``tail`` has everything up to ``revision``."""
    if tail is None or tail.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
        return False
    return tail.revision >= revision


# --- one run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    seed: int
    operations: int = 0
    kills: int = 0
    pauses: int = 0
    restarts: int = 0
    retries: int = 0
    events_in_etcd: int = 0
    seconds: float = 0.0
    sinks: list[SinkFigures] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(sink, name)) for sink in self.sinks)

    @property
    def ok(self) -> bool:
        counts = ("lost", "duplicated", "out_of_order", "unexpected")
        return bool(self.sinks) and not self.problems and not any(self.total(c) for c in counts)

    def line(self) -> str:
        def figure(name: str) -> str:
            value = self.total(name)
            if not value:
                return f"{name}={value}"
            parts = ", ".join(f"{s.name} {getattr(s, name)}" for s in self.sinks)
            return f"{name}={value} ({parts})"

        checked = " ".join(f"{sink.name}={sink.events}" for sink in self.sinks)
        return (
            f"chaos seed={self.seed}: operations={self.operations} kills={self.kills} "
            f"pauses={self.pauses} restarts={self.restarts} etcd_events={self.events_in_etcd} "
            f"| checked {checked or 'nothing'} "
            f"| {figure('lost')} {figure('duplicated')} {figure('out_of_order')} "
            f"{figure('unexpected')} problems={len(self.problems)} | {self.seconds:.0f}s"
        )


def run(
    *,
    operations: int,
    kills: int,
    seed: int,
    workdir: Path,
    pauses: int = 2,
    pause_seconds: tuple[float, float] = (1.0, 4.0),
    initial_keys: int = 300,
    catch_up_timeout: float = 180.0,
) -> Figures:
    """One chaos run in ``workdir``; every process it starts is stopped before it returns."""
    started = time.monotonic()
    figures = Figures(seed=seed)
    cluster = Cluster(workdir)
    chaos = Chaos(cluster, seed=seed, pause_seconds=pause_seconds)
    try:
        say(f"starting etcd, the Kafka broker and Redis in {workdir}")
        cluster.start()
        writer = Writer(cluster.etcd, seed=seed)
        writer.populate(initial_keys)
        cluster.start_bridge()
        cluster.start_bridge()
        _wait_all(cluster, revision=0, timeout=120, what="the initial snapshot in every sink")
        say("snapshots are in every sink; writing, with chaos")
        schedule = plan_chaos(operations=operations, kills=kills, pauses=pauses, seed=seed)
        chaos.start()
        try:
            writer.run(operations=operations, schedule=schedule, chaos=chaos, abort=chaos.abort)
        finally:
            chaos.finish()
        figures.operations, figures.retries = writer.operations, writer.retries
        figures.kills, figures.pauses, figures.restarts = chaos.kills, chaos.pauses, chaos.restarts
        figures.problems += chaos.errors
        say(f"{writer.operations} operations ({writer.retries} retried attempts); catching up")
        _wait_leases_gone(cluster.etcd)
        last = writer.execute(Operation(puts=((SENTINEL, b"end"),)))
        try:
            _wait_all(cluster, revision=last, timeout=catch_up_timeout, what=f"revision {last}")
        except TimeoutError as error:
            figures.problems.append(f"{error}; {cluster.election_state()}")
        figures.problems += cluster.stop_bridges()
        figures.problems += cluster.crashes
        say("bridges stopped; reading etcd's history and every sink back")
        history = read_history(cluster.etcd, until=last)
        figures.events_in_etcd = len(history)
        readers: dict[str, Callable[[SinkFigures], dict[str, list[Event]]]] = {
            "file": lambda f: read_file_sink(cluster.output, f),
            "redis": lambda f: read_redis_sink(cluster.redis, f),
            "kafka": lambda f: read_kafka_sink(cluster.kafka, f),
        }
        for name in SINKS:
            sink = SinkFigures(name=name)
            check_streams(sink, readers[name](sink), history)
            figures.sinks.append(sink)
    finally:
        cluster.stop()
        figures.seconds = time.monotonic() - started
    return figures


def _wait_all(cluster: Cluster, *, revision: int, timeout: float, what: str) -> None:
    """Until every sink holds ``revision`` (past its snapshot), replacing crashed bridges.
    Gives up early when no instance has been active for 30 s: nothing would move."""
    tails: dict[str, Callable[[], Event | None]] = {
        "file": lambda: file_tail(cluster.output),
        "redis": lambda: redis_tail(cluster.redis),
        "kafka": lambda: kafka_tail(cluster.kafka),
    }
    waiting = set(SINKS)
    started = last_active = time.monotonic()
    while waiting:
        now = time.monotonic()
        if now - started > timeout or now - last_active > 30:
            why = "no instance active for 30s" if now - last_active > 30 else f"{timeout:.0f}s"
            raise TimeoutError(f"gave up waiting for {what} in {sorted(waiting)} ({why})")
        cluster.reap()
        with contextlib.suppress(Exception):
            if cluster.active() is not None:
                last_active = now
        for name in sorted(waiting):
            if name == "kafka" and "file" in waiting:
                continue  # let the bridge create the topics before a reader opens them
            with contextlib.suppress(Exception):
                if holds(tails[name](), revision):
                    waiting.discard(name)
        time.sleep(0.5)


def _wait_leases_gone(server: EtcdServer) -> None:
    """Until etcd has expired every key the writer bound to a lease (their DELETEs count)."""

    def gone() -> bool:
        client = etcd_client(server, timeout=5)
        try:
            response = client.kvstub.Range(
                etcdrpc.RangeRequest(key=PREFIX, range_end=prefix_end(PREFIX), keys_only=True),
                timeout=5,
            )
        finally:
            client.close()
        return not any(kv.lease for kv in response.kvs)

    wait_for(gone, timeout=60, what="the writer's leases to expire", interval=0.2)


def report(figures: Figures) -> None:
    """Details of anything wrong, on stderr."""
    for problem in figures.problems:
        say(f"problem: {problem}")
    for sink in figures.sinks:
        if sink.examples:
            say(f"{sink.name} (snapshot at {sink.snapshot_revision}):")
            for example in sink.examples:
                print(f"    {example}", file=sys.stderr)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--operations", type=int, default=30_000)
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the active bridge")
    parser.add_argument("--pauses", type=int, default=2, help="SIGSTOP/SIGCONT of each server")
    parser.add_argument("--max-pause", type=float, default=4.0, help="longest SIGSTOP, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catch-up-timeout", type=float, default=180.0)
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary one)")
    arguments = parser.parse_args(None if argv is None else list(argv))
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
            catch_up_timeout=arguments.catch_up_timeout,
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
