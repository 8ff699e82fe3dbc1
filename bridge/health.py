"""What each pipeline is doing, and the HTTP endpoint that tells operators and steers it.

``/healthz`` (liveness) answers 200 while every pipeline is alive: it heard from etcd or
wrote to its sink recently (an idle watch still hears progress answers, requested every third
of ``BRIDGE_ETCD__STALL_TIMEOUT``), or it is deliberately waiting for a sink to come back, or
it has failed for good (a refused event, refused credentials), which a restart would not mend
while it would interrupt the other sinks: the body names it, ``/readyz`` answers 503 and the
phase metric says ``failed``.
``/readyz`` answers 200 when every pipeline has finished its snapshot, is watching and its
sink accepted the last batch. Both return a JSON body with each pipeline's phase.
``/metrics`` serves ``bridge.metrics.REGISTRY`` in the Prometheus text format.
``/positions`` tells, per sink, where it stands (docs/operating.md).

``POST /resnapshot?sink=NAME`` asks that sink's pipeline for a fresh snapshot. It changes
what consumers receive, so it is refused (403) unless ``BRIDGE_HTTP__ADMIN_TOKEN`` is set,
and then needs that token as a bearer token (401 otherwise, logged without what was sent).
"""

import enum
import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge import metrics
from bridge.events import Position

log = logging.getLogger(__name__)


class Phase(enum.StrEnum):
    STARTING = "starting"
    STANDBY = "standby"
    SNAPSHOT = "snapshot"
    WATCHING = "watching"
    ETCD_DOWN = "etcd_down"
    SINK_DOWN = "sink_down"
    STOPPED = "stopped"
    FAILED = "failed"


_READY = frozenset({Phase.WATCHING})
_WAITING = frozenset({Phase.STANDBY, Phase.SINK_DOWN, Phase.STOPPED})
_READING = frozenset({Phase.SNAPSHOT, Phase.WATCHING})
_NOT_DELIVERING = frozenset({Phase.STANDBY, Phase.STOPPED, Phase.FAILED})


class SnapshotRequest:
    """``POST /resnapshot``, handed from an HTTP thread to the pipeline's change source.

    The source listens while it is open: a request ends its watch at once, so that an idle
    prefix does not wait for the next progress answer. A request made while no source is open
    (the sink is being reopened) stays pending and is taken by the next one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self._listener: Callable[[], None] | None = None

    @property
    def pending(self) -> bool:
        return self._pending

    def ask(self) -> None:
        with self._lock:
            self._pending = True
            listener = self._listener
        if listener is not None:
            listener()

    def take(self) -> bool:
        """Whether a snapshot was asked for since the last call."""
        with self._lock:
            pending, self._pending = self._pending, False
        return pending

    def listen(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listener = listener

    def forget(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``, unless a newer source has taken its place: a closed
        source may end after the next one opened."""
        with self._lock:
            if self._listener == listener:
                self._listener = None


@dataclass
class PipelineStats:
    """Where one pipeline stands, for its log lines, lag metrics and ``/positions``."""

    sink: str
    delivered: int = 0
    position: Position | None = None
    etcd_revision: int = 0
    caught_up_at: float = 0.0
    snapshot_keys_read: int = 0
    """Keys read so far by the current (or last) snapshot, of how many it holds."""
    snapshot_keys_expected: int = 0
    synced_revision: int = 0
    """etcd said it had sent every change up to this revision (a progress answer), and the
    sink holds them all: an idle prefix in a busy etcd is not behind."""
    last_event_at: float = 0.0
    """Unix time the pipeline last received a change from etcd."""
    etcd_heard_at: float = 0.0
    """Unix time its watch or snapshot last heard from etcd (a change, a progress answer, a
    page)."""
    etcd_endpoint: str = ""
    """The etcd member it last connected to: after a failover, which one it reads from."""

    def caught_up_to(self, revision: int) -> None:
        """The sink holds every change up to ``revision`` (see ``synced_revision``)."""
        self.synced_revision = max(self.synced_revision, revision)
        self.observe()

    def observe(self) -> None:
        """Publish the lag: revisions behind etcd, and seconds since last caught up."""
        held = self.held_revision
        now = time.monotonic()
        if self.lag_revisions == 0 or not self.caught_up_at:
            self.caught_up_at = now
        sink = self.sink
        metrics.SINK_REVISION.labels(sink).set(held)
        metrics.ETCD_REVISION.labels(sink).set(self.etcd_revision)
        metrics.LAG_REVISIONS.labels(sink).set(self.lag_revisions)
        metrics.LAG_SECONDS.labels(sink).set(now - self.caught_up_at)

    @property
    def held_revision(self) -> int:
        return self.position.revision if self.position is not None else 0

    @property
    def lag_revisions(self) -> int:
        """Revisions of etcd after those the sink is known to hold every change of."""
        return max(0, self.etcd_revision - max(self.held_revision, self.synced_revision))

    @property
    def lag_seconds(self) -> float:
        return time.monotonic() - self.caught_up_at if self.caught_up_at else 0.0


@dataclass
class PipelineHealth:
    """One pipeline's phase, the last time it showed life and where it stands; written by its
    own threads, read by the HTTP endpoint's."""

    sink: str
    phase: Phase = Phase.STARTING
    heartbeat: float = field(default_factory=time.monotonic)
    guarantee: str = ""
    """The sink's delivery guarantee, once it is built (``Sink.guarantee``)."""
    format: str = ""
    """The sink's record format, once it is built (``BRIDGE_<NAME>__FORMAT``)."""
    stats: PipelineStats = field(init=False)
    snapshot_request: SnapshotRequest = field(default_factory=SnapshotRequest)
    _sink_down: bool = field(default=False, init=False)
    """``sink_down`` was entered, and the sink has accepted nothing since."""
    _reading: Phase = field(default=Phase.WATCHING, init=False)
    """The source's last reading phase, shown once a sink that was down accepts again."""
    _fed_while_down: bool = field(default=False, init=False)
    """A source entered a reading phase since ``sink_down`` was entered: the sink was
    reopened and is being fed, so silence means a stuck pipeline again (``alive``)."""
    _changing: threading.Lock = field(default_factory=threading.Lock, init=False)
    """Held while the phase changes: the source's thread enters phases while the pump's
    reports that the sink accepted a batch, and a phase read by one must not be shown after
    the other's newer one (a reopened sink once stayed in ``snapshot`` while watching)."""

    def __post_init__(self) -> None:
        self.stats = PipelineStats(self.sink)
        metrics.prepare(self.sink, self.stats)
        self._publish_phase()

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def enter(self, phase: Phase) -> None:
        """Enter ``phase``; while the sink is down, a source's reading phase (snapshot,
        watching) is kept for when it accepts again instead: a retry opens a fresh source,
        which would otherwise report a sink that has taken nothing since it failed as
        watching, until its next write fails."""
        with self._changing:
            if phase in _READING:
                self._reading = phase
                if self._sink_down:
                    self._fed_while_down = True
                    self.beat()
                    return
            self._sink_down = phase is Phase.SINK_DOWN
            self._fed_while_down = False
            self._show(phase)

    def sink_accepted(self) -> None:
        """The sink took a batch, or holds every change etcd has: if it was down, the
        source's phase stands again."""
        if self._sink_down:
            with self._changing:
                if self._sink_down:
                    self._sink_down = self._fed_while_down = False
                    self._show(self._reading)
        self.beat()

    def _show(self, phase: Phase) -> None:
        if phase is not self.phase:
            log.info("pipeline phase", extra={"sink": self.sink, "phase": phase.value})
            self.phase = phase
            self._publish_phase()
        self.beat()

    def _publish_phase(self) -> None:
        for phase in Phase:
            metrics.PIPELINE_PHASE.labels(self.sink, phase.value).set(phase is self.phase)

    def alive(self, *, silence_limit: float) -> bool:
        """Whether a restart is not called for (see the module docstring). A pipeline shown
        ``sink_down`` whose reopened sink is being fed is judged by its silence, as it would
        be if its source's phase were shown: it is not waiting, and it may be stuck."""
        if (self.phase in _WAITING and not self._fed_while_down) or self.phase is Phase.FAILED:
            return True
        return time.monotonic() - self.heartbeat < silence_limit

    def describe(self) -> dict[str, Any]:
        """This pipeline's entry of ``/positions``."""
        stats = self.stats
        return {
            "sink": self.sink,
            "phase": self.phase.value,
            "position": None if stats.position is None else str(stats.position),
            "etcd_revision": stats.etcd_revision,
            "etcd_endpoint": stats.etcd_endpoint,
            "lag_revisions": stats.lag_revisions,
            "lag_seconds": round(stats.lag_seconds, 3),
            "guarantee": self.guarantee,
            "format": self.format,
            "snapshot": {
                "keys_read": stats.snapshot_keys_read,
                "keys_expected": stats.snapshot_keys_expected,
            },
        }


