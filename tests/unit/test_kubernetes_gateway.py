"""The Kubernetes egress placement: a session's gateway pod (hardened like the agent), its own
NetworkPolicy (ingress from its agent pod only), the agent's allowance (egress to the gateway's ports
only) and the Secret that carries the key to the gateway alone. Every manifest against the 1.30 schemas,
strict; the create / remove / gc request sequence against kmock's API server emulator."""

from __future__ import annotations

import json
from typing import Any

import kmock
import kubernetes_validate
import pytest
from pydantic import SecretStr

from hydra_sandbox.agent_endpoint import MCP_PORT
from hydra_sandbox.errors import RuntimeUnavailableError, UnsafeSpecError
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import (
    LINK_LOCAL,
    MCP_TOKEN_ENV,
    MODEL_KEY_ENV,
    PLAN_ENV,
    GatewayPodSpec,
    gateway_own_policy,
    gateway_own_policy_name,
    gateway_pod_manifest,
    gateway_pod_name,
    gateway_secret,
    gateway_secret_name,
)
from hydra_sandbox.sandbox.backends.kubernetes.gateway_pods import GatewayPods
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    DEFAULT_DENY_POLICY,
    MIN_KUBERNETES,
    PodOptions,
    gateway_policy,
    gateway_policy_name,
    pod_manifest,
)
from hydra_sandbox.sandbox.egress import EGRESS_PORT, EgressPlan, GatewaySecrets
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION
from tests.kube_kit import HOME, NS, POLICIES, UidEmulator, agent, labels, paths, runtime_for

SID = "s-0a1b2c3d4e5f"
OPTIONS = PodOptions(namespace=NS)
KEY = "sk-THE-MODEL-KEY"
TOKEN = "hydra-agent-token-VALUE"
SECRETS = GatewaySecrets(model_key=SecretStr(KEY), mcp_token=SecretStr(TOKEN))
SECRETS_PATH = f"/api/v1/namespaces/{NS}/secrets"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"
pytestmark = pytest.mark.kmock(cls=UidEmulator)


def plan(mode: str = "model-only", session: str = SID, **changes: Any) -> EgressPlan:
    relay = "none" if mode == "none" else "gateway"
    fields = {"session_id": session, "mode": mode, "relay": relay, "model_url": "https://models.invalid/v1"}
    return EgressPlan(**{**fields, **changes})


def gateway(session: str = SID, *, delegate: bool = False, mode: str = "model-only", **changes: Any) -> GatewayPodSpec:
    session_labels = {k: v for k, v in labels(session).items() if k != LABEL_ROLE}
    return GatewayPodSpec(
        plan=plan(mode, session, **changes),
        labels=session_labels,
        image="hydra-server:test",
        timeout_s=600,
        delegate=delegate,
    )


def assert_valid(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, MIN_KUBERNETES, strict=True)


def test_every_gateway_manifest_is_valid_against_the_minimum_cluster_schema() -> None:
    pod = gateway_pod_manifest(gateway(delegate=True), SECRETS, OPTIONS)
    assert_valid(pod)
    assert_valid(gateway_own_policy(plan("allowlist", allowed_domains=["pypi.org"]), {}, OPTIONS, delegate=True))
    assert_valid(gateway_secret(plan(), {}, SECRETS, {"metadata": {"name": "p", "uid": "u-1"}}, OPTIONS))
    assert_valid(gateway_policy(SID, labels(SID), OPTIONS))


def test_the_gateway_pod_is_hardened_like_the_agent() -> None:
    pod = gateway_pod_manifest(gateway(), SECRETS, PodOptions(namespace=NS, runtime_class="gvisor"))
    spec = pod["spec"]
    [container] = spec["containers"]
    context = container["securityContext"]
    assert (context["runAsNonRoot"], context["readOnlyRootFilesystem"], context["allowPrivilegeEscalation"]) == (
        True,
        True,
        False,
    )
    assert context["capabilities"] == {"drop": ["ALL"]} and context["privileged"] is False
    assert context["seccompProfile"] == spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert (spec["hostNetwork"], spec["hostPID"], spec["hostIPC"], spec["shareProcessNamespace"]) == (False,) * 4
    assert container["resources"]["limits"] == container["resources"]["requests"] == {"cpu": "250m", "memory": "128Mi"}
    assert spec["activeDeadlineSeconds"] > 600 and spec["restartPolicy"] == "Never"
    assert spec["runtimeClassName"] == "gvisor"
    assert pod["metadata"]["name"] == gateway_pod_name(SID) == f"hydra-{SID}-gateway"
    assert container["command"] == ["python", "-m", "hydra_sandbox.sandbox.backends.kubernetes.gateway_process"]
    assert pod["metadata"]["labels"][LABEL_ROLE] == "gateway" and pod["metadata"]["labels"][LABEL_SESSION] == SID


