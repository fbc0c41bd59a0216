"""Hydra's warm pool on the kubernetes-sigs agent-sandbox CRDs: the SandboxTemplate whose pods are
Hydra's hardened agent pod waiting for a session, the SandboxWarmPool that keeps some of them running, the
SandboxClaim a run makes (:mod:`.warm_runtime` makes it), and the launch script that gives a claimed pod
its session. Pure functions returning plain dicts (the JSON the API server takes), like :mod:`.manifests`.

The CRDs (API group :data:`API_GROUP`, version :data:`API_VERSION`, the storage version of agent-sandbox
v0.5.6; ``extensions/api/v1beta1/sandbox{template,warmpool,claim}_types.go`` upstream) put a whole PodSpec
in a template (``spec.podTemplate.spec``); the pool's controller creates a Sandbox, and so a pod, per
replica, and hands one to each claim of the pool.

A warm pod cannot carry a session's command, environment or labels: it was started before the session
existed. So the template's pod is the pod :func:`~.manifests.pod_manifest` makes of a neutral agent spec,
changed in three places (docs/kubernetes.md, "Warm pools", says why each is safe):

- its workspace init container waits for :data:`~.manifests.READY_MARKER` without a bound: a pooled pod
  waits for its session as long as it takes;
- the agent container's command is :data:`LAUNCHER`: it runs the session's launch script, which Hydra
  writes next to the workspace (over ``pods/exec``, like the workspace archive) before the ready marker,
  and which the agent container mounts read-only at :data:`LAUNCH_DIR`;
- no ``activeDeadlineSeconds``: the deadline counts from the pod's start, which in a pool is long before
  its session's. A claim's ``lifecycle.shutdownTime`` is the backstop instead.

The template's pods get no token, no host namespace, Hydra's security context and the role label that
puts them under Hydra's default-deny NetworkPolicy from their first instant; the template opts out of the
controller's own NetworkPolicy (``networkPolicyManagement: Unmanaged``), whose default would allow egress
to the internet.
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.agent import CODEX_HOME
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    AGENT_CONTAINER,
    READY_MARKER,
    TRANSFER_MOUNT,
    WORKSPACE_IN_CONTAINER_NAME,
    PodOptions,
    dns_name,
    pod_manifest,
)
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, ContainerSpec, Mount
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER

API_GROUP = "extensions.agents.x-k8s.io"
API_VERSION = "v1beta1"
"""The storage version of the agent-sandbox extension CRDs (v1alpha1 is served but deprecated)."""
CRD_RESOURCES = ("sandboxtemplates", "sandboxwarmpools", "sandboxclaims")
"""What the warm pool needs the cluster to serve in :data:`API_GROUP`/:data:`API_VERSION`."""

LABEL_CLAIM = "hydra.claim"
"""Label Hydra puts on a claimed pod: the name of its SandboxClaim (deleting the claim frees the pod)."""
SANDBOX_GROUP = "agents.x-k8s.io"
"""The API group of the Sandbox (version :data:`API_VERSION` too) a claim is bound to."""
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"
"""The Sandbox's annotation naming its pod when it differs from the Sandbox's name (``resolvePodName``)."""
SHUTDOWN_MARGIN_S = 120
"""Seconds past the run's timeout at which the claim expires and the controller deletes its pod: the
backstop of a Hydra that went away (a pooled pod has no ``activeDeadlineSeconds``)."""

LAUNCH_SUBPATH = "launch"
"""The directory of the workspace volume that holds the session's launch script (beside ``ws``)."""
LAUNCH_DIR = "/run/hydra"
"""Where the agent container sees :data:`LAUNCH_SUBPATH`, read-only."""
LAUNCH_SCRIPT = "run"
LAUNCHER = ["sh", f"{LAUNCH_DIR}/{LAUNCH_SCRIPT}"]
"""The warm agent container's command: the script Hydra wrote for the session."""

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WarmPoolOptions(BaseModel):
    """What an operator chooses for the pool: its name (the template's too), how many pods wait, and the
    agent image, user and limits every pooled pod has (a session whose policy asks for others is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_DNS_LABEL, max_length=50, description="The SandboxTemplate's and pool's name.")
    image: str = Field(min_length=1)
    replicas: int = Field(default=2, ge=0, le=1000, description="Pods kept waiting for a session.")
    uid: int = Field(default=1000, ge=1, description="The agent's uid (never root).")
    gid: int = Field(default=1000, ge=1)
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    home: str = Field(pattern=r"^[0-9a-f]{16}$", description="The Hydra whose pods these are (its home label).")


def _waiting_agent(pool: WarmPoolOptions) -> ContainerSpec:
    """The neutral agent spec of a pooled pod: Hydra's mounts and limits, the launcher as its command,
    no environment (the launch script brings the session's), no session label."""
    return ContainerSpec(
        image=pool.image,
        argv=list(LAUNCHER),
        env={},
        workdir=WORKSPACE_IN_CONTAINER,
        user=f"{pool.uid}:{pool.gid}",
        labels={LABEL_ROLE: "agent"},  # the controller keeps a pod's template labels: nothing a run patches
        mounts=[
            Mount(type="volume", source="workspace", target=WORKSPACE_IN_CONTAINER),
            Mount(type="volume", source="codex-home", target=CODEX_HOME),
        ],
        limits=pool.limits,
        name=pool.name,
    )


def wait_for_session_command() -> list[str]:
    """The pooled pod's init container: poll for the ready marker for as long as the pod waits."""
    return ["sh", "-c", f"until [ -e {TRANSFER_MOUNT}/{READY_MARKER} ]; do sleep 0.2; done"]


def warm_pod_template(pool: WarmPoolOptions, options: PodOptions) -> dict[str, Any]:
    """The template's ``podTemplate``: Hydra's hardened agent pod, waiting for a session."""
    pod = pod_manifest(_waiting_agent(pool), options)
    spec = pod["spec"]
    spec.pop("activeDeadlineSeconds")
    [init] = spec["initContainers"]
    assert init["name"] == WORKSPACE_IN_CONTAINER_NAME
    init["command"] = wait_for_session_command()
    agent = next(c for c in spec["containers"] if c["name"] == AGENT_CONTAINER)
    [workspace] = [m for m in agent["volumeMounts"] if m["mountPath"] == WORKSPACE_IN_CONTAINER]
    agent["volumeMounts"].append(
        {"name": workspace["name"], "mountPath": LAUNCH_DIR, "subPath": LAUNCH_SUBPATH, "readOnly": True}
    )
    return {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": spec}


def sandbox_template(pool: WarmPoolOptions, options: PodOptions) -> dict[str, Any]:
    """The SandboxTemplate of Hydra's pool in ``options.namespace``. Claims may not add environment
    variables or volumes to it, and the controller makes no NetworkPolicy for it (Hydra's apply)."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "SandboxTemplate",
        "metadata": {"name": pool.name, "namespace": options.namespace, "labels": {LABEL_HOME: pool.home}},
        "spec": {
            "podTemplate": warm_pod_template(pool, options),
            "networkPolicyManagement": "Unmanaged",
            "envVarsInjectionPolicy": "Disallowed",
            "volumeClaimTemplatesPolicy": "Disallowed",
            "service": False,
        },
    }


def sandbox_warm_pool(pool: WarmPoolOptions, options: PodOptions) -> dict[str, Any]:
    """The SandboxWarmPool keeping ``pool.replicas`` pods of the template running; a changed template
    replaces the pods still waiting (``Recreate``), never a claimed one."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "SandboxWarmPool",
        "metadata": {"name": pool.name, "namespace": options.namespace, "labels": {LABEL_HOME: pool.home}},
        "spec": {
            "replicas": pool.replicas,
            "sandboxTemplateRef": {"name": pool.name},
            "updateStrategy": {"type": "Recreate"},
        },
    }


def warm_pool_manifests(pool: WarmPoolOptions, options: PodOptions) -> list[dict[str, Any]]:
    """What an operator applies once (``hydra kubernetes warm-pool-manifest``): the template, then the pool."""
    return [sandbox_template(pool, options), sandbox_warm_pool(pool, options)]


def launch_script(spec: ContainerSpec) -> str:
    """The session's launch script a warm pod's :data:`LAUNCHER` runs: the spec's environment added to the
    image's, then its argv exec'd (so the agent is the container's main process and its exit code the
    container's). Every word is quoted for the shell; the script holds no secret (the spec holds none)."""
    for key in spec.env:
        if not _ENV_NAME.match(key):
            raise UnsafeSpecError(
                f"container spec env: {key!r} cannot be passed through the launch script",
                hint="an environment variable name: letters, digits and '_', not starting with a digit",
            )
    if "=" in spec.argv[0]:
        raise UnsafeSpecError(
            f"container spec argv: {spec.argv[0]!r} would be read as an assignment by env",
            hint="the agent's program name has no '='",
        )
    assignments = [shlex.quote(f"{key}={value}") for key, value in spec.env.items()]
    command = " ".join(["exec", "env", *assignments, *map(shlex.quote, spec.argv)])
    return f"cd {shlex.quote(spec.workdir)}\n{command}\n"


def sandbox_claim(spec: ContainerSpec, pool: str, options: PodOptions, now: datetime) -> dict[str, Any]:
    """The SandboxClaim of ``spec``'s run on a pod of ``pool``: named and labelled like the pod Hydra would
    have made (re-attach and ``hydra gc`` find it by its labels), expiring ``SHUTDOWN_MARGIN_S`` after the
    run's timeout (the controller then deletes the claim and its pod), no environment (it would force a
    cold start; the launch script brings it)."""
    expires = now + timedelta(seconds=spec.limits.timeout_s + SHUTDOWN_MARGIN_S)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "SandboxClaim",
        "metadata": {"name": dns_name(spec.name, "sandbox claim"), "namespace": options.namespace,
                     "labels": dict(spec.labels)},
        "spec": {
            "warmPoolRef": {"name": pool},
            "lifecycle": {"shutdownTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "shutdownPolicy": "Delete"},
        },
    }  # fmt: skip


def write_launch_command() -> list[str]:
    """What writes the launch script (its stdin) into the pooled pod's workspace volume, in the waiting
    init container (the agent container sees it read-only at :data:`LAUNCH_DIR`)."""
    where = f"{TRANSFER_MOUNT}/{LAUNCH_SUBPATH}"
    partial, script = f"{where}/{LAUNCH_SCRIPT}.tmp", f"{where}/{LAUNCH_SCRIPT}"
    return ["sh", "-c", f"mkdir -p {where} && cat > {partial} && mv {partial} {script}"]
