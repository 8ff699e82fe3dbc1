"""The Prometheus metrics of the bridge, in one registry served at ``/metrics``.

Every metric is labelled by ``sink``: each sink has its own pipeline, position and watch, so
each is observed on its own. Updating a metric is cheap (a lock and an add); the pump updates
them once per batch or chunk, never per event. Labels take few values: an error is counted by
its sink and class (``count_error``), never by the key, revision or endpoint it carries.
"""

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.events import EventType

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_DELIVERED = Counter(
    "etcd_bridge_events_delivered",
    "Events durably delivered to a sink, by event type (PUT, DELETE, MARKER).",
    ["sink", "type"],
    registry=REGISTRY,
)
ETCD_REVISION = Gauge(
    "etcd_bridge_etcd_revision",
    "etcd's current revision, as last reported to the sink's watch.",
    ["sink"],
    registry=REGISTRY,
)
SINK_REVISION = Gauge(
    "etcd_bridge_sink_revision",
    "Revision of the last event the sink durably holds.",
    ["sink"],
    registry=REGISTRY,
)
LAG_REVISIONS = Gauge(
    "etcd_bridge_lag_revisions",
    "etcd's revision minus the last one the sink is known to hold every change of: its last "
    "event's, or the one of etcd's last progress answer once everything before it is held "
    "(an idle prefix in a busy etcd is not behind).",
    ["sink"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "etcd_bridge_lag_seconds",
    "Seconds since the sink last held everything etcd had reported (0 when caught up).",
    ["sink"],
    registry=REGISTRY,
)
SNAPSHOT_EVENTS = Counter(
    "etcd_bridge_snapshot_events",
    "Snapshot events (keys and markers) read from etcd.",
    ["sink"],
    registry=REGISTRY,
)
SNAPSHOT_IN_PROGRESS = Gauge(
    "etcd_bridge_snapshot_in_progress",
    "1 while the sink's pipeline is taking a snapshot.",
    ["sink"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    "etcd_bridge_resyncs",
    "New snapshots taken because the position had been compacted away.",
    ["sink"],
    registry=REGISTRY,
)
WATCH_FRAGMENTED = Counter(
    "etcd_bridge_watch_fragmented",
    "Watch responses over the pipeline's whole-response limit, read again in etcd fragments.",
    ["sink"],
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "etcd_bridge_etcd_reconnects",
    "Reconnections to etcd after a broken, cancelled or stalled watch.",
    ["sink"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "etcd_bridge_errors",
    "Errors by kind (the error class); retryable ones are retried.",
    ["sink", "kind"],
    registry=REGISTRY,
)
REFUSED_EVENTS = Counter(
    "etcd_bridge_refused_events",
    "Events the sink refused for good, by what was done (BRIDGE_<NAME>__ON_REFUSED): stop "
    "(the pipeline stopped before it), omit_value (delivered without its values), "
    "dead_letter (appended to the dead-letter file).",
    ["sink", "policy"],
    registry=REGISTRY,
)
BATCH_EVENTS = Histogram(
    "etcd_bridge_batch_events",
    "Events per batch written to a sink.",
    ["sink"],
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 20000),
    registry=REGISTRY,
)
WRITE_SECONDS = Histogram(
    "etcd_bridge_write_seconds",
    "Seconds to write and flush one batch.",
    ["sink"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10),
    registry=REGISTRY,
)


PIPELINE_PHASE = Gauge(
    "etcd_bridge_pipeline_phase",
    "1 for the phase the sink's pipeline is in (bridge.health.Phase), 0 for the others.",
    ["sink", "phase"],
    registry=REGISTRY,
)
HA_LEADER = Gauge(
    "etcd_bridge_ha_leader",
    "1 while this instance holds its HA group's election, 0 while it stands by (HA only).",
    ["pipeline"],
    registry=REGISTRY,
)
SNAPSHOT_KEYS_READ = Gauge(
    "etcd_bridge_snapshot_keys_read",
    "Keys read so far by the current (or last) snapshot.",
    ["sink"],
    registry=REGISTRY,
)
SNAPSHOT_KEYS_EXPECTED = Gauge(
    "etcd_bridge_snapshot_keys_expected",
    "Keys the current (or last) snapshot holds: a count-only range at its revision (before "
    "key filters).",
    ["sink"],
    registry=REGISTRY,
)
SINK_DATA_LOST = Counter(
    "etcd_bridge_sink_data_lost",
    "Reopened sinks found holding less than the bridge had flushed to them (a server restarted "
    "empty, a stream deleted, a file truncated); each is followed by a snapshot, reason lost.",
    ["sink"],
    registry=REGISTRY,
)
SNAPSHOTS_REQUESTED = Counter(
    "etcd_bridge_snapshots_requested",
    "Snapshots taken on request (POST /resnapshot).",
    ["sink"],
    registry=REGISTRY,
)
LAST_EVENT_TIMESTAMP = Gauge(
    "etcd_bridge_last_event_timestamp_seconds",
    "Unix time the sink's pipeline last received a change from etcd.",
    ["sink"],
    registry=REGISTRY,
)
ETCD_PROGRESS_TIMESTAMP = Gauge(
    "etcd_bridge_etcd_progress_timestamp_seconds",
    "Unix time the sink's watch last heard from etcd (a change or a progress answer): "
    "recent with an old last event is an idle prefix; old is a stuck watch.",
    ["sink"],
    registry=REGISTRY,
)

JOURNAL_BYTES = Gauge(
    "etcd_bridge_journal_bytes",
    "Bytes the local log holds on disk (BRIDGE_JOURNAL__PATH; 0 when it is off).",
    registry=REGISTRY,
)
JOURNAL_FIRST_REVISION = Gauge(
    "etcd_bridge_journal_first_revision",
    "Revision of the first event the local log holds: the oldest history it still serves.",
    registry=REGISTRY,
)
JOURNAL_LAST_REVISION = Gauge(
    "etcd_bridge_journal_last_revision",
    "Revision of the last event the local log holds.",
    registry=REGISTRY,
)
JOURNAL_BEHIND_BYTES = Gauge(
    "etcd_bridge_journal_behind_bytes",
    "Bytes of the local log after the place the sink reads it from (0 at its end; not set "
    "while the sink catches up from etcd).",
    ["sink"],
    registry=REGISTRY,
)
JOURNAL_OVERRUNS = Counter(
    "etcd_bridge_journal_overruns",
    "Times the part of the local log a sink was to read next was gone (trimmed past the disk "
    "budget, or the log started afresh), so that it caught up from etcd instead.",
    ["sink"],
    registry=REGISTRY,
)


class Observed(Protocol):
    """What a pipeline keeps that its gauges read when scraped (``bridge.health.PipelineStats``):
    set on every watch response or snapshot chunk, so a plain attribute, not a metric call."""

    snapshot_keys_read: int
    snapshot_keys_expected: int
    last_event_at: float
    etcd_heard_at: float


_PER_SINK = (
    ETCD_REVISION,
    SINK_REVISION,
    LAG_REVISIONS,
    LAG_SECONDS,
    SNAPSHOT_EVENTS,
    SNAPSHOT_IN_PROGRESS,
    RESYNCS,
    WATCH_FRAGMENTED,
    RECONNECTS,
    BATCH_EVENTS,
    WRITE_SECONDS,
    SNAPSHOT_KEYS_READ,
    SNAPSHOT_KEYS_EXPECTED,
    SNAPSHOTS_REQUESTED,
    SINK_DATA_LOST,
    JOURNAL_BEHIND_BYTES,
    JOURNAL_OVERRUNS,
)


def prepare(sink: str, observed: Observed) -> None:
    """Show every per-sink series from start-up, at 0 (an alert on a series that appears
    only with its first increase, ``increase(resyncs[10m])``, misses that first one), and bind
    the gauges read from ``observed``."""
    for metric in _PER_SINK:
        metric.labels(sink)
    for event_type in EventType:
        EVENTS_DELIVERED.labels(sink, event_type.value)
    SNAPSHOT_KEYS_READ.labels(sink).set_function(lambda: observed.snapshot_keys_read)
    SNAPSHOT_KEYS_EXPECTED.labels(sink).set_function(lambda: observed.snapshot_keys_expected)
    LAST_EVENT_TIMESTAMP.labels(sink).set_function(lambda: observed.last_event_at)
    ETCD_PROGRESS_TIMESTAMP.labels(sink).set_function(lambda: observed.etcd_heard_at)


def count_error(error: BaseException, *, sink: str) -> None:
    """Count ``error``, met by ``sink``'s pipeline, under its class name."""
    ERRORS.labels(sink, type(error).__name__).inc()
