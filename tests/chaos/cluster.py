"""The servers and bridge instances of one chaos run, and which instance is active.

etcd and the server of every sink of the run (``tests.sinks``: the broker, Redis, NATS,
PostgreSQL) each have a directory of the run's working directory, where etcd and the sinks'
servers keep the data their restarts resume from; each sink writes to its destination named
after the pipeline. Bridge instances come and go: a killed or crashed one is replaced at once,
so two always run and a standby is ready to take over. Which one is active is read from etcd
(the election key names the holder's pid) and confirmed by that instance's own log: the chaos
must kill the leader, not a standby.

With ``members=3`` etcd is a cluster whose members each run in a network namespace of their
own (``tests.fixtures.netns``), so that the chaos can partition them. The bridges stay on
this host, beside the sinks' servers they reach on loopback: a partition of "the bridge"
from a member cuts this host (the writer too) from it. Partitioning one bridge instance from
etcd while the other stays connected is ``tests/integration/test_partitions.py``'s part.
"""

import contextlib
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bridge.events import Event, Op
from config.refusal import RefusalPolicy
from tests.chaos import storage
from tests.chaos.common import PIPELINE, PREFIX, etcd_client, say
from tests.fixtures import disk
from tests.fixtures.bridge import BridgeFactory, BridgeProcess
from tests.fixtures.etcd import EtcdCluster, EtcdServer
from tests.fixtures.netns import Host, Network
from tests.fixtures.processes import ManagedProcess
from tests.sinks import SINKS, Destination
from tests.sinks.base import SinkServer
from tests.sinks.nats import NatsDestination
from tests.sinks.redis import RedisDestination

ELECTION_PREFIX = "/bridge-leader/"
REFUSAL_POLICIES = {"kafka": RefusalPolicy.OMIT_VALUE, "nats": RefusalPolicy.DEAD_LETTER}
"""The sinks that refuse the oversized values of ``--refusals`` (their records hold 1 MB),
each with a policy that goes past them, one policy each."""
NATS_MESSAGE_BYTES = 1024 * 1024
"""The NATS stream's ``max_msg_size`` in a run with refusals: nats-server's default
``max_payload``, which the tests' server raises for large values (``tests.sinks.nats``)."""
_CONNECTED = re.compile(r"connected to etcd sink=(\S+) endpoint=(\S+)")


