"""The servers and bridge instances of one chaos run, and which instance is active.

etcd and the server of every sink of the run (``tests.sinks``: the broker, Redis, NATS,
PostgreSQL) each have a directory of the run's working directory, where etcd and the sinks'
servers keep the data their restarts resume from; each sink writes to its destination named
after the pipeline. Bridge instances come and go: a killed or crashed one is replaced at once,
so two always run and a standby is ready to take over. Which one is active is read from etcd
(the election key names the holder's pid) and confirmed by that instance's own log: the chaos
must kill the leader, not a standby.
"""

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.chaos.common import PIPELINE, PREFIX, etcd_client, say
from tests.fixtures.bridge import BridgeFactory, BridgeProcess
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import ManagedProcess
from tests.sinks import SINKS, Destination
from tests.sinks.base import SinkServer

ELECTION_PREFIX = "/bridge-leader/"


class Cluster:
    """etcd, the sinks' servers and the bridge instances of one run; ``stop`` ends them all."""

    def __init__(self, workdir: Path, *, sinks: Sequence[str]) -> None:
        self.workdir = workdir
        for part in ("etcd", "bridges", *sinks):
            (workdir / part).mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(version="3.5", workdir=workdir / "etcd")
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

    def start(self) -> None:
        """The servers; bridge instances are started one by one with ``start_bridge``."""
        self.etcd.start()
        for server in self.servers.values():
            server.start()

    def process(self, server: str) -> ManagedProcess:
        """The process of ``server``: ``etcd`` or a sink's name."""
        return self.etcd.process if server == "etcd" else self.servers[server].process

    def restart(self, server: str) -> None:
        """Stop ``server`` (``etcd`` or a sink's name) and start it again on its data."""
        if server == "etcd":
            self.etcd.restart()
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
        return {
            "BRIDGE_NAME": PIPELINE,
            "BRIDGE_SINKS": ",".join(self.sinks),
            "BRIDGE_STDOUT__CHECKPOINT_DIR": str(self.workdir / "checkpoints"),
            "BRIDGE_ETCD__ENDPOINTS": self.etcd.url,
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

    def start_bridge(self) -> BridgeProcess:
        """One more instance; the lock keeps ``bridges`` whole for the chaos thread."""
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
        for server in (self.etcd, *self.servers.values()):
            with contextlib.suppress(Exception):
                server.stop()
