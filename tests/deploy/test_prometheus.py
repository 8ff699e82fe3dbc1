"""deploy/prometheus: promtool checks the rules and runs their unit tests; every alert is
tested firing, and documented in docs/operating.md under the anchor its runbook_url names."""

import yaml

from tests.deploy.artifacts import (
    OPERATING,
    RULE_TESTS,
    RULES,
    alerts,
    github_anchors,
    recorded_names,
    rule_expressions,
    rules,
)
from tests.deploy.promtool import promtool


def test_rules_are_valid() -> None:
    promtool("check", "rules", RULES.name, cwd=RULES.parent)


def test_rule_unit_tests_pass() -> None:
    promtool("test", "rules", RULE_TESTS.name, cwd=RULES.parent)


def test_every_alert_is_tested_firing() -> None:
    """promtool tests only what the test file asks: each alert must be expected to fire at
    least once (an alert only ever tested silent could never fire and still pass)."""
    cases = [
        case
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    untested = [rule["alert"] for rule in alerts() if rule["alert"] not in fired]
    assert not untested, f"add a promtool test that fires: {untested}"


def test_recorded_series_are_recorded_here() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set().union(*(recorded_names(expression) for expression in rule_expressions()))
    assert used <= recorded, f"not recorded by any rule: {sorted(used - recorded)}"


def test_every_alert_links_its_section_of_the_operating_guide() -> None:
    anchors = github_anchors(OPERATING.read_text())
    problems = []
    for rule in alerts():
        annotations = rule.get("annotations", {})
        missing = [key for key in ("summary", "description") if not annotations.get(key)]
        if missing:
            problems.append(f"{rule['alert']}: no {', '.join(missing)}")
        link = annotations.get("runbook_url", "")
        page, _, anchor = link.partition("#")
        if page != "docs/operating.md" or anchor not in anchors:
            problems.append(f"{rule['alert']}: runbook_url {link!r} is no section of {page}")
        if anchor != rule["alert"].lower():
            problems.append(f"{rule['alert']}: runbook_url should end in #{rule['alert'].lower()}")
    assert not problems, "\n".join(problems)