class Cluster:
    """etcd, the sinks' servers and the bridge instances of one run; ``stop`` ends them all."""

    def __init__(
        self,
        workdir: Path,
        *,
        sinks: Sequence[str],
        members: int = 1,
        small_disk: bool = False,
        journal: bool = False,
        refusals: bool = False,
    ) -> None:
        """``members``: etcd's size; above 1, each member in a namespace of its own.
        ``small_disk``: the file sink's directory on a tmpfs of its own, for ``storage_fault``
        to fill. ``journal``: each instance with the local log on, in a directory of its own
        that the instance replacing it after a kill takes over (a restarted pod's volume).
        ``refusals``: the sinks that refuse oversized events go past them under
        ``REFUSAL_POLICIES`` (else they would stop)."""
        self.workdir = workdir
        self._journal = journal
        self._journals: dict[int, Path] = {}
        """Each running instance's log directory, by its object's id."""
        self.policies = {
            name: policy for name, policy in REFUSAL_POLICIES.items() if refusals and name in sinks
        }
        """The refusal policy of each sink that refuses events of the run."""
        self._mounts = contextlib.ExitStack()
        if small_disk and "file" in sinks:
            self._mounts.enter_context(disk.small_disk(workdir / "file", size=storage.DISK_BYTES))
        for part in ("etcd", "bridges", *sinks):
            (workdir / part).mkdir(parents=True, exist_ok=True)
        self.network = Network() if members > 1 else None
        self.size = members
        self.etcd_cluster = EtcdCluster(workdir=workdir / "etcd", size=1)
        """Replaced by the namespaced members in ``start`` when ``members`` is above 1."""
        self._etcd_turn = 0
        self.servers: dict[str, SinkServer] = {}
        """Each sink's server, by sink name (a sink without one has none here)."""
        for name in sinks:
            server = SINKS[name].server(workdir / name, persistent=True)
            if server is not None:
                self.servers[name] = server
        self.sinks: dict[str, Destination] = {
            name: SINKS[name].fresh(self.servers.get(name), directory=workdir / name, tag=PIPELINE)
            for name in sinks
        }
        self.factory = BridgeFactory(workdir / "bridges")
        self.bridges: list[BridgeProcess] = []
        self.crashes: list[str] = []
        self._lock = threading.Lock()

    @property
    def members(self) -> list[EtcdServer]:
        return self.etcd_cluster.members

    @property
    def etcd(self) -> EtcdServer:
        """The member the run reads etcd's history from once every partition is healed."""
        return self.members[0]

    def start(self) -> None:
        """The servers; bridge instances are started one by one with ``start_bridge``."""
        if self.network is not None:
            self.network.start()
            hosts = [self.network.add_host(f"m{number}") for number in range(self.size)]
            self.etcd_cluster = EtcdCluster(workdir=self.workdir / "etcd", places=hosts)
        self.etcd_cluster.start()
        for server in self.servers.values():
            server.start()
        nats = self.sinks.get("nats")
        if "nats" in self.policies and isinstance(nats, NatsDestination):
            nats.create_stream(max_msg_size=NATS_MESSAGE_BYTES)

    def host_of(self, member: EtcdServer) -> Host:
        assert self.network is not None, "a single member is not in a namespace"
        return next(host for host in self.network.hosts if host.address == member.host)

    def _next_member(self) -> EtcdServer:
        """The member the next pause or restart of ``etcd`` hits: each in turn."""
        self._etcd_turn += 1
        return self.members[(self._etcd_turn - 1) % len(self.members)]

    def process(self, server: str) -> ManagedProcess:
        """The process of ``server``: ``etcd`` (a member, each in turn) or a sink's name."""
        return self._next_member().process if server == "etcd" else self.servers[server].process

    def restart(self, server: str) -> None:
        """Stop ``server`` (``etcd``: a member, each in turn, or a sink's name) and start it
        again on its data."""
        if server == "etcd":
            self._next_member().restart()
        else:
            self.servers[server].stop()
            self.servers[server].start()

    def restartable(self) -> list[str]:
        """The servers that keep their data across ``restart``."""
        return ["etcd", *(name for name in self.servers if SINKS[name].restartable)]

    def settings(self) -> dict[str, str]:
        """Every instance's environment: one pipeline name with election on, every sink,
        and timeouts of a few seconds so that a paused server or a killed leader is noticed
        within the run."""
        sinks = {
            variable: value
            for sink in self.sinks.values()
            for variable, value in sink.env(**sink.impatient).items()
        }
        for name, policy in self.policies.items():
            sinks[f"BRIDGE_{name.upper()}__ON_REFUSED"] = policy.value
            if policy is RefusalPolicy.DEAD_LETTER:
                sinks[f"BRIDGE_{name.upper()}__DEAD_LETTER_PATH"] = str(self.dead_letters(name))
        return {
            "BRIDGE_NAME": PIPELINE,
            "BRIDGE_SINKS": ",".join(self.sinks),
            "BRIDGE_STDOUT__CHECKPOINT_DIR": str(self.workdir / "checkpoints"),
            "BRIDGE_ETCD__ENDPOINTS": self.etcd_cluster.urls,
            "BRIDGE_ETCD__PREFIX": PREFIX.decode(),
            "BRIDGE_ETCD__TIMEOUT": "3",
            "BRIDGE_ETCD__STALL_TIMEOUT": "6",
            **sinks,
            "BRIDGE_HA__ENABLED": "true",
            "BRIDGE_HA__TTL": "2",
            "BRIDGE_HA__KEY_PREFIX": ELECTION_PREFIX,
            "BRIDGE_PUMP__BATCH_EVENTS": "200",
            "BRIDGE_HTTP__ENABLED": "false",
            "BRIDGE_LOG__FORMAT": "text",
        }

    def dead_letters(self, sink: str) -> Path:
        """The dead-letter file of ``sink`` (under ``RefusalPolicy.DEAD_LETTER``)."""
        return self.workdir / sink / "dead-letters.jsonl"

    def start_bridge(self, *, journal: Path | None = None) -> BridgeProcess:
        """One more instance (with the log in ``journal``, if on: by default a new directory);
        the lock keeps ``bridges`` whole for the chaos thread."""
        with self._lock:
            settings = self.settings()
            if self._journal:
                journal = journal or self.workdir / "journals" / str(len(self._journals))
                settings["BRIDGE_JOURNAL__PATH"] = str(journal)
            bridge = self.factory.start(**settings)
            if journal is not None:
                self._journals[id(bridge)] = journal
            self.bridges.append(bridge)
            return bridge

    def kill(self, bridge: BridgeProcess) -> None:
        """SIGKILL ``bridge`` and start another instance in its place, on its log."""
        with self._lock:
            bridge.kill()
            self.bridges.remove(bridge)
        self.start_bridge(journal=self._journals.pop(id(bridge), None))

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
            self.start_bridge(journal=self._journals.pop(id(bridge), None))

    def leader_pid(self) -> int | None:
        """The pid etcd's election key names (its value is ``host:pid``), if any, from the
        first member that answers (one may be partitioned)."""
        failure: Exception | None = None
        for member in self.members:
            client = etcd_client(member, timeout=2)
            try:
                value, _meta = client.get(ELECTION_PREFIX + PIPELINE)
            except Exception as error:  # noqa: BLE001 - the next member may answer
                failure = error
                continue
            finally:
                client.close()
            return None if value is None else int(value.rsplit(b":", 1)[-1])
        raise RuntimeError(f"no etcd member answered: {failure!r}")

    def watched(self, bridge: BridgeProcess) -> EtcdServer:
        """The member ``bridge`` last connected to (its first pipeline's, from its log)."""
        connections = _CONNECTED.findall(bridge.log_text())
        if not connections:
            return self.etcd
        first_sink = connections[0][0]
        endpoint = [endpoint for sink, endpoint in connections if sink == first_sink][-1]
        return next(member for member in self.members if member.url == endpoint)

    def failovers(self) -> int:
        """How many times a pipeline of an instance connected to another etcd member than
        the one it had connected to before, read from every instance's log."""
        count = 0
        for bridge in self.factory.processes:
            endpoints: dict[str, str] = {}
            for sink, endpoint in _CONNECTED.findall(bridge.log_text()):
                count += endpoints.get(sink, endpoint) != endpoint
                endpoints[sink] = endpoint
        return count

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

    def wait_held(self, *, revision: int, timeout: float, what: str) -> None:
        """Until every sink holds ``revision`` (past its snapshot), replacing crashed bridges.
        Gives up early when no instance has been active for 30 s: nothing would move."""
        waiting = set(self.sinks)
        started = last_active = time.monotonic()
        while waiting:
            now = time.monotonic()
            if now - started > timeout or now - last_active > 30:
                why = "no instance active for 30s" if now - last_active > 30 else f"{timeout:.0f}s"
                raise TimeoutError(f"gave up waiting for {what} in {sorted(waiting)} ({why})")
            self.reap()
            with contextlib.suppress(Exception):
                if self.active() is not None:
                    last_active = now
            for name in sorted(waiting):
                sink = self.sinks[name]
                if sink.tail_creates and any(not self.sinks[n].tail_creates for n in waiting):
                    continue  # let the bridge create the destination before a reader opens it
                with contextlib.suppress(Exception):
                    if holds(sink.tail(pipeline=PIPELINE, prefix=PREFIX), revision=revision):
                        waiting.discard(name)
            time.sleep(0.5)

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

    def storage_fault(self, kind: str, *, seconds: float) -> None:
        """``disk_full``: the file sink's disk full for ``seconds``; ``oom``: Redis refusing
        writes for want of memory as long (``tests.chaos.storage``)."""
        if kind == "disk_full":
            storage.fill_for(self.workdir / "file", seconds=seconds)
        else:
            destination = self.sinks["redis"]
            assert isinstance(destination, RedisDestination)
            with destination.client() as client:
                storage.starve_for(client, seconds=seconds)

    def stop(self) -> None:
        """Stop everything this run started, whatever state it is in."""
        self.factory.stop_all()
        for server in (*self.members, *self.servers.values()):
            with contextlib.suppress(Exception):
                server.stop()
        if self.network is not None:
            self.network.close()
        self._mounts.close()


def holds(last: Event | None, *, revision: int) -> bool:
    """Whether a sink whose last event is ``last`` has everything up to ``revision``."""
    if last is None or last.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT):
        return False
    return last.revision >= revision
