"""The neutral :class:`~hydra_sandbox.sandbox.spec.ContainerSpec` as Kubernetes manifests: the agent's
Pod and its session's default-deny NetworkPolicy. Pure functions returning plain dicts (the JSON the API
server takes), so every field is tested without a cluster and validated against the Kubernetes schemas
of :data:`MIN_KUBERNETES` in strict mode.

Translation only: the hardening rules live on the spec and are checked again here, because a spec built
with ``model_construct`` or ``model_copy`` skipped validation. What Kubernetes cannot express (Hydra's
seccomp profile unless an operator installed it on the nodes, the pids limit, core dumps, noexec tmpfs)
is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.agent_endpoint import MCP_PORT
from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.sandbox.egress import EGRESS_PORT
from hydra_sandbox.sandbox.spec import (
    HYDRA_NAME_PREFIX,
    LABEL_ROLE,
    LABEL_SESSION,
    ContainerSpec,
    Mount,
    check_hardening,
)
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER

MIN_KUBERNETES = "1.30.0"
"""The oldest cluster version the manifests are validated against (tests, docs/kubernetes.md)."""

AGENT_CONTAINER = "agent"
WORKSPACE_IN_CONTAINER_NAME = "workspace-in"
"""Init container of a pod with a workspace: it holds the pod until the transport extracted the archive
(:mod:`.exec_transport`), so the agent never starts on a partial tree."""
WORKSPACE_OUT_CONTAINER_NAME = "workspace-out"
"""Container that keeps the workspace readable (read-only) after the agent exited, for the change set."""
TRANSFER_MOUNT = "/xfer"
"""Where the two transfer containers mount the workspace volume; the agent sees only its ``ws`` below."""
WORKSPACE_SUBPATH = "ws"
"""The directory of the workspace volume the agent gets as its workspace (the archive's top member), so
the tar extraction sets its owner and mode: an emptyDir's own root is root's."""
READY_MARKER = ".hydra-ready"
"""Written beside ``ws`` once the archive is in: the init container then exits and the agent starts."""
TRANSFER_WAIT_S = 600
"""How long the init container waits for the archive before it fails the pod."""
TRANSFER_CPU = "250m"
TRANSFER_MEMORY = "128Mi"
GATEWAY_ROLE = "gateway"
""":data:`~hydra_sandbox.sandbox.spec.LABEL_ROLE` of the pod that relays an agent's egress: the only
pods an agent pod may reach."""

GATEWAY_PORTS = (EGRESS_PORT, MCP_PORT)
"""The ports of a gateway pod: the model gateway, and the agent MCP relay of a run that may delegate."""

SECCOMP_PATH = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
"""A Localhost profile's path: relative, of plain names none of which starts with '.' (no '..')."""

DEADLINE_MARGIN_S = 120
"""Seconds past the run's own timeout before Kubernetes ends the pod itself (``activeDeadlineSeconds``):
Hydra's supervisor times the run out first and names it; the deadline is the backstop for a Hydra that
went away."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SIZE = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": "", "k": "Ki", "m": "Mi", "g": "Gi"}


class PodOptions(BaseModel):
    """What the cluster side adds to a spec: where the pod goes and how it is isolated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(pattern=_DNS_LABEL.pattern, max_length=63)
    runtime_class: str | None = Field(
        default=None, pattern=_DNS_LABEL.pattern, max_length=63, description="RuntimeClass, e.g. gvisor or kata."
    )
    seccomp_localhost: str | None = Field(
        default=None,
        pattern=SECCOMP_PATH,
        max_length=255,
        description="Hydra's seccomp profile as installed on every agent node, relative to the kubelet's "
        "seccomp directory (e.g. hydra/agent.json); None: the runtime's default profile.",
    )


def dns_name(value: str | None, what: str) -> str:
    if value is None or len(value) > 63 or not _DNS_LABEL.match(value):
        raise UnsafeSpecError(
            f"container spec name: {value!r} cannot name a Kubernetes {what}",
            hint="a DNS label: at most 63 lowercase letters, digits and '-', starting and ending alphanumeric",
        )
    return value


def _labels(spec: ContainerSpec) -> dict[str, str]:
    for key, value in spec.labels.items():
        if len(key.rpartition("/")[2]) > 63 or not _LABEL_NAME.match(key):
            raise UnsafeSpecError(f"container spec labels: {key!r} is not a Kubernetes label name")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise UnsafeSpecError(
                f"container spec labels: {key}={value!r} is not a Kubernetes label value",
                hint="at most 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric",
            )
    return dict(spec.labels)


def _user(spec: ContainerSpec) -> tuple[int, int]:
    uid, _, gid = spec.user.partition(":")
    return int(uid), int(gid)


def tmpfs_size(target: str, options: str) -> str:
    """A tmpfs ``size=`` option as a Kubernetes quantity (``512m`` → ``512Mi``)."""
    sizes = [o.partition("=")[2] for o in options.split(",") if o.startswith("size=")]
    match = _SIZE.match(sizes[-1]) if sizes else None
    if match is None:
        raise UnsafeSpecError(
            f"container spec tmpfs {target!r}: size in {options!r} has no Kubernetes translation",
            hint="give size=<n>[k|m|g]",
        )
    return match.group(1) + _SIZE_UNITS[match.group(2).lower()]


def _volume_name(index: int, prefix: str) -> str:
    return f"{prefix}-{index}"


def _volumes(spec: ContainerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container volumeMounts): tmpfs as memory-backed emptyDirs, named volumes as
    emptyDirs that live as long as the pod (filled by the workspace transport), bounded by the policy's
    ``disk_mb`` when it has one; binds are refused."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, (target, options) in enumerate(sorted(spec.tmpfs.items())):
        name = _volume_name(index, "tmpfs")
        volumes.append({"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": tmpfs_size(target, options)}})
        mounts.append({"name": name, "mountPath": target})
    disk = {"sizeLimit": f"{spec.limits.disk_mb}Mi"} if spec.limits.disk_mb is not None else {}
    for index, mount in enumerate(spec.mounts):
        _mountable(mount)
        name = _volume_name(index, "volume")
        volumes.append({"name": name, "emptyDir": dict(disk)})  # past sizeLimit the kubelet evicts the pod
        entry = {"name": name, "mountPath": mount.target, "readOnly": mount.read_only}
        if mount.target == WORKSPACE_IN_CONTAINER:
            entry["subPath"] = WORKSPACE_SUBPATH  # the extracted top directory: the agent's owner and mode
        mounts.append(entry)
    return volumes, mounts


