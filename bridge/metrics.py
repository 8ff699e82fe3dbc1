"""The Prometheus metrics of the bridge, in one registry served at ``/metrics``.

Every metric is labelled by ``sink``: each sink has its own pipeline, position and watch, so
each is observed on its own. Updating a metric is cheap (a lock and an add); the pump updates
them once per batch or chunk, never per event. Labels take few values: an error is counted by
its sink and class (``count_error``), never by the key, revision or endpoint it carries.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
    "etcd's revision minus the sink's durable revision (revisions outside the prefix count).",
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


def count_error(error: BaseException, *, sink: str) -> None:
    """Count ``error``, met by ``sink``'s pipeline, under its class name."""
    ERRORS.labels(sink, type(error).__name__).inc()
