"""The metric names that deploy/ uses (the alert rules' expressions, the dashboard's queries
and template variables) are ones a running bridge exports, so that neither can drift from
bridge/metrics.py unnoticed.

A real bridge is started the way an operator runs it, with HA enabled (the leader gauge
exists only then) and a file sink, and scraped once it is watching. Names are compared as
they appear in PromQL: the exposition's families are turned into the series names they
declare by type (a counter ``x`` is ``x_total``; a histogram ``x`` is ``x_bucket``, ``x_sum``
and ``x_count``), so a rule that reads a counter without ``_total``, or a histogram by its
bare name, is caught as well. A family counts from its ``# TYPE`` line, whether or not it has
a series yet: errors are labelled by a kind no one knows before the first error.
"""

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.artifacts import (
    FOREIGN_SERIES,
    dashboard_expressions,
    foreign_names,
    rule_expressions,
    series_names,
)
from tests.fixtures.bridge import BridgeFactory, get, serving
from tests.fixtures.etcd import EtcdServer
from tests.integration.test_pipeline_file import file_bridge

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}  # gauge: ""


def exported_series(exposition: str) -> set[str]:
    """Every series name the exposition declares or shows."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def used_series() -> dict[str, set[str]]:
    """Each ``etcd_bridge_*`` series deploy/ reads, and which artifact reads it."""
    used: dict[str, set[str]] = {}
    for where, expressions in (
        ("rules", rule_expressions()),
        ("dashboard", dashboard_expressions()),
    ):
        for expression in expressions:
            for name in series_names(expression):
                used.setdefault(name, set()).add(where)
    return used


def test_deploy_reads_only_what_the_bridge_exports(
    etcd: EtcdServer, bridge_factory: BridgeFactory, tmp_path: Path, prefix: str
) -> None:
    bridge, port = serving(
        bridge_factory,
        **file_bridge(
            bridge_factory,
            etcd,
            prefix=prefix,
            path=tmp_path / "events.jsonl",
            BRIDGE_NAME="operating",
            BRIDGE_HA__ENABLED="true",
            BRIDGE_HA__KEY_PREFIX=f"/leaders{prefix}",
        ),
    )
    bridge.wait_watching()
    status, body = get(port, "/metrics")
    assert status == 200
    exported = exported_series(body.decode())
    used = used_series()
    assert len(used) > 10, f"too few names found in deploy/: {sorted(used)}"
    missing = {name: sorted(where) for name, where in sorted(used.items()) if name not in exported}
    assert not missing, f"deploy/ reads series the bridge does not export: {missing}"
    foreign = set().union(*(foreign_names(e) for e in rule_expressions() + dashboard_expressions()))
    assert foreign <= FOREIGN_SERIES, f"series of other exporters: {sorted(foreign)}"