def _workspace_volume(spec: ContainerSpec, volume_mounts: list[dict[str, Any]]) -> str | None:
    """The pod volume name of the spec's workspace, if it has one."""
    found = [m["name"] for m in volume_mounts if m["mountPath"] == WORKSPACE_IN_CONTAINER]
    return found[0] if found else None


def _transfer_container(
    spec: ContainerSpec, options: PodOptions, name: str, volume: str, command: list[str], read_only: bool
) -> dict[str, Any]:
    """A container of the agent's image, as locked down as the agent, that sees the whole workspace
    volume at :data:`TRANSFER_MOUNT` and nothing else (no environment, no token, small limits)."""
    quantities = {"cpu": TRANSFER_CPU, "memory": TRANSFER_MEMORY}
    return {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "securityContext": _security_context(spec, options),
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "volumeMounts": [{"name": volume, "mountPath": TRANSFER_MOUNT, "readOnly": read_only}],
        "stdin": False,
        "tty": False,
    }


def wait_for_archive_command(wait_s: int = TRANSFER_WAIT_S) -> list[str]:
    """The init container's command: poll for :data:`READY_MARKER` (the transport writes it after the
    archive is in), give up after ``wait_s`` so a pod Hydra forgot fails instead of waiting forever."""
    marker = f"{TRANSFER_MOUNT}/{READY_MARKER}"
    polls = wait_s * 5
    script = f"i=0; until [ -e {marker} ]; do i=$((i+1)); [ $i -gt {polls} ] && exit 1; sleep 0.2; done"
    return ["sh", "-c", script]


