"""deploy/kubernetes: every object validates, offline and strictly (unknown fields are
errors), against the Kubernetes API schemas kubernetes-validate bundles, for one pinned
Kubernetes version; the objects fit together; and the settings they give the bridge are
ones it accepts.

ServiceMonitor is the Prometheus Operator's CRD, which kubernetes-validate does not know: it
is checked against ``SERVICE_MONITOR_SCHEMA`` below, a closed subset of the CRD's schema
covering the fields we use (so a misspelt field fails, as in strict mode).
"""

import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from bridge.app import configure
from tests.deploy.artifacts import manifests

KUBERNETES_VERSION = "1.31.0"

_DURATION = {  # the CRD's pattern for durations
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": _LABELS},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}

Objects = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def objects() -> Objects:
    """The objects by ``Kind/name``."""
    found = {f"{obj['kind']}/{obj['metadata']['name']}": obj for _path, obj in manifests()}
    assert len(found) == len(manifests()), "two objects with the same kind and name"
    return found


@pytest.mark.parametrize(
    "name,obj",
    [(f"{path.name}:{obj['kind']}", obj) for path, obj in manifests()],
)
def test_manifest_is_valid(name: str, obj: dict[str, Any]) -> None:
    if obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_an_ha_pair_with_probes_on_healthz(objects: Objects) -> None:
    """Two replicas of one pipeline, elected; ready = alive (/healthz), not /readyz, whose
    503 on a standby would stall rolling updates and block drains (see deployment.yaml)."""
    deployment = objects["Deployment/etcd-bridge"]
    settings = objects["ConfigMap/etcd-bridge"]["data"]
    assert deployment["spec"]["replicas"] == 2
    assert settings["BRIDGE_HA__ENABLED"] == "true" and settings["BRIDGE_NAME"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    pdb = objects["PodDisruptionBudget/etcd-bridge"]["spec"]
    assert pdb["maxUnavailable"] == 1


def test_runs_unprivileged(objects: Objects) -> None:
    pod = objects["Deployment/etcd-bridge"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert set(container["resources"]) == {"requests", "limits"}


def test_objects_refer_to_each_other(objects: Objects) -> None:
    deployment = objects["Deployment/etcd-bridge"]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    service = objects["Service/etcd-bridge"]
    monitor = objects["ServiceMonitor/etcd-bridge"]["spec"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(
        objects["PodDisruptionBudget/etcd-bridge"]["spec"]["selector"]["matchLabels"], pod_labels
    )
    assert selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    container_ports = {port["name"] for port in container["ports"]}
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    assert {endpoint["port"] for endpoint in monitor["endpoints"]} <= service_ports
    volumes = [
        f"Secret/{v['secret']['secretName']}" for v in pod["spec"]["volumes"] if "secret" in v
    ]
    missing = [name for name in [*settings_sources(container), *volumes] if name not in objects]
    assert missing == []


def settings_sources(container: dict[str, Any]) -> list[str]:
    """The ``Kind/name`` of the ConfigMaps and Secrets a container's envFrom reads."""
    return [
        f"ConfigMap/{source['configMapRef']['name']}"
        if "configMapRef" in source
        else f"Secret/{source['secretRef']['name']}"
        for source in container["envFrom"]
    ]


def test_the_bridge_accepts_the_settings(
    objects: Objects, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ConfigMap and Secret, as envFrom hands them over, load as the bridge's settings
    (``configure``: every variable known, every value valid). A file setting must lie in a
    volume mounted from a Secret that has that key; the test writes the key to a file of its
    own and points the setting there."""
    pod = objects["Deployment/etcd-bridge"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounted = {
        mount["mountPath"]: objects[f"Secret/{volumes[mount['name']]['secret']['secretName']}"]
        for mount in container["volumeMounts"]
        if "secret" in volumes[mount["name"]]
    }
    environment: dict[str, str] = {}
    for source in settings_sources(container):
        environment |= objects[source].get("data") or objects[source]["stringData"]
    for name, value in environment.items():
        directory, _, key = value.rpartition("/")
        if directory in mounted:
            assert key in mounted[directory]["stringData"], f"{name}: no {key} in its Secret"
            copy = tmp_path / key
            copy.write_text(mounted[directory]["stringData"][key])
            environment[name] = str(copy)
    drain = float(environment["BRIDGE_PUMP__SHUTDOWN_TIMEOUT"])
    assert drain < pod["terminationGracePeriodSeconds"]
    for name in [name for name in os.environ if name.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    configuration = configure(environment)
    assert configuration.settings.ha.enabled
    sinks = [name for name, _section in configuration.sinks]
    assert sinks == environment["BRIDGE_SINKS"].split(",")
