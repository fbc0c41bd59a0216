"""The egress placement's manifests: a session's gateway Pod, its own NetworkPolicy and the Secret that
carries the model key (and the agent's Hydra token) to it. Pure functions returning the JSON the API
server takes, validated in tests against the schemas of :data:`~.manifests.MIN_KUBERNETES`, strict.

Why a pod of its own and not a sidecar in the agent's pod: containers of one pod share its network
namespace, so the agent could reach anything the sidecar can (the model's host, any address the gateway
may dial); a NetworkPolicy selects pods, not containers. A separate pod is the only unit Kubernetes can
confine apart: the agent pod's policy allows egress to this pod's ports and nowhere else, and this pod's
policy allows ingress from that agent pod only.

The gateway pod is hardened like the agent (non-root, read-only root, no capabilities, no privilege
escalation, seccomp, no service-account token, Guaranteed resources, a deadline). Its key arrives as an
environment variable from a Secret that only this pod references; the agent pod never names it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    GATEWAY_PORTS,
    GATEWAY_ROLE,
    PodOptions,
    dns_name,
    hardened_pod_spec,
    seccomp_profile,
)
from hydra_sandbox.sandbox.egress import EGRESS_PORT, EgressPlan, GatewaySecrets, model_endpoint
from hydra_sandbox.sandbox.spec import HYDRA_NAME_PREFIX, LABEL_ROLE, LABEL_SESSION

GATEWAY_CONTAINER = "gateway"
GATEWAY_COMMAND = ("python", "-m", "hydra_sandbox.sandbox.backends.kubernetes.gateway_process")
"""The gateway pod's process (:mod:`.gateway_process`), in an image with Hydra installed (the server's)."""
GATEWAY_SOCKET_DIR = "/run/hydra"
PLAN_ENV = "HYDRA_GATEWAY_PLAN"
MODEL_KEY_ENV = "HYDRA_GATEWAY_MODEL_KEY"
MCP_TOKEN_ENV = "HYDRA_GATEWAY_MCP_TOKEN"
MODEL_KEY_FIELD = "model-key"
MCP_TOKEN_FIELD = "mcp-token"
LINK_LOCAL = "169.254.0.0/16"
"""Never reachable from the gateway: the cloud metadata services live there."""
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
"""Where the gateway may resolve the model's name (CoreDNS and kube-dns both carry this label)."""


class GatewayPodSpec(BaseModel):
    """What one session's gateway pod runs and with what limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plan: EgressPlan
    labels: dict[str, str] = Field(description="The session's labels (home, session, parent); the role is set here.")
    image: str = Field(min_length=1)
    command: list[str] = Field(
        default_factory=lambda: list(GATEWAY_COMMAND), min_length=1, description="Serves the plan in the pod."
    )
    uid: int = Field(default=65532, ge=1, description="Non-root user of the gateway process.")
    gid: int = Field(default=65532, ge=1)
    cpus: float = Field(default=0.25, gt=0)
    memory_mb: int = Field(default=128, ge=16)
    timeout_s: int = Field(ge=1, description="The run's timeout; the pod's deadline adds the usual margin.")
    delegate: bool = Field(default=False, description="Also relay the agent MCP endpoint (its token in the Secret).")


def gateway_pod_name(session_id: str) -> str:
    return dns_name(f"{HYDRA_NAME_PREFIX}{session_id}-gateway", "pod")


def gateway_secret_name(session_id: str) -> str:
    return dns_name(f"{HYDRA_NAME_PREFIX}{session_id}-gateway-key", "secret")


def gateway_own_policy_name(session_id: str) -> str:
    return dns_name(f"{HYDRA_NAME_PREFIX}{session_id}-gateway", "network policy")


def gateway_ports(delegate: bool) -> list[int]:
    return list(GATEWAY_PORTS) if delegate else [EGRESS_PORT]


def _role_labels(labels: dict[str, str], session_id: str) -> dict[str, str]:
    if labels.get(LABEL_SESSION, session_id) != session_id:
        raise UnsafeSpecError(f"gateway labels: {LABEL_SESSION}={labels[LABEL_SESSION]!r} is not session {session_id}")
    return {**labels, LABEL_SESSION: session_id, LABEL_ROLE: GATEWAY_ROLE}


def _checked_plan(plan: EgressPlan) -> EgressPlan:
    if plan.relay != "gateway":
        raise UnsafeSpecError(
            f"session {plan.session_id}: egress mode {plan.mode!r} has no gateway",
            hint="a gateway pod serves model-only and allowlist sessions; 'none' gets no pod and no allowance",
        )
    return plan


def _env(spec: GatewayPodSpec, secrets: GatewaySecrets) -> list[dict[str, Any]]:
    """The plan in plain (it holds no secret) and each secret as a reference to the session's Secret."""
    env: list[dict[str, Any]] = [{"name": PLAN_ENV, "value": spec.plan.model_dump_json()}]
    secret = gateway_secret_name(spec.plan.session_id)
    for present, name, field in (
        (secrets.model_key is not None, MODEL_KEY_ENV, MODEL_KEY_FIELD),
        (spec.delegate and secrets.mcp_token is not None, MCP_TOKEN_ENV, MCP_TOKEN_FIELD),
    ):
        if present:
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": field}}})
    return env