def _workspace_containers(
    spec: ContainerSpec, options: PodOptions, volume: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(init containers, keeper): the one that waits for the archive, the one that keeps the tree
    readable after the agent exited, until Hydra read it back and deleted the pod."""
    keep_s = spec.limits.timeout_s + DEADLINE_MARGIN_S
    init = _transfer_container(
        spec, options, WORKSPACE_IN_CONTAINER_NAME, volume, wait_for_archive_command(), read_only=False
    )
    keeper = _transfer_container(
        spec, options, WORKSPACE_OUT_CONTAINER_NAME, volume, ["sleep", str(keep_s)], read_only=True
    )
    return [init], keeper


def _mountable(mount: Mount) -> None:
    if mount.type == "bind":
        raise UnsafeSpecError(
            f"container spec mounts: bind of {mount.source} has no Kubernetes translation",
            hint="a path of Hydra's machine is not on the node (and hostPath would give the agent the node's); "
            "the workspace travels as an archive over pods/exec",
        )


def seccomp_profile(options: PodOptions) -> dict[str, str]:
    """Hydra's own profile where the operator installed it on the nodes, else the runtime's default."""
    if options.seccomp_localhost is None:
        return {"type": "RuntimeDefault"}
    return {"type": "Localhost", "localhostProfile": options.seccomp_localhost}


def _security_context(spec: ContainerSpec, options: PodOptions) -> dict[str, Any]:
    uid, gid = _user(spec)
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "readOnlyRootFilesystem": spec.read_only_root,
        "allowPrivilegeEscalation": not spec.no_new_privileges,
        "privileged": spec.privileged,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": seccomp_profile(options),  # Hydra's own profile is a file on the nodes (docs/kubernetes.md)
        "procMount": "Default",
    }


def pod_resources(spec: ContainerSpec) -> dict[str, Any]:
    """The agent container's requests and limits: the policy's CPU and memory."""
    quantities = {"cpu": f"{int(spec.limits.cpus * 1000)}m", "memory": f"{spec.limits.memory_mb}Mi"}
    return {"requests": dict(quantities), "limits": dict(quantities)}


def _container(spec: ContainerSpec, options: PodOptions, volume_mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": AGENT_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.argv),  # replaces the image's entrypoint, as Docker's entrypoint=[] does
        "env": [{"name": k, "value": v} for k, v in spec.env.items()],
        "workingDir": spec.workdir,
        "securityContext": _security_context(spec, options),
        "resources": pod_resources(spec),
        "volumeMounts": volume_mounts,
        "stdin": False,
        "tty": False,
        "terminationMessagePolicy": "File",
    }


def _check_network(spec: ContainerSpec) -> None:
    mode = spec.network_mode
    if mode != "none" and not mode.startswith("container:" + HYDRA_NAME_PREFIX):
        raise UnsafeSpecError(f"container spec network_mode: {mode!r} has no Kubernetes translation")


def hardened_pod_spec(
    timeout_s: int,
    uid: int,
    gid: int,
    options: PodOptions,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The pod-level fields every pod Hydra makes shares (the agent's, the gateway's): never restarted, a
    deadline past the run's, no service-account token, no host namespaces, non-root, the seccomp profile and
    the runtime class of ``options``."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": timeout_s + DEADLINE_MARGIN_S,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "seccompProfile": seccomp_profile(options),
        },
        "containers": containers,
        "volumes": volumes,
    }
    if options.runtime_class is not None:
        pod_spec["runtimeClassName"] = options.runtime_class
    return pod_spec


def pod_manifest(spec: ContainerSpec, options: PodOptions) -> dict[str, Any]:
    """The Pod running ``spec`` in ``options.namespace``; refuses a spec that is not hardened."""
    check_hardening(spec)
    _check_network(spec)
    uid, gid = _user(spec)
    volumes, volume_mounts = _volumes(spec)
    pod_spec = hardened_pod_spec(
        spec.limits.timeout_s, uid, gid, options, [_container(spec, options, volume_mounts)], volumes
    )
    workspace = _workspace_volume(spec, volume_mounts)
    if workspace is not None:
        pod_spec["initContainers"], keeper = _workspace_containers(spec, options, workspace)
        pod_spec["containers"].append(keeper)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": dns_name(spec.name, "pod"),
            "namespace": options.namespace,
            "labels": _labels(spec),
        },
        "spec": pod_spec,
    }


DEFAULT_DENY_POLICY = f"{HYDRA_NAME_PREFIX}default-deny"


def default_deny_policy(options: PodOptions) -> dict[str, Any]:
    """The namespace's base NetworkPolicy: every pod Hydra labels with a role other than
    :data:`GATEWAY_ROLE` gets no ingress and no egress at all (no DNS, no pod, no address outside).
    NetworkPolicies only add allowances, so a session's policy opens exactly its gateway on top."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DEFAULT_DENY_POLICY, "namespace": options.namespace, "labels": {LABEL_ROLE: "network"}},
        "spec": {
            "podSelector": {
                "matchExpressions": [
                    {"key": LABEL_ROLE, "operator": "Exists"},  # NotIn alone would match every pod
                    {"key": LABEL_ROLE, "operator": "NotIn", "values": [GATEWAY_ROLE]},
                ]
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }


def gateway_policy_name(session_id: str) -> str:
    return dns_name(f"{HYDRA_NAME_PREFIX}{session_id}-egress", "network policy")


def gateway_policy(session_id: str, labels: dict[str, str], options: PodOptions) -> dict[str, Any]:
    """The one allowance a session with a gateway gets: its agent pods may reach the pods labelled as
    the session's gateway on the gateway's ports (model, agent MCP), and nothing else (no DNS, no other
    pod, no address outside)."""
    agents = {LABEL_SESSION: session_id, LABEL_ROLE: "agent"}
    gateway = {LABEL_SESSION: session_id, LABEL_ROLE: GATEWAY_ROLE}
    ports = [{"protocol": "TCP", "port": port} for port in GATEWAY_PORTS]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": gateway_policy_name(session_id), "namespace": options.namespace, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": agents},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": gateway}}], "ports": ports}],
        },
    }
