"""The Helm chart in deploy/helm/hydra, linted and rendered by Helm itself.

Helm comes from the ``helm-python-sdk`` dev dependency: Helm's own Go SDK (v4) built as a shared
library, so ``lint`` and ``render`` here are ``helm lint`` and ``helm template``, without a ``helm``
binary (none is published where this project installs from).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hydra_sandbox.settings import HydraSettings, load_settings

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "hydra"
SOURCE = Path(__file__).resolve().parents[2] / "hydra_sandbox"

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's SDK) is not installed: pip install -e .[dev]")

ERROR = 3  # lint severities: 1 info, 2 warning, 3 error


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """``helm template hydra CHART -n ai`` as {template file: [parsed documents]}."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name="hydra", namespace="ai", is_install=True)
    return {
        name.removeprefix("hydra/templates/"): [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in manifests.items()
        if not name.endswith("NOTES.txt")
    }


def objects(values: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for docs in render(values).values() for doc in docs}


def server_container(values: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = objects(values)["Deployment", "hydra"]["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container["env"]}


EVERY_FEATURE: dict[str, Any] = {
    "auth": {"existingSecret": "tok", "existingSecretKey": "t"},
    "model": {"apiKey": {"value": "sk-test"}},
    "config": {"modelBaseUrl": "http://model:8080/v1", "agentImage": "a:b", "agentUid": 1000, "diskWarningBytes": 5},
    "profiles": {"mine.yaml": "id: mine\n"},
    "policies": {"tight.yaml": "name: tight\n"},
    "chroma": {"mode": "server"},
    "docker": {"host": "tcp://dockerd:2376", "tlsSecret": "docker-tls", "workspaceHostPaths": ["/srv/repos"]},
}


def test_helm_lint_strict_finds_nothing_wrong() -> None:
    for values in ({}, EVERY_FEATURE):
        report = helm.lint(CHART, values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert report["total_charts_linted"] == 1
        assert problems == [], problems


def test_default_values_match_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"chroma": {"mode": "sqlite"}}, "mode"),
        ({"chroma": {"mode": "external", "externalUrl": "chroma:8000"}}, "externalUrl"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"config": {"maxConcurrentAgents": 0}}, "maxConcurrentAgents"),
        ({"config": {"modelBaseUrl": "127.0.0.1:8080"}}, "modelBaseUrl"),
        ({"replicaCount": 2}, "replicaCount"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as info:
        chart.validate_schema(values)
    assert field in str(info.value)


def test_templates_render_to_kubernetes_objects() -> None:
    for values in ({}, EVERY_FEATURE, {"chroma": {"mode": "external", "externalUrl": "https://c:8000"}}):
        for docs in render(values).values():
            for doc in docs:
                assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_server_runs_one_non_root_pod_serving_http() -> None:
    deployment = objects()["Deployment", "hydra"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = pod["containers"][0]
    assert container["args"][:2] == ["--transport", "http"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    port = container["ports"][0]["containerPort"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "mcp"}
    service = objects()["Service", "hydra"]
    assert service["spec"]["ports"][0]["port"] == port


def test_bearer_token_comes_from_a_secret() -> None:
    made = objects()
    ref = env_of(server_container())["HYDRA_HTTP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hydra-auth", "key": "token"}
    assert len(made["Secret", "hydra-auth"]["data"]["token"]) > 40
    ref = env_of(server_container(EVERY_FEATURE))["HYDRA_HTTP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tok", "key": "t"}
    assert ("Secret", "hydra-auth") not in objects(EVERY_FEATURE)


def test_data_directory_is_a_kept_claim_mounted_at_data_home() -> None:
    made = objects()
    claim = made["PersistentVolumeClaim", "hydra-data"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    container = server_container()
    data_home = env_of(container)["HYDRA_DATA_HOME"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert mount["mountPath"] == data_home
    volume = next(v for v in made["Deployment", "hydra"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert volume["persistentVolumeClaim"]["claimName"] == "hydra-data"


def test_chroma_modes_set_hydra_chroma_url() -> None:
    assert "HYDRA_CHROMA_URL" not in env_of(server_container())
    assert ("Deployment", "hydra-chroma") not in objects()

    external = env_of(server_container({"chroma": {"mode": "external", "externalUrl": "https://c.example:8000"}}))
    assert external["HYDRA_CHROMA_URL"]["value"] == "https://c.example:8000"

    made = objects({"chroma": {"mode": "server"}})
    service = made["Service", "hydra-chroma"]
    url = env_of(made["Deployment", "hydra"]["spec"]["template"]["spec"]["containers"][0])["HYDRA_CHROMA_URL"]
    assert url["value"] == f"http://hydra-chroma:{service['spec']['ports'][0]['port']}"
    assert ("PersistentVolumeClaim", "hydra-chroma") in made


def test_docker_socket_is_never_mounted_unless_the_operator_opts_in() -> None:
    for values in ({}, EVERY_FEATURE):
        text = json.dumps(list(objects(values).values()))
        assert "docker.sock" not in text
    made = objects({"docker": {"hostSocket": {"enabled": True, "groupId": 998}}})
    pod = made["Deployment", "hydra"]["spec"]["template"]["spec"]
    socket = next(v for v in pod["volumes"] if v["name"] == "docker-socket")
    assert socket["hostPath"] == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert pod["securityContext"]["supplementalGroups"] == [998]
    assert len(pod["containers"]) == 1  # only the server; agents are Docker containers, never pods here


def test_socket_and_remote_daemon_are_exclusive() -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match="exclusive"):
        chart.render({"docker": {"host": "tcp://d:2376", "hostSocket": {"enabled": True}}}, name="hydra")


def test_every_hydra_variable_in_the_chart_is_one_hydra_reads() -> None:
    """A renamed setting must not leave the chart setting a variable nobody reads."""
    fields = {f"HYDRA_{name.upper()}" for name in HydraSettings.model_fields}
    code = "\n".join(p.read_text() for p in SOURCE.rglob("*.py"))
    named = set(re.findall(r"HYDRA_[A-Z_]+", "".join(p.read_text() for p in (CHART / "templates").iterdir())))
    rendered = {name for c in (server_container(), server_container(EVERY_FEATURE)) for name in env_of(c)}
    assert {n for n in rendered if n.startswith("HYDRA_")} <= named
    unknown = {name for name in named if name not in fields and f'"{name}"' not in code}
    assert not unknown, f"the chart sets variables Hydra does not read: {sorted(unknown)}"


def test_rendered_settings_load_as_hydra_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for values in ({}, EVERY_FEATURE):
        for name, entry in env_of(server_container(values)).items():
            if name.startswith("HYDRA_"):
                monkeypatch.setenv(name, entry.get("value", "from-a-secret"))
        settings = load_settings()
        assert settings.transport == "http"
        assert settings.http_host == "0.0.0.0"
    assert settings.chroma_url == "http://hydra-chroma:8000"
    assert settings.model_base_url == "http://model:8080/v1"
    assert settings.agent_uid == 1000
    assert str(settings.profiles_dir) == "/etc/hydra/profiles"


def test_maintenance_mode_keeps_the_volumes_but_not_the_server() -> None:
    normal, maintenance = server_container(), server_container({"maintenance": True})
    assert maintenance["command"] == ["sleep", "infinity"]
    assert "args" not in maintenance and "livenessProbe" not in maintenance
    assert maintenance["volumeMounts"] == normal["volumeMounts"]
    assert maintenance["env"] == normal["env"]
