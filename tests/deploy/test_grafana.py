"""deploy/grafana: the dashboard imports anywhere (its datasource is an input chosen at
import), every query is valid PromQL, and every per-sink query follows the ``instance`` and
``sink`` variables."""

import re
from pathlib import Path

import yaml

from tests.deploy.artifacts import dashboard, dashboard_panels
from tests.deploy.promtool import promtool

DATASOURCE = "${DS_PROMETHEUS}"
SELECTOR = re.compile(r"\b(etcd_bridge_[a-z_]+)(\{[^}]*\})?")


def test_datasource_is_an_import_input() -> None:
    inputs = dashboard()["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    users = [
        (panel["title"], source)
        for panel in dashboard_panels()
        if panel["type"] != "row"
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    ]
    assert users, "no panel queries anything"
    assert [u for u in users if u[1] != {"type": "prometheus", "uid": DATASOURCE}] == []


def test_queries_follow_the_instance_and_sink_variables() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert set(variables) == {"instance", "sink"}
    assert all(v["datasource"]["uid"] == DATASOURCE for v in variables.values())
    assert '{instance=~"$instance"}' in variables["sink"]["query"]["query"]
    unfiltered = [
        f"{panel['title']}: {name}{matchers}"
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        for name, matchers in SELECTOR.findall(target["expr"])
        if name != "etcd_bridge_ha_leader"  # per HA group, not per sink
        and not ('sink=~"$sink"' in matchers and 'instance=~"$instance"' in matchers)
    ]
    assert not unfiltered, "\n".join(unfiltered)


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(dashboard_panels())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule's, with Grafana's variables
    replaced by what Grafana would put there (template variables' ``label_values`` queries
    are Grafana's, not PromQL)."""
    grafana = {"$__rate_interval": "1m", "$instance": ".*", "$sink": ".*"}
    queries = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in grafana.items():
                query = query.replace(variable, value)
            queries.append(
                {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": query}
            )
    assert queries
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    promtool("check", "rules", rules.name, cwd=tmp_path)
