"""What each pipeline is doing, and the HTTP endpoint that tells operators.

``/healthz`` (liveness) answers 200 while every pipeline is alive: it heard from etcd or
wrote to its sink recently (an idle watch still hears progress answers, requested every third
of ``BRIDGE_ETCD__STALL_TIMEOUT``), or it is deliberately waiting for a sink to come back.
``/readyz`` answers 200 when every pipeline has finished its snapshot, is watching and its
sink accepted the last batch. Both return a JSON body with each pipeline's phase.
``/metrics`` serves ``bridge.metrics.REGISTRY`` in the Prometheus text format.
"""

import enum
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.metrics import REGISTRY

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


@dataclass
class PipelineHealth:
    """One pipeline's phase and the last time it showed life; written by its own threads."""

    sink: str
    phase: Phase = Phase.STARTING
    heartbeat: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def enter(self, phase: Phase) -> None:
        if phase is not self.phase:
            log.info("pipeline phase", extra={"sink": self.sink, "phase": phase.value})
        self.phase = phase
        self.beat()

    def alive(self, *, silence_limit: float) -> bool:
        if self.phase is Phase.FAILED:
            return False
        if self.phase in _WAITING:
            return True
        return time.monotonic() - self.heartbeat < silence_limit


class HealthServer:
    """A small threaded HTTP server for /healthz, /readyz and /metrics."""

    def __init__(
        self, pipelines: Sequence[PipelineHealth], *, host: str, port: int, silence_limit: float
    ) -> None:
        self._pipelines = pipelines
        self._silence_limit = silence_limit
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    self._send(HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif self.path in ("/healthz", "/readyz"):
                    status, body = server.report(ready=self.path == "/readyz")
                    self._send(status, body, "application/json")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b'{"error":"not found"}', "application/json")

            def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Requests are not logged: probes every few seconds would drown the log."""

        return Handler
