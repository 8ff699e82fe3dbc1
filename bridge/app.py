"""Wiring: settings -> sinks -> one pipeline per sink, plus signals, election and ``check``.

With ``BRIDGE_HA__ENABLED`` the pipelines run only while this instance holds the election key
(``bridge.election``): a lost lease ends the term, every pipeline stops without writing more,
and the instance campaigns again as a standby.

``run`` starts a pipeline thread per configured sink and waits. SIGTERM or SIGINT sets the
shared stop event: each pipeline writes and flushes the batch in hand and returns, within
``BRIDGE_PUMP__SHUTDOWN_TIMEOUT``; the exit code is 0. A fatal error in any pipeline (a sink
refusing an event for good, etcd refusing our credentials) stops all of them and the exit
code is 1, after one log line that says what to fix.
"""

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from bridge.election import Leadership
from bridge.errors import BridgeError, ConfigError, EtcdError, NotLeaderError
from bridge.etcd import EtcdConnection
from bridge.health import HealthServer, Phase, PipelineHealth
from bridge.pump import Pipeline
from config.settings import Settings
from sinks import registry
from sinks.base import Sink

log = logging.getLogger(__name__)


def build_sinks(settings: Settings) -> list[Sink]:
    return [registry.load(name).from_settings(settings) for name in settings.sinks]


def run(settings: Settings) -> int:
    """Run until a signal (exit 0) or a fatal error (exit 1)."""
    for name in settings.sinks:
        registry.load(name)  # an unknown sink is a configuration error: say so before anything
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "etcd-bridge starting",
        extra={
            "pipeline": settings.name,
            "prefix": ",".join(settings.etcd.prefix),
            "endpoints": ",".join(settings.etcd.endpoints),
            "sinks": ",".join(settings.sinks),
            "ha": settings.ha.enabled,
        },
    )
    healths = [PipelineHealth(sink=name) for name in settings.sinks]
    http = _start_http(settings, healths)
    try:
        if settings.ha.enabled:
            failures = _run_elected(settings, stop=stop, healths=healths)
        else:
            failures = _run_term(settings, stop=stop, healths=healths, may_write=_always)
    finally:
        if http is not None:
            http.stop()
    for error in failures:
        if isinstance(error, BridgeError):
            log.error(str(error), extra={"error": type(error).__name__})
        else:
            log.error("unexpected failure", exc_info=error)
    return 1 if failures else 0


def _always() -> bool:
    return True


def _run_elected(
    settings: Settings, *, stop: threading.Event, healths: list[PipelineHealth]
) -> list[BaseException]:
    """Standby until elected, active until the lease is lost, and again, until stopped."""
    leadership = Leadership(settings.etcd, ha=settings.ha, pipeline=settings.name)
    try:
        while True:
            for health in healths:
                health.enter(Phase.STANDBY)
            if not leadership.acquire(stop):
                return []
            term = threading.Event()
            threading.Thread(
                target=_end_term_when, args=(term, stop, leadership.lost), daemon=True
            ).start()
            failures = _run_term(settings, stop=term, healths=healths, may_write=leadership.valid)
            if stop.is_set() or any(not isinstance(f, NotLeaderError) for f in failures):
                return [f for f in failures if not isinstance(f, NotLeaderError)]
            leadership.resign()
            log.warning("leadership lost, back to standby", extra={"pipeline": settings.name})
    finally:
        leadership.release()


def _end_term_when(term: threading.Event, *events: threading.Event) -> None:
    while not term.is_set():
        if any(event.wait(0.1) for event in events):
            term.set()


def _run_term(
    settings: Settings,
    *,
    stop: threading.Event,
    healths: list[PipelineHealth],
    may_write: Callable[[], bool],
) -> list[BaseException]:
    """One pipeline thread per sink until ``stop``; returns what failed."""
    failures: list[BaseException] = []

    def run_pipeline(pipeline: Pipeline) -> None:
        try:
            pipeline.run()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)
            stop.set()

    pipelines = [
        Pipeline(sink, settings=settings, stop=stop, health=health, may_write=may_write)
        for sink, health in zip(build_sinks(settings), healths, strict=True)
    ]
    threads = [
        threading.Thread(target=run_pipeline, args=(pipeline,), name=f"sink-{pipeline.sink.name}")
        for pipeline in pipelines
    ]
    for thread in threads:
        thread.start()
    while not stop.wait(1.0):
        pass
    for thread in threads:
        thread.join(settings.pump.shutdown_timeout)
    return failures


def _start_http(settings: Settings, healths: list[PipelineHealth]) -> HealthServer | None:
    if not settings.http.enabled:
        return None
    try:
        server = HealthServer(
            healths,
            host=settings.http.host,
            port=settings.http.port,
            silence_limit=3 * settings.etcd.stall_timeout,
        )
    except OSError as error:
        raise ConfigError(
            f"BRIDGE_HTTP__PORT: cannot listen on {settings.http.host}:{settings.http.port} "
            f"({error.strerror}); choose another port or set BRIDGE_HTTP__ENABLED=false"
        ) from None
    server.start()
    log.info("http endpoint up", extra={"host": settings.http.host, "port": server.port})
    return server


def check(settings: Settings) -> tuple[list[str], list[str]]:
    """Reach etcd and open every sink; return (what is fine, one line per problem)."""
    fine: list[str] = []
    problems: list[str] = []
    connection = EtcdConnection(settings.etcd)
    try:
        revision = connection.connect()
        fine.append(f"etcd {connection.endpoint} answers at revision {revision}")
    except EtcdError as error:
        problems.append(str(error))
    finally:
        connection.close()
    try:
        sinks = build_sinks(settings)
    except BridgeError as error:
        return fine, [*problems, str(error)]
    for sink in sinks:
        try:
            with sink:
                tail = sink.open()
            position = "nothing yet" if tail is None else f"up to {tail.position}"
            fine.append(f"sink {sink.name} is reachable and holds {position} ({sink.guarantee})")
        except BridgeError as error:
            problems.append(str(error))
    return fine, problems
