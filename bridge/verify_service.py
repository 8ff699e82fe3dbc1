"""``etcd-bridge verify --every 10m``: verify in rounds forever and export the outcome as
Prometheus gauges, so that drift can be alerted on (docs/verify.md has a rule).

The gauges live in a registry of their own, served at ``/metrics`` on ``BRIDGE_HTTP__PORT``:
a verifier beside a bridge on the same machine needs a port of its own, and exports nothing
of the bridge's. Each round replaces every sink's samples, so a sink that stopped differing
stops showing differences. A round that cannot verify a sink (etcd or the sink down) sets
its ``up`` gauge to 0 and leaves its last outcome in place; ``last_run_timestamp_seconds``
moves at the end of every round, so a verifier that hangs is seen too.
"""

import logging
import re
import threading
import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from bridge.app import Configuration
from bridge.verify import Options, SinkReport, Verdict, print_reports, verify
from config.errors import ConfigError

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600}
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")


def parse_interval(text: str) -> float:
    """``--every``'s value in seconds: a number with an optional unit, ``s``, ``m`` or
    ``h`` (``90``, ``30s``, ``10m``, ``1h``); ConfigError naming it otherwise."""
    match = _INTERVAL.fullmatch(text.strip())
    seconds = float(match[1]) * _UNITS[match[2] or "s"] if match else 0.0
    if seconds <= 0:
        raise ConfigError(f"--every: {text!r} is not a positive duration such as 30s, 10m, 1h")
    return seconds


class VerifyMetrics:
    """The verifier's gauges, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.keys = Gauge(
            "etcd_bridge_verify_keys",
            "Keys of the last round, by outcome: compared, missing (in etcd, not in the sink), "
            "extra (in the sink, not in etcd), different.",
            ["sink", "result"],
            registry=self.registry,
        )
        self.stream = Gauge(
            "etcd_bridge_verify_stream_problems",
            "Events of the sink's stream that break its rules in the last round: repeated "
            "(at or below an earlier position) or gaps (an index that does not follow on).",
            ["sink", "problem"],
            registry=self.registry,
        )
        self.agree = Gauge(
            "etcd_bridge_verify_agree",
            "1 when the sink agreed with etcd in its last verified round, else 0.",
            ["sink"],
            registry=self.registry,
        )
        self.up = Gauge(
            "etcd_bridge_verify_up",
            "1 when the last round could read and compare the sink, 0 when it could not.",
            ["sink"],
            registry=self.registry,
        )
        self.revision = Gauge(
            "etcd_bridge_verify_revision",
            "The revision the sink was compared at in its last verified round.",
            ["sink"],
            registry=self.registry,
        )
        self.last_run = Gauge(
            "etcd_bridge_verify_last_run_timestamp_seconds",
            "Unix time at which the last round ended.",
            registry=self.registry,
        )

    def publish(self, reports: list[SinkReport], *, now: float) -> None:
        for report in reports:
            sink = report.sink
            if report.verdict is Verdict.NO_READER:
                continue
            self.up.labels(sink).set(0 if report.verdict is Verdict.FAILED else 1)
            if report.verdict is Verdict.FAILED:
                continue
            self.agree.labels(sink).set(0 if report.verdict.fails_run else 1)
            self.revision.labels(sink).set(report.compared_at)
            keys = report.keys
            for result, count in (
                ("compared", keys.compared if keys else 0),
                ("missing", keys.missing.count if keys else 0),
                ("extra", keys.extra.count if keys else 0),
                ("different", keys.different.count if keys else 0),
            ):
                self.keys.labels(sink, result).set(count)
            stream = report.stream
            self.stream.labels(sink, "repeated").set(stream.repeated.count if stream else 0)
            self.stream.labels(sink, "gaps").set(stream.gaps.count if stream else 0)
        self.last_run.set(now)


def run_every(
    configuration: Configuration, options: Options, *, interval: float, stop: threading.Event
) -> int:
    """Verify every ``interval`` seconds until ``stop`` is set, serving the gauges; 0 on a
    clean stop. ConfigError naming ``BRIDGE_HTTP__*`` when the gauges cannot be served."""
    http = configuration.settings.http
    if not http.enabled:
        raise ConfigError("--every: the gauges need BRIDGE_HTTP__ENABLED=true (and a port)")
    metrics = VerifyMetrics()
    try:
        server, thread = start_http_server(http.port, addr=http.host, registry=metrics.registry)
    except OSError as error:
        raise ConfigError(
            f"BRIDGE_HTTP__PORT: cannot listen on {http.host}:{http.port} ({error.strerror}); "
            "a bridge on this machine may use it: give verify a port of its own"
        ) from error
    thread.name = "verify-metrics"
    log.info("verify metrics up", extra={"port": server.server_port, "every_seconds": interval})
    try:
        while True:
            reports = verify(configuration, options)
            print_reports(reports, options=options)
            metrics.publish(reports, now=time.time())  # noqa: TID251 - a Unix-time gauge
            if stop.wait(interval):
                return 0
    finally:
        server.shutdown()
        server.server_close()
