"""Wiring: settings -> sinks -> one pipeline per sink, plus signals, election and ``check``.

This is the composition root, the one place that loads sinks: ``configure`` reads the root
settings, finds each selected sink through ``bridge.plugins``, reads its own section
(``BRIDGE_<NAME>__*``) into its ``settings_model``, and refuses any ``BRIDGE_*`` variable that
neither the core nor an installed sink accepts.

With ``BRIDGE_HA__ENABLED`` the pipelines run only while this instance holds the election key
(``bridge.election``): a lost lease ends the term, every pipeline stops without writing more,
and the instance campaigns again as a standby.

``run`` starts a pipeline thread per configured sink and waits. SIGTERM or SIGINT sets the
shared stop event: each pipeline writes and flushes the batch in hand and returns, within
``BRIDGE_PUMP__SHUTDOWN_TIMEOUT``; the exit code is 0. A fatal error in a pipeline (a sink
refusing an event for good under ``ON_REFUSED=stop``, etcd refusing our credentials) stops that
pipeline only, at once and with one log line that says what to fix (the key and revision of a
refused event); the other sinks go on, since their consumers should not wait for another
sink's problem. Each pipeline gets its sink's refusal policy (``bridge.refusal``). The
process ends, with exit code 1, when every pipeline has failed; a signal then ends it with 1
too, since a pipeline did fail.
"""

import logging
import os
import signal
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import orjson
from pydantic import BaseModel