def gateway_pod_manifest(spec: GatewayPodSpec, secrets: GatewaySecrets, options: PodOptions) -> dict[str, Any]:
    """The session's gateway Pod; ``secrets`` only decides which Secret keys it references (their values
    go into :func:`gateway_secret`, never into the pod)."""
    plan = _checked_plan(spec.plan)
    quantities = {"cpu": f"{int(spec.cpus * 1000)}m", "memory": f"{spec.memory_mb}Mi"}
    context = {
        "runAsNonRoot": True,
        "runAsUser": spec.uid,
        "runAsGroup": spec.gid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": seccomp_profile(options),
        "procMount": "Default",
    }
    container = {
        "name": GATEWAY_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.command),
        "env": _env(spec, secrets),
        "ports": [{"containerPort": port, "protocol": "TCP"} for port in gateway_ports(spec.delegate)],
        "securityContext": context,
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "volumeMounts": [
            {"name": "sockets", "mountPath": GATEWAY_SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "stdin": False,
        "tty": False,
    }
    volumes = [
        {"name": "sockets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]
    pod_spec = hardened_pod_spec(spec.timeout_s, spec.uid, spec.gid, options, [container], volumes)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": gateway_pod_name(plan.session_id),
            "namespace": options.namespace,
            "labels": _role_labels(spec.labels, plan.session_id),
        },
        "spec": pod_spec,
    }


def gateway_secret(
    plan: EgressPlan, labels: dict[str, str], secrets: GatewaySecrets, owner: dict[str, Any], options: PodOptions
) -> dict[str, Any]:
    """The Secret of the session's keys, owned by its gateway pod (``owner``: the pod as created, with
    its uid): Kubernetes deletes it with the pod, so a crashed Hydra leaves no key behind."""
    meta = owner.get("metadata") or {}
    if not meta.get("uid") or not meta.get("name"):
        raise UnsafeSpecError(f"session {plan.session_id}: the gateway pod has no uid to own its Secret")
    data: dict[str, str] = {}
    if secrets.model_key is not None:
        data[MODEL_KEY_FIELD] = secrets.model_key.get_secret_value()
    if secrets.mcp_token is not None:
        data[MCP_TOKEN_FIELD] = secrets.mcp_token.get_secret_value()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": gateway_secret_name(plan.session_id),
            "namespace": options.namespace,
            "labels": {**labels, LABEL_SESSION: plan.session_id, LABEL_ROLE: "gateway-key"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}],
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": data,
    }


def _model_ports(plan: EgressPlan) -> list[int]:
    _scheme, _host, port = model_endpoint(plan.model_url)
    ports = {port}
    if plan.mode == "allowlist" and plan.allowed_domains:
        ports.add(443)  # the CONNECT tunnel's only port (session_gateways)
    return sorted(ports)


def gateway_own_policy(
    plan: EgressPlan, labels: dict[str, str], options: PodOptions, *, delegate: bool
) -> dict[str, Any]:
    """The gateway pod's NetworkPolicy: ingress only from its own session's agent pods on its ports;
    egress only to DNS and, on the model's port (and 443 for an allowlist), to addresses outside the
    link-local range. Which names and addresses it dials is the gateway's own check (the same code as
    on one machine); this policy is the floor beneath it."""
    plan = _checked_plan(plan)
    session = plan.session_id
    agents = {LABEL_SESSION: session, LABEL_ROLE: "agent"}
    dns_ports = [{"protocol": proto, "port": 53} for proto in ("UDP", "TCP")]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": gateway_own_policy_name(session), "namespace": options.namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_SESSION: session, LABEL_ROLE: GATEWAY_ROLE}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": agents}}],
                    "ports": [{"protocol": "TCP", "port": port} for port in gateway_ports(delegate)],
                }
            ],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}},
                            "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
                        }
                    ],
                    "ports": dns_ports,
                },
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [LINK_LOCAL]}}],
                    "ports": [{"protocol": "TCP", "port": port} for port in _model_ports(plan)],
                },
            ],
        },
    }