def test_the_key_reaches_the_gateway_only_as_a_reference_to_its_secret() -> None:
    pod = gateway_pod_manifest(gateway(delegate=True), SECRETS, OPTIONS)
    assert KEY not in json.dumps(pod) and TOKEN not in json.dumps(pod)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env[MODEL_KEY_ENV]["valueFrom"] == {"secretKeyRef": {"name": gateway_secret_name(SID), "key": "model-key"}}
    assert env[MCP_TOKEN_ENV]["valueFrom"]["secretKeyRef"]["key"] == "mcp-token"
    assert json.loads(env[PLAN_ENV]["value"])["session_id"] == SID
    agent_pod = json.dumps(pod_manifest(agent(SID, gateway=True), OPTIONS))
    assert gateway_secret_name(SID) not in agent_pod and KEY not in agent_pod


def test_a_run_that_may_not_delegate_gets_no_token_and_no_mcp_port() -> None:
    pod = gateway_pod_manifest(gateway(delegate=False), SECRETS, OPTIONS)
    [container] = pod["spec"]["containers"]
    assert MCP_TOKEN_ENV not in {e["name"] for e in container["env"]}
    assert [p["containerPort"] for p in container["ports"]] == [EGRESS_PORT]


def test_egress_mode_none_gets_no_gateway() -> None:
    with pytest.raises(UnsafeSpecError, match="egress mode 'none' has no gateway"):
        gateway_pod_manifest(gateway(mode="none"), SECRETS, OPTIONS)
    with pytest.raises(UnsafeSpecError, match="has no gateway"):
        gateway_own_policy(plan("none"), {}, OPTIONS, delegate=False)


def test_gateway_labels_of_another_session_are_refused() -> None:
    spec = gateway().model_copy(update={"labels": {LABEL_SESSION: "s-ffffffffffff"}})
    with pytest.raises(UnsafeSpecError, match="is not session"):
        gateway_pod_manifest(spec, SECRETS, OPTIONS)


def test_the_gateway_takes_ingress_only_from_its_own_agent_pods_on_its_ports() -> None:
    policy = gateway_own_policy(plan(), {}, OPTIONS, delegate=True)["spec"]
    assert policy["podSelector"] == {"matchLabels": {LABEL_SESSION: SID, LABEL_ROLE: "gateway"}}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {LABEL_SESSION: SID, LABEL_ROLE: "agent"}}}]
    assert [p["port"] for p in ingress["ports"]] == [EGRESS_PORT, MCP_PORT]


def test_the_gateway_may_dial_only_dns_and_the_models_port_never_link_local() -> None:
    dns, out = gateway_own_policy(plan(), {}, OPTIONS, delegate=False)["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert out["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [LINK_LOCAL]}}]
    assert [p["port"] for p in out["ports"]] == [443]
    local = gateway_own_policy(plan(model_url="http://10.0.0.5:8080/v1"), {}, OPTIONS, delegate=False)
    assert [p["port"] for p in local["spec"]["egress"][1]["ports"]] == [8080]
    listed = gateway_own_policy(
        plan("allowlist", model_url="http://10.0.0.5:8080/v1", allowed_domains=["pypi.org"]),
        {},
        OPTIONS,
        delegate=False,
    )
    assert [p["port"] for p in listed["spec"]["egress"][1]["ports"]] == [443, 8080]


def test_the_agent_may_reach_only_its_gateway_pods_ports() -> None:
    [rule] = gateway_policy(SID, labels(SID), OPTIONS)["spec"]["egress"]
    assert rule["to"] == [{"podSelector": {"matchLabels": {LABEL_SESSION: SID, LABEL_ROLE: "gateway"}}}]
    assert [(p["protocol"], p["port"]) for p in rule["ports"]] == [("TCP", EGRESS_PORT), ("TCP", MCP_PORT)]


