"""What deploy/ holds, read once for the tests: the alert rules, the dashboard's queries,
the Kubernetes manifests, and the metric names their PromQL uses.

Names are found by pattern, not by a PromQL parser: every series the bridge exports starts
with ``etcd_bridge_``, a recording rule's name has colons (``etcd_bridge:...``), and the
only other series the rules may select is Prometheus' own ``up``.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "etcd-bridge.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "etcd-bridge.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "etcd-bridge.json"
MANIFESTS = DEPLOY / "kubernetes"
OPERATING = ROOT / "docs" / "operating.md"

FOREIGN_SERIES = frozenset({"up"})  # Prometheus' own, per scrape target

_OURS = re.compile(r"\betcd_bridge[a-zA-Z0-9_:]*")
_SELECTED = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def rules() -> list[dict[str, Any]]:
    """Every rule of every group, recording and alerting."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[str]:
    """The PromQL of every panel target and of every template variable's query."""
    expressions = [
        target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])
    ]
    variables = dashboard()["templating"]["list"]
    return expressions + [variable["query"]["query"] for variable in variables]


def rule_expressions() -> list[str]:
    return [rule["expr"] for rule in rules()]


def series_names(expression: str) -> set[str]:
    """The bridge's series an expression reads (``etcd_bridge_*``, suffixes as written)."""
    return {name for name in _OURS.findall(expression) if ":" not in name}


def recorded_names(expression: str) -> set[str]:
    """The recording rules an expression reads (``etcd_bridge:*``)."""
    return {name for name in _OURS.findall(expression) if ":" in name}


def foreign_names(expression: str) -> set[str]:
    """Series selected with ``name{...}`` that are not the bridge's."""
    return {name for name in _SELECTED.findall(expression) if not name.startswith("etcd_bridge")}


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every object of deploy/kubernetes, with the file it is in."""
    return [
        (path, document)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (outside fenced code): lower
    case, punctuation other than ``-`` and ``_`` dropped, spaces to ``-``."""
    anchors = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors
