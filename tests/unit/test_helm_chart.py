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
    "networkPolicy": {"egress": {"docker": {"to": [{"ipBlock": {"cidr": "10.0.3.7/32"}}]}}},
}
KUBERNETES: dict[str, Any] = {
    "backend": "kubernetes",
    "kubernetes": {"namespace": "agents", "runtimeClassName": "gvisor", "seccompLocalhostProfile": "hydra/agent.json"},
    "networkPolicy": {"egress": {"kubernetesApi": {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}]}}},
}
EXTERNAL_CHROMA: dict[str, Any] = {
    "chroma": {"mode": "external", "externalUrl": "https://c.example:8000"},
    "networkPolicy": {"egress": {"chroma": {"to": [{"ipBlock": {"cidr": "10.0.4.0/24"}}]}}},
}


def test_helm_lint_strict_finds_nothing_wrong() -> None:
    for values in ({}, EVERY_FEATURE, KUBERNETES):
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
        ({"backend": "nomad"}, "backend"),
        ({"kubernetes": {"namespace": "Agents"}}, "namespace"),
        ({"kubernetes": {"seccompLocalhostProfile": "../x.json"}}, "seccompLocalhostProfile"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as info:
        chart.validate_schema(values)
    assert field in str(info.value)


def test_templates_render_to_kubernetes_objects() -> None:
    for values in ({}, EVERY_FEATURE, EXTERNAL_CHROMA):
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
        assert container[probe]["httpGet"] == {
            "path": "/healthz",
            "port": "mcp",
            "httpHeaders": [{"name": "Host", "value": f"localhost:{port}"}],
        }
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

    external = env_of(server_container(EXTERNAL_CHROMA))
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
        both = {"host": "tcp://d:2376", "hostSocket": {"enabled": True}}
        chart.render({"docker": both, "networkPolicy": {"enabled": False}}, name="hydra")


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


def test_every_rendered_object_round_trips_through_the_kubernetes_models() -> None:
    """A misspelled or misplaced field is dropped by the official client's models: the round trip shows it."""
    from kubernetes import client

    api = client.ApiClient()
    for values in ({}, EVERY_FEATURE, EXTERNAL_CHROMA, KUBERNETES):
        for doc in objects(values).values():
            model = api._ApiClient__deserialize(doc, f"V1{doc['kind']}")  # type: ignore[attr-defined]
            assert api.sanitize_for_serialization(model) == doc, (doc["kind"], doc["metadata"]["name"])


def test_probes_send_a_host_that_hydras_own_host_check_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's Host header goes through Hydra's real HTTP app, on a connection that arrived at a pod IP."""
    import contextlib

    from starlette.testclient import TestClient

    from hydra_sandbox.mcp.app import http_app
    from hydra_sandbox.services import open_services
    from hydra_sandbox.store import InMemoryStore
    from tests.fake_sandbox import FakeSandbox

    container = server_container()
    assert "HYDRA_HTTP_ALLOWED_HOSTS" not in env_of(container)  # no wildcard needed
    probe_headers = {h["name"]: h["value"] for h in container["readinessProbe"]["httpGet"]["httpHeaders"]}
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    settings = load_settings()

    def services(s: HydraSettings) -> contextlib.AbstractAsyncContextManager[Any]:
        return open_services(s, sandbox=FakeSandbox(), store=InMemoryStore())

    with TestClient(http_app(settings, "t", services_factory=services), base_url="http://10.1.2.3:8765") as http:
        assert http.get("/healthz", headers=probe_headers).status_code == 200
        assert http.get("/healthz", headers={"Host": "10.9.9.9:8765"}).status_code == 421  # the check is on


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_no_selector_of_the_server_matches_a_chroma_pod() -> None:
    made = objects({"chroma": {"mode": "server"}})
    chroma_pod = made["Deployment", "hydra-chroma"]["spec"]["template"]["metadata"]["labels"]
    server_pod = made["Deployment", "hydra"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        made["Deployment", "hydra"]["spec"]["selector"]["matchLabels"],
        made["Service", "hydra"]["spec"]["selector"],
        made["NetworkPolicy", "hydra"]["spec"]["podSelector"]["matchLabels"],
    ):
        assert selects(selector, server_pod) and not selects(selector, chroma_pod), selector
    for selector in (
        made["Deployment", "hydra-chroma"]["spec"]["selector"]["matchLabels"],
        made["Service", "hydra-chroma"]["spec"]["selector"],
        made["NetworkPolicy", "hydra-chroma"]["spec"]["podSelector"]["matchLabels"],
    ):
        assert selects(selector, chroma_pod) and not selects(selector, server_pod), selector


def ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_the_server_is_reached_by_labelled_clients_and_reaches_only_its_dependencies() -> None:
    policy = objects()["NetworkPolicy", "hydra"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"hydra-client": "true"}}}]
    assert ports(ingress) == {(8765, "TCP")}
    dns, model = policy["egress"]
    assert ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert ports(model) == {(443, "TCP")}
    v4 = next(p["ipBlock"] for p in model["to"] if p["ipBlock"]["cidr"] == "0.0.0.0/0")
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"} <= set(v4["except"])
    v6 = next(p["ipBlock"] for p in model["to"] if p["ipBlock"]["cidr"] == "::/0")
    assert {"fc00::/7", "fe80::/10"} <= set(v6["except"])


def test_egress_follows_the_configured_model_docker_and_chroma() -> None:
    values = {
        **EVERY_FEATURE,
        "networkPolicy": {
            "clientNamespaceSelector": {"matchLabels": {"team": "ai"}},
            "egress": {
                "docker": {"to": [{"ipBlock": {"cidr": "10.0.3.7/32"}}]},
                "model": {"to": [{"podSelector": {"matchLabels": {"app": "model"}}}]},
                "kubernetesApi": {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}]},
            },
        },
    }
    policy = objects(values)["NetworkPolicy", "hydra"]["spec"]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"] == {"matchLabels": {"team": "ai"}}
    _dns, model, docker, kube, chroma = policy["egress"]
    assert model["to"] == [{"podSelector": {"matchLabels": {"app": "model"}}}] and ports(model) == {(8080, "TCP")}
    assert docker["to"] == [{"ipBlock": {"cidr": "10.0.3.7/32"}}] and ports(docker) == {(2376, "TCP")}
    assert kube["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}] and ports(kube) == {(443, "TCP"), (6443, "TCP")}
    assert chroma["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "hydra-chroma"
    assert ports(chroma) == {(8000, "TCP")}
    external = objects(EXTERNAL_CHROMA)["NetworkPolicy", "hydra"]["spec"]["egress"][-1]
    assert external["to"] == [{"ipBlock": {"cidr": "10.0.4.0/24"}}] and ports(external) == {(8000, "TCP")}
    assert ("NetworkPolicy", "hydra") not in objects({"networkPolicy": {"enabled": False}})


@pytest.mark.parametrize(
    ("values", "needed"),
    [
        ({"docker": {"host": "tcp://dockerd:2376"}}, "networkPolicy.egress.docker.to"),
        ({"chroma": {"mode": "external", "externalUrl": "http://c:8000"}}, "networkPolicy.egress.chroma.to"),
    ],
)
def test_a_network_policy_needs_the_addresses_a_name_cannot_give(values: dict[str, Any], needed: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match=needed):
        chart.render(values, name="hydra")


def test_chroma_server_mode_puts_a_token_gate_in_front_of_chroma() -> None:
    made = objects({"chroma": {"mode": "server"}})
    pod = made["Deployment", "hydra-chroma"]["spec"]["template"]["spec"]
    chroma, gate = pod["containers"]
    assert chroma["command"][:2] == ["chroma", "run"] and "ports" not in chroma
    assert chroma["command"][chroma["command"].index("--host") + 1] == "127.0.0.1"  # reached through the gate only
    internal = chroma["command"][chroma["command"].index("--port") + 1]
    assert made["Service", "hydra-chroma"]["spec"]["ports"][0]["targetPort"] == gate["ports"][0]["name"]
    config = made["ConfigMap", "hydra-chroma-gate"]["data"]["gate.conf.template"]
    assert '"Bearer ${HYDRA_CHROMA_TOKEN}" 1;' in config and "return 401" in config
    assert config.count(f"proxy_pass http://127.0.0.1:{internal};") == 2
    assert "location = /api/v2/heartbeat" in config  # the probes' only open path
    gate_ref = env_of(gate)["HYDRA_CHROMA_TOKEN"]["valueFrom"]["secretKeyRef"]
    hydra_ref = env_of(server_container({"chroma": {"mode": "server"}}))["HYDRA_CHROMA_TOKEN"]["valueFrom"]
    assert gate_ref == hydra_ref["secretKeyRef"] == {"name": "hydra-chroma-auth", "key": "token"}
    assert len(made["Secret", "hydra-chroma-auth"]["data"]["token"]) > 40
    assert gate["securityContext"]["readOnlyRootFilesystem"] is True
    chroma_policy = made["NetworkPolicy", "hydra-chroma"]["spec"]
    assert chroma_policy["egress"] == [] and chroma_policy["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "hydra", "app.kubernetes.io/instance": "hydra"}}}
    ]
    auth = {"existingSecret": "mine", "existingSecretKey": "k"}
    own = objects({"chroma": {"mode": "server", "server": {"auth": auth}}})
    assert ("Secret", "hydra-chroma-auth") not in own
    gate = own["Deployment", "hydra-chroma"]["spec"]["template"]["spec"]["containers"][1]
    assert env_of(gate)["HYDRA_CHROMA_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "k"}


def test_an_external_chroma_token_comes_from_its_secret() -> None:
    assert "HYDRA_CHROMA_TOKEN" not in env_of(server_container(EXTERNAL_CHROMA))
    values = {**EXTERNAL_CHROMA, "chroma": {**EXTERNAL_CHROMA["chroma"], "externalToken": {"existingSecret": "c"}}}
    ref = env_of(server_container(values))["HYDRA_CHROMA_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "c", "key": "token"}


def test_hydra_doctor_asks_the_cluster_for_exactly_the_rights_the_chart_grants() -> None:
    from hydra_sandbox.sandbox.backends.kubernetes.permissions import NEEDED

    role = objects(KUBERNETES)["Role", "hydra-agents"]
    granted = {
        (group, *resource.partition("/")[::2], verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {(p.group, p.resource, p.subresource, p.verb) for p in NEEDED}


def test_a_warm_pool_adds_exactly_the_rights_claiming_needs_and_its_setting() -> None:
    from hydra_sandbox.sandbox.backends.kubernetes.permissions import NEEDED, WARM_POOL_NEEDED

    values = {**KUBERNETES, "kubernetes": {**KUBERNETES["kubernetes"], "warmPool": "hydra-pool"}}
    made = objects(values)
    granted = {
        (group, *resource.partition("/")[::2], verb)
        for rule in made["Role", "hydra-agents"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {(p.group, p.resource, p.subresource, p.verb) for p in NEEDED + WARM_POOL_NEEDED}
    env = env_of(made["Deployment", "hydra"]["spec"]["template"]["spec"]["containers"][0])
    assert env["HYDRA_KUBERNETES_WARM_POOL"]["value"] == "hydra-pool"


def test_kubernetes_backend_gets_a_role_in_the_agent_namespace_and_nothing_cluster_wide() -> None:
    made = objects(KUBERNETES)
    assert not [kind for kind, _ in made if kind.startswith("Cluster")]
    role = made["Role", "hydra-agents"]
    assert role["metadata"]["namespace"] == "agents"
    granted = {(r["apiGroups"][0], res): tuple(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert granted == {
        ("", "pods"): ("create", "get", "list", "watch", "delete"),
        ("", "pods/log"): ("get",),
        ("", "pods/exec"): ("create", "get"),
        ("", "secrets"): ("create", "delete"),  # the gateway's key: written, never read back
        ("networking.k8s.io", "networkpolicies"): ("create", "get", "list", "watch", "delete"),
    }
    binding = made["RoleBinding", "hydra-agents"]
    assert binding["metadata"]["namespace"] == "agents"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hydra", "namespace": "ai"}]
    assert binding["roleRef"]["name"] == "hydra-agents"
    pod = made["Deployment", "hydra"]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("hydra", True)
    env = env_of(pod["containers"][0])
    assert {n: env[n]["value"] for n in env if n.startswith(("HYDRA_BACKEND", "HYDRA_KUBERNETES"))} == {
        "HYDRA_BACKEND": "kubernetes",
        "HYDRA_KUBERNETES_NAMESPACE": "agents",
        "HYDRA_KUBERNETES_RUNTIME_CLASS": "gvisor",
        "HYDRA_KUBERNETES_SECCOMP_PROFILE": "hydra/agent.json",
    }
    assert env["HYDRA_GATEWAY_IMAGE"]["value"] == pod["containers"][0]["image"]  # the gateway pod runs Hydra


def test_docker_backend_gets_no_service_account_token_and_no_rbac() -> None:
    made = objects()
    assert not [kind for kind, _ in made if kind in {"ServiceAccount", "Role", "RoleBinding"}]
    pod = made["Deployment", "hydra"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert env_of(pod["containers"][0])["HYDRA_BACKEND"]["value"] == "docker"


def test_agent_namespace_defaults_to_the_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    made = objects({"backend": "kubernetes"})
    assert made["Role", "hydra-agents"]["metadata"]["namespace"] == "ai"
    for name, entry in env_of(made["Deployment", "hydra"]["spec"]["template"]["spec"]["containers"][0]).items():
        if name.startswith("HYDRA_"):
            monkeypatch.setenv(name, entry.get("value", "from-a-secret"))
    settings = load_settings()
    assert (settings.backend, settings.kubernetes_namespace) == ("kubernetes", "ai")