def test_the_secret_is_owned_by_its_pod_and_immutable() -> None:
    owner = {"metadata": {"name": gateway_pod_name(SID), "uid": "0b6d-uid"}}
    secret = gateway_secret(plan(), labels(SID), SECRETS, owner, OPTIONS)
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": gateway_pod_name(SID), "uid": "0b6d-uid"}
    ]
    assert secret["immutable"] is True and secret["stringData"] == {"model-key": KEY, "mcp-token": TOKEN}
    with pytest.raises(UnsafeSpecError, match="no uid to own its Secret"):
        gateway_secret(plan(), {}, SECRETS, {"metadata": {"name": "p"}}, OPTIONS)


async def test_create_confines_the_gateway_before_its_pod_and_keys_it_after(kmock: kmock.KubernetesEmulator) -> None:
    runtime = runtime_for(kmock)
    name = await GatewayPods(runtime).create(gateway(delegate=True), SECRETS)
    assert name == gateway_pod_name(SID)
    assert paths(kmock) == [("POST", POLICIES), ("POST", PODS_PATH), ("POST", SECRETS_PATH)]
    pod = kmock.objects["v1/pods", NS, name]
    secret = kmock.objects["v1/secrets", NS, gateway_secret_name(SID)]
    uid = pod["metadata"]["uid"]
    assert uid and secret["metadata"]["ownerReferences"][0]["uid"] == uid


async def test_a_secret_the_cluster_refuses_takes_the_gateway_pod_down_again(kmock: kmock.KubernetesEmulator) -> None:
    runtime = runtime_for(kmock)
    kmock[f"post {SECRETS_PATH}"] << 403 << {"kind": "Status", "message": 'secrets is forbidden: User "x"'}
    with pytest.raises(RuntimeUnavailableError, match=f"create gateway pod {gateway_pod_name(SID)} .*403 secrets"):
        await GatewayPods(runtime).create(gateway(), SECRETS)
    assert ("DELETE", f"{PODS_PATH}/{gateway_pod_name(SID)}") in paths(kmock)


async def test_a_gateway_without_keys_gets_no_secret(kmock: kmock.KubernetesEmulator) -> None:
    runtime = runtime_for(kmock)
    await GatewayPods(runtime).create(gateway(), GatewaySecrets())
    assert [method for method, path in paths(kmock) if path == SECRETS_PATH] == []
    env = kmock.objects["v1/pods", NS, gateway_pod_name(SID)]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == [PLAN_ENV]


async def test_remove_deletes_pod_secret_and_policy_and_tolerates_them_gone(kmock: kmock.KubernetesEmulator) -> None:
    runtime = runtime_for(kmock)
    gateways = GatewayPods(runtime)
    await gateways.create(gateway(), SECRETS)
    await gateways.remove(SID)
    await gateways.remove(SID)
    deletes = [path for method, path in paths(kmock) if method == "DELETE"]
    assert deletes[:3] == [
        f"{PODS_PATH}/{gateway_pod_name(SID)}",
        f"{SECRETS_PATH}/{gateway_secret_name(SID)}",
        f"{POLICIES}/{gateway_own_policy_name(SID)}",
    ]


async def test_gc_removes_a_dead_sessions_gateway_pod_and_its_policy(kmock: kmock.KubernetesEmulator) -> None:
    runtime = runtime_for(kmock)
    gateways = GatewayPods(runtime)
    for session in ("s-aaaaaaaaaaaa", "s-bbbbbbbbbbbb"):
        await runtime.create(agent(session, gateway=True))
        await gateways.create(gateway(session), SECRETS)
    report = await collect_garbage(runtime, {"s-bbbbbbbbbbbb"}, home=HOME)
    assert sorted(report.containers) == ["hydra-s-aaaaaaaaaaaa-0", gateway_pod_name("s-aaaaaaaaaaaa")]
    assert sorted(report.networks) == sorted(
        [gateway_policy_name("s-aaaaaaaaaaaa"), gateway_own_policy_name("s-aaaaaaaaaaaa")]
    )
    left = {name for (resource, _ns, name) in kmock.objects if not kmock.objects[resource, _ns, name].deleted}
    assert DEFAULT_DENY_POLICY in left and gateway_pod_name("s-bbbbbbbbbbbb") in left
    assert not {n for n in left if "aaaaaaaaaaaa" in n and "key" not in n}