from bridge import metrics, plugins
from bridge.election import Leadership
from bridge.errors import BridgeError, EtcdError, NotLeaderError
from bridge.etcd import EtcdConnection
from bridge.events import Event
from bridge.health import HealthServer, Phase, PipelineHealth
from bridge.journal import RECORDER, inspection, recording
from bridge.logs import error_fields
from bridge.ownership import Owner
from bridge.pump import Pipeline
from bridge.refusal import Refusals
from bridge.sink import Sink
from bridge.source import ChangeSourceFactory, etcd_changes
from config.errors import ConfigError
from config.pump import PumpSettings
from config.settings import ENV_PREFIX, Settings, load_section, load_settings, variable_name
from config.variables import (
    Variable,
    section_prefix,
    set_variables,
    unknown_variables,
    variables,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Configuration:
    """The root settings and, for each selected sink, its name and its loaded section."""

    settings: Settings
    sinks: tuple[tuple[str, BaseModel], ...]

    @property
    def surroundings(self) -> plugins.Surroundings:
        """What every sink (and its reader) is built with besides its own section."""
        settings = self.settings
        return plugins.Surroundings(
            pipeline=settings.name,
            keyspace=settings.etcd.keyspace,
            cluster=settings.cluster,
            values=settings.values,
            ha=settings.ha.enabled,
        )

    def build_sinks(self) -> list[Sink]:
        surroundings = self.surroundings
        return [plugins.build_sink(name, section, **surroundings) for name, section in self.sinks]


def configure(environ: Mapping[str, str] = os.environ) -> Configuration:
    """Read and check every setting; ConfigError with one line per problem, each naming its
    variable: unknown variables, the root's, then each selected sink's.

    Only the selected sinks are imported (a sink's client library costs start-up time and
    memory); the variables of an installed sink that is not selected are accepted unread, since
    they change nothing, and checked once it is selected."""
    problems: list[str] = []
    try:
        settings: Settings | None = load_settings()
    except ConfigError as error:
        settings, problems = None, [str(error)]
    selected = settings.sinks if settings is not None else []
    sink_classes: dict[str, type[Sink]] = {}
    for name in selected:
        try:
            sink_classes[name] = plugins.load(name)
        except ConfigError as error:
            problems.append(str(error))
    known = variables(Settings, ENV_PREFIX)
    for name, sink_class in sink_classes.items():
        known += variables(plugins.settings_model(sink_class), section_prefix(name))
    unselected = [section_prefix(name) for name in plugins.available() if name not in selected]
    problems[:0] = unknown_variables(set_variables(environ), known=known, open_prefixes=unselected)
    sinks: list[tuple[str, BaseModel]] = []
    dead_letters: dict[Path, str] = {}
    for name, sink_class in sink_classes.items():
        try:
            section = load_section(name, plugins.settings_model(sink_class))
            plugins.output_settings(name, sink_class, section)
            path = plugins.refusal_settings(name, section).dead_letter_path
            sinks.append((name, section))
        except ConfigError as error:
            problems.append(str(error))
            continue
        if path is not None and dead_letters.setdefault(path.resolve(), name) != name:
            problems.append(
                f"{variable_name((name, 'dead_letter_path'))}: the {dead_letters[path.resolve()]} "
                "sink's dead-letter file already; give each sink its own"
            )
    if problems or settings is None:
        raise ConfigError("\n".join(problems))
    return Configuration(settings=settings, sinks=tuple(sinks))


def describe_settings(environ: Mapping[str, str] = os.environ) -> list[str]:
    """``etcd-bridge settings``: every variable of the core and of each installed sink, with
    its default, the value set (secrets masked) and its meaning."""
    given = set_variables(environ)
    lines = ["# core", *_describe(variables(Settings, ENV_PREFIX), given)]
    installed, unloadable = _installed_sinks()
    for name, sink_class in installed.items():
        lines.append(f"# sink {name} ({sink_class.guarantee})")
        model = plugins.settings_model(sink_class)
        lines += _describe(variables(model, section_prefix(name)), given)
    for name, problem in unloadable.items():
        lines.append(f"# sink {name} cannot be loaded: {problem}")
    return lines


def _installed_sinks() -> tuple[dict[str, type[Sink]], dict[str, str]]:
    """Every installed sink's class, and why each of the others cannot be loaded."""
    installed: dict[str, type[Sink]] = {}
    unloadable: dict[str, str] = {}
    for name in plugins.available():
        try:
            installed[name] = plugins.load(name)
        except ConfigError as error:
            unloadable[name] = str(error)
    return installed, unloadable


def _describe(found: list[Variable], given: Mapping[str, str]) -> list[str]:
    lines = []
    for variable in found:
        value = given.get(variable.name)
        current = "" if value is None else f"  set: {variable.shown(value)}"
        lines.append(f"{variable.name}  default: {variable.default}{current}")
        lines.append(f"    {variable.field.description or ''}")
    return lines


def run(configuration: Configuration) -> int:
    """Run until a signal (exit 0) or a fatal error (exit 1)."""
    settings = configuration.settings
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
    healths = [
        PipelineHealth(sink=name, format=plugins.section_format(section))
        for name, section in configuration.sinks
    ]
    recorder = None if settings.journal.path is None else PipelineHealth(sink=RECORDER)
    http = _start_http(settings, healths if recorder is None else [*healths, recorder])
    try:
        if settings.ha.enabled:
            failures = _run_elected(configuration, stop=stop, healths=healths, recorder=recorder)
        else:
            failures = _run_term(
                configuration, stop=stop, healths=healths, recorder=recorder, may_write=_always
            )
    finally:
        if http is not None:
            http.stop()
    return 1 if failures else 0


def _report(error: BaseException) -> None:
    """The one line of a pipeline's fatal error."""
    if isinstance(error, BridgeError | ConfigError):
        log.error(str(error), extra=error_fields(error))
    else:
        log.error("unexpected failure", exc_info=error)


def _always() -> bool:
    return True


def _run_elected(
    configuration: Configuration,
    *,
    stop: threading.Event,
    healths: list[PipelineHealth],
    recorder: PipelineHealth | None,
) -> list[BaseException]:
    """Standby until elected, active until the lease is lost, and again, until stopped."""
    settings = configuration.settings
    leadership = Leadership(settings.etcd, ha=settings.ha, pipeline=settings.name)
    leader = metrics.HA_LEADER.labels(settings.name)
    try:
        while True:
            for health in healths if recorder is None else [*healths, recorder]:
                health.enter(Phase.STANDBY)
            leader.set(0)
            # The last term's lease is given back only now, having stood down: across a
            # partition the revoke hangs until its timeout, while another instance may lead.
            leadership.resign()
            if not leadership.acquire(stop):
                return []
            leader.set(1)
            term = threading.Event()
            threading.Thread(
                target=_end_term_when,
                args=(term, stop, leadership.lost),
                name="term-watch",
                daemon=True,
            ).start()
            failures = _run_term(
                configuration,
                stop=term,
                healths=healths,
                recorder=recorder,
                may_write=leadership.valid,
            )
            if stop.is_set() or any(not isinstance(f, NotLeaderError) for f in failures):
                return [f for f in failures if not isinstance(f, NotLeaderError)]
            log.warning("leadership lost, back to standby", extra={"pipeline": settings.name})
    finally:
        leader.set(0)
        leadership.release()


def _end_term_when(term: threading.Event, *events: threading.Event) -> None:
    while not term.is_set():
        if any(event.wait(0.1) for event in events):
            term.set()


def _run_term(
    configuration: Configuration,
    *,
    stop: threading.Event,
    healths: list[PipelineHealth],
    recorder: PipelineHealth | None,
    may_write: Callable[[], bool],
) -> list[BaseException]:
    """One pipeline thread per sink until ``stop``, or until every pipeline has failed;
    returns what failed. A lost leadership ends the term for all of them; any other failure
    ends its own pipeline only (see the module docstring). With the local log on
    (``recorder``: its reader's health), the pipelines read it (``bridge.journal``)."""
    settings = configuration.settings
    sinks = len(settings.sinks)
    if recorder is None:
        etcd = etcd_changes(settings.etcd, pipelines=sinks)
        return _run_pipelines(
            configuration,
            stop=stop,
            healths=healths,
            may_write=may_write,
            source=etcd,
            limits=settings.pump,
        )
    with recording(  # its reader has the whole watch response limit: it is the one watch
        settings.journal,
        identity=_journal_identity(settings),
        etcd=etcd_changes(settings.etcd, pipelines=1),
        catch_up=etcd_changes(settings.etcd, pipelines=sinks + 1),
        health=recorder,
        shutdown_timeout=settings.pump.shutdown_timeout,
        owner=Owner.this_process(settings.name),
    ) as (journal, source):
        for health in healths:
            journal.register(health.stats)
        try:
            return _run_pipelines(
                configuration,
                stop=stop,
                healths=healths,
                may_write=may_write,
                source=source,
                limits=settings.pump.reading_the_log(),
            )
        finally:
            for health in healths:
                journal.unregister(health.stats)


def _journal_identity(settings: Settings) -> str:
    """What the local log is of: the pipeline and its watched keys (a log of others is
    started afresh)."""
    return f"{settings.name} {settings.etcd.keyspace!r}"


def _run_pipelines(
    configuration: Configuration,
    *,
    stop: threading.Event,
    healths: list[PipelineHealth],
    may_write: Callable[[], bool],
    source: ChangeSourceFactory,
    limits: PumpSettings,
) -> list[BaseException]:
    """``_run_term``'s pipelines, each reading its changes from ``source`` within ``limits``."""
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run_pipeline(pipeline: Pipeline) -> None:
        try:
            pipeline.run()
        except NotLeaderError as error:
            with lock:
                failures.append(error)
            stop.set()
        except BaseException as error:  # noqa: BLE001 - reported here, the others go on
            _report(error)
            with lock:
                failures.append(error)
                if len(failures) == len(pipelines):
                    stop.set()

    pipelines = [
        Pipeline(
            sink,
            source=source,
            limits=limits,
            stop=stop,
            health=health,
            may_write=may_write,
            refusals=Refusals.from_settings(
                plugins.refusal_settings(name, section), sink=sink.name
            ),
        )
        for (name, section), sink, health in zip(
            configuration.sinks, configuration.build_sinks(), healths, strict=True
        )
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
        thread.join(limits.shutdown_timeout)
    return failures


def _start_http(settings: Settings, healths: list[PipelineHealth]) -> HealthServer | None:
    if not settings.http.enabled:
        return None
    try:
        token = settings.http.admin_token
        server = HealthServer(
            healths,
            host=settings.http.host,
            port=settings.http.port,
            silence_limit=3 * settings.etcd.stall_timeout,
            admin_token=None if token is None else token.get_secret_value(),
        )
    except OSError as error:
        raise ConfigError(
            f"BRIDGE_HTTP__PORT: cannot listen on {settings.http.host}:{settings.http.port} "
            f"({error.strerror}); choose another port or set BRIDGE_HTTP__ENABLED=false"
        ) from error
    server.start()
    log.info(
        "http endpoint up",
        extra={
            "host": settings.http.host,
            "port": server.port,
            "admin": "on" if settings.http.admin_token is not None else "off",
        },
    )
    return server


def status(configuration: Configuration) -> tuple[list[str], list[str]]:
    """``etcd-bridge status``: each sink's durable position, read from the sink itself without
    changing it (``Sink.peek``: it works while the bridge is down, and beside a running one),
    against etcd's current revision. When a bridge answers on this machine's HTTP port, each
    pipeline's phase and lag come from it (it knows from etcd's progress answers when an idle
    prefix is caught up); otherwise the lag is shown as at most etcd's revision minus the
    sink's, since revisions outside the prefix count there. With the local log on, its size,
    span and each sink's distance in it follow, read from its directory
    (``bridge.journal.inspection``). Returns the lines to print and one line per problem
    (etcd, a sink or the log's directory unreadable)."""
    settings = configuration.settings
    problems: list[str] = []
    connection = EtcdConnection(settings.etcd)
    try:
        revision: int | None = connection.connect()
    except EtcdError as error:
        revision = None
        problems.append(str(error))
    finally:
        connection.close()
    running = _running_pipelines(settings)
    rows = [("SINK", "POSITION", "ETCD REVISION", "LAG", "PHASE", "GUARANTEE", "FORMAT")]
    sinks = configuration.build_sinks()
    tails: dict[str, Event | None] = {}
    for (name, section), sink in zip(configuration.sinks, sinks, strict=True):
        try:
            tail = tails[name] = sink.peek()
        except (BridgeError, ConfigError) as error:
            problems.append(str(error))
            position, lag = "unreadable", "-"
        else:
            held = 0 if tail is None else tail.revision
            position = "empty" if tail is None else f"{tail.position} ({tail.op.value})"
            lag = "-" if revision is None else f"<={max(0, revision - held)}"
        if name in running:
            lag = str(running[name]["lag_revisions"])
        rows.append(
            (
                name,
                position,
                "-" if revision is None else str(revision),
                lag,
                str(running[name]["phase"]) if name in running else "-",
                sink.guarantee,
                plugins.section_format(section),
            )
        )
    lines = _table(rows)
    if not running and settings.http.enabled:
        lines.append(f"(no bridge answers at {_local_url(settings)}: down, or running elsewhere)")
    if settings.journal.path is not None:
        journal, unreadable = inspection.status(
            settings.journal, identity=_journal_identity(settings), tails=tails
        )
        lines += journal
        problems += unreadable
    return lines, problems


def _local_url(settings: Settings) -> str:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - where a bridge listening everywhere answers
        host = "127.0.0.1"
    return f"http://{host}:{settings.http.port}"


def _running_pipelines(settings: Settings) -> dict[str, dict[str, object]]:
    """Each pipeline's ``/positions`` entry from the bridge on this machine's HTTP port (empty
    when none answers)."""
    if not settings.http.enabled:
        return {}
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own endpoint, http only
            f"{_local_url(settings)}/positions", timeout=2
        ) as response:
            pipelines = orjson.loads(response.read())["pipelines"]
    except (OSError, ValueError, KeyError):
        return {}
    return {str(entry["sink"]): entry for entry in pipelines}


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def check(configuration: Configuration) -> tuple[list[str], list[str]]:
    """Reach etcd, look at the local log's directory (if on) and open every sink; return
    (what is fine, one line per problem)."""
    fine: list[str] = []
    problems: list[str] = []
    connection = EtcdConnection(configuration.settings.etcd)
    try:
        revision = connection.connect()
        fine.append(f"etcd {connection.endpoint} answers at revision {revision}")
    except EtcdError as error:
        problems.append(str(error))
    finally:
        connection.close()
    settings = configuration.settings
    if settings.journal.path is not None:
        usable, unusable = inspection.check(settings.journal, identity=_journal_identity(settings))
        fine += usable
        problems += unusable
    try:
        sinks = configuration.build_sinks()
    except (BridgeError, ConfigError) as error:
        return fine, [*problems, str(error)]
    for sink in sinks:
        try:
            with sink:
                tail = sink.open()
            position = "nothing yet" if tail is None else f"up to {tail.position}"
            fine.append(f"sink {sink.name} is reachable and holds {position} ({sink.guarantee})")
        except (BridgeError, ConfigError) as error:
            problems.append(str(error))
    return fine, problems