class HealthServer:
    """A small threaded HTTP server for the endpoints of the module docstring."""

    def __init__(
        self,
        pipelines: Sequence[PipelineHealth],
        *,
        host: str,
        port: int,
        silence_limit: float,
        admin_token: str | None = None,
    ) -> None:
        """``admin_token``: what ``POST`` requests must bear (None: they are refused)."""
        self._pipelines = pipelines
        self._silence_limit = silence_limit
        self._admin_token = None if admin_token is None else admin_token.encode()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def report(self, *, ready: bool) -> tuple[HTTPStatus, bytes]:
        phases = {health.sink: health.phase.value for health in self._pipelines}
        if ready:
            good = all(health.phase in _READY for health in self._pipelines)
        else:
            good = all(
                health.alive(silence_limit=self._silence_limit) for health in self._pipelines
            )
        status = HTTPStatus.OK if good else HTTPStatus.SERVICE_UNAVAILABLE
        return status, orjson.dumps({"ok": good, "pipelines": phases})

    def positions(self) -> tuple[HTTPStatus, bytes]:
        return HTTPStatus.OK, orjson.dumps(
            {"pipelines": [health.describe() for health in self._pipelines]}
        )

    def resnapshot(self, query: str, *, authorization: str | None) -> tuple[HTTPStatus, bytes]:
        """``POST /resnapshot?sink=NAME``: see the module docstring."""
        refusal = self._refusal(authorization)
        if refusal is not None:
            return refusal
        names = parse_qs(query).get("sink", [])
        by_name = {health.sink: health for health in self._pipelines}
        if len(names) != 1 or names[0] not in by_name:
            known = ", ".join(by_name)
            return _error(HTTPStatus.NOT_FOUND, f"name one sink: ?sink= one of {known}")
        health = by_name[names[0]]
        if health.phase in _NOT_DELIVERING:
            return _error(
                HTTPStatus.CONFLICT,
                f"sink {health.sink} is {health.phase.value} here: ask the active instance",
            )
        health.snapshot_request.ask()
        log.warning("snapshot requested", extra={"sink": health.sink})
        return HTTPStatus.ACCEPTED, orjson.dumps({"sink": health.sink, "snapshot": "requested"})

    def _refusal(self, authorization: str | None) -> tuple[HTTPStatus, bytes] | None:
        """Why a mutating request may not go on (None: it may). The token is compared in
        constant time and never logged."""
        if self._admin_token is None:
            return _error(
                HTTPStatus.FORBIDDEN, "admin endpoints are off: set BRIDGE_HTTP__ADMIN_TOKEN"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._admin_token
        ):
            log.warning(
                "admin request refused: missing or wrong token",
                extra={"authorization": "missing" if authorization is None else "wrong"},
            )
            return _error(HTTPStatus.UNAUTHORIZED, "missing or wrong admin token")
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    exposition = generate_latest(metrics.REGISTRY)
                    self._send(HTTPStatus.OK, exposition, CONTENT_TYPE_LATEST)
                elif self.path in ("/healthz", "/readyz"):
                    self._send_json(*server.report(ready=self.path == "/readyz"))
                elif self.path == "/positions":
                    self._send_json(*server.positions())
                else:
                    self._send_json(*_error(HTTPStatus.NOT_FOUND, "not found"))

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                url = urlsplit(self.path)
                if url.path == "/resnapshot":
                    authorization = self.headers.get("Authorization")
                    self._send_json(*server.resnapshot(url.query, authorization=authorization))
                else:
                    self._send_json(*_error(HTTPStatus.NOT_FOUND, "not found"))

            def _send_json(self, status: HTTPStatus, body: bytes) -> None:
                self._send(status, body, "application/json")

            def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Requests are not logged: probes every few seconds would drown the log."""

        return Handler


def _error(status: HTTPStatus, message: str) -> tuple[HTTPStatus, bytes]:
    return status, orjson.dumps({"error": message})
