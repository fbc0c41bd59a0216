"""The Kubernetes runtime on a warm pool: ``create`` claims a pod of Hydra's SandboxWarmPool
(:mod:`.warm_pool`) instead of creating one; everything else is :class:`~.runtime.KubernetesRuntime`'s,
on the claimed pod.

``create`` makes sure the namespace's policies exist (as for a pod of its own), creates the SandboxClaim
(named and labelled like the pod would be), and waits, bounded, until the controller bound it: the claim
names its Sandbox, the Sandbox is controlled by the claim (owner reference, by uid), its pod (named by the
Sandbox's ``agents.x-k8s.io/pod-name`` annotation, else like the Sandbox) is controlled by the Sandbox, and
the pod waits in its init container. The pod must be Hydra's waiting agent pod (the role label that puts it
under the default-deny policy, the launcher as its command, no token) with the isolation, image and limits
the run's own pod would have (:func:`check_pooled_pod`), or it is refused. Hydra then labels
the pod with the session's labels (the gateway policy selects it from then on; the claim cannot carry them,
the controller only passes labels of an allow-listed domain) and its claim's name, and writes the session's
launch script into it over ``pods/exec``. The workspace transport then puts the workspace and releases the
pod as it does for a pod of its own. On any failure the claim is deleted (its pod with it) and the error
names the claim and its last condition.

Freeing the pod is deleting its claim (the controller deletes the Sandbox and its pod, the pool makes a
new one): ``stop``, ``kill`` and ``remove`` delete the claim and then the pod, found by the pod's
:data:`~.warm_pool.LABEL_CLAIM` label (so a re-attached run frees its pod too). ``list_containers`` also
lists each claim of the selection whose pod does not carry its labels yet (Hydra went away while
claiming) as ``claim/<name>``, so ``hydra gc`` deletes it; ``remove`` of such an id deletes only the claim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from websocket import WebSocketException

from hydra_sandbox.errors import RuntimeUnavailableError, UnsafeSpecError
from hydra_sandbox.sandbox.backends.kubernetes.exec_transport import ExecOpener, kubernetes_exec
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    AGENT_CONTAINER,
    WORKSPACE_IN_CONTAINER_NAME,
    PodOptions,
    pod_manifest,
)
from hydra_sandbox.sandbox.backends.kubernetes.runtime import (
    KubernetesRuntime,
    load_api_client,
    raw_call,
)
from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import (
    API_GROUP,
    API_VERSION,
    LABEL_CLAIM,
    LAUNCHER,
    POD_NAME_ANNOTATION,
    SANDBOX_GROUP,
    launch_script,
    sandbox_claim,
    write_launch_command,
)
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerInfo, ContainerSpec
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER

CLAIMS = "sandboxclaims"
SANDBOXES = "sandboxes"
CLAIM_ID_PREFIX = "claim/"
"""Prefix of a container id that is a claim without a labelled pod (never a pod name: no '/' in those)."""
BIND_TIMEOUT_S = 120.0
"""How long ``create`` waits for the claim to be bound to a pod waiting for its session."""
POLL_S = 0.25


def _condition(claim: dict[str, Any] | None) -> str:
    """The claim's last condition as the controller wrote it, or why there is none."""
    if claim is None:
        return "the claim is gone"
    conditions = claim.get("status", {}).get("conditions") or []
    if not conditions:
        return "no condition yet (is the agent-sandbox controller running?)"
    last = conditions[-1]
    return f"{last.get('type')}={last.get('status')} {last.get('reason', '')}: {last.get('message', '')}".rstrip(": ")


def _controlled_by(obj: dict[str, Any], kind: str, owner: dict[str, Any]) -> bool:
    """Whether ``owner`` (of ``kind``, in the agent-sandbox groups) is ``obj``'s controller, by uid."""
    uid = owner.get("metadata", {}).get("uid")
    return bool(uid) and any(
        ref.get("controller") is True
        and ref.get("kind") == kind
        and ref.get("uid") == uid
        and str(ref.get("apiVersion", "")).startswith((f"{SANDBOX_GROUP}/", f"{API_GROUP}/"))
        for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )


def _waiting(pod: dict[str, Any]) -> bool:
    """Whether the pod's init container runs (it waits for the session; exec reaches it)."""
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    return any(s.get("name") == WORKSPACE_IN_CONTAINER_NAME and "running" in (s.get("state") or {}) for s in statuses)


def _agent(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in pod_spec.get("containers") or [] if c.get("name") == AGENT_CONTAINER), {})


_POD_FIELDS = ("securityContext", "runtimeClassName")
_HOST_FLAGS = ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace")
"""Booleans the API server leaves out when false: compared as booleans."""
_AGENT_FIELDS = ("image", "securityContext")


def _quantities(resources: Any) -> dict[str, dict[str, Decimal]]:
    """Requests and limits as numbers: the API server writes ``1000m`` back as ``1`` and ``2048Mi`` as ``2Gi``."""
    if not isinstance(resources, dict):
        return {}
    try:
        return {
            kind: {name: parse_quantity(value) for name, value in (resources.get(kind) or {}).items()}
            for kind in ("requests", "limits")
        }
    except ValueError:
        return {"unreadable": {}}


def check_pooled_pod(pod: dict[str, Any], pool: str, expected: dict[str, Any]) -> None:
    """Refuse a claimed pod that is not Hydra's waiting agent pod (a pool whose template is not the one
    ``hydra kubernetes warm-pool-manifest`` renders), or that differs from ``expected`` (the pod the run
    would have had of its own) in its isolation, image, user or limits."""
    name = pod.get("metadata", {}).get("name")
    pod_spec, wanted = pod.get("spec", {}), expected["spec"]
    agent, wanted_agent = _agent(pod_spec), _agent(wanted)
    labels = pod.get("metadata", {}).get("labels") or {}
    checks = {
        f"no {LABEL_ROLE}=agent label (the default-deny policy would not cover it)": labels.get(LABEL_ROLE) != "agent",
        "a service-account token": pod_spec.get("automountServiceAccountToken") is not False,
        "an agent container that does not run Hydra's launcher": agent.get("command") != LAUNCHER,
    }
    for field in _POD_FIELDS:
        checks[f"{field} {pod_spec.get(field)!r}, not {wanted.get(field)!r}"] = pod_spec.get(field) != wanted.get(field)
    for field in _HOST_FLAGS:
        checks[f"{field} {pod_spec.get(field)!r}"] = bool(pod_spec.get(field)) != bool(wanted.get(field))
    for field in _AGENT_FIELDS:
        have, want = agent.get(field), wanted_agent.get(field)
        checks[f"agent {field} {have!r}, not the run's {want!r}"] = have != want
    have, want = agent.get("resources"), wanted_agent.get("resources")
    checks[f"agent resources {have!r}, not the run's {want!r}"] = _quantities(have) != _quantities(want)
    problems = [what for what, bad in checks.items() if bad]
    if problems:
        raise UnsafeSpecError(
            f"pod {name} of warm pool {pool} is not Hydra's agent pod: " + "; ".join(problems),
            hint="render the pool with `hydra kubernetes warm-pool-manifest` (the run's image, user and limits) "
            "and apply it",
        )


class WarmPoolRuntime(KubernetesRuntime):
    def __init__(
        self,
        options: PodOptions,
        pool: str,
        api_client: Callable[[], k8s.ApiClient] = load_api_client,
        *,
        open_exec: ExecOpener | None = None,
        bind_timeout_s: float = BIND_TIMEOUT_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        **kwargs: Any,
    ) -> None:
        super().__init__(options, api_client, **kwargs)
        self.pool = pool
        self.bind_timeout_s = bind_timeout_s
        self._open_exec = open_exec
        self._now = now

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api_client)

    def use_exec(self, open_exec: ExecOpener) -> None:
        """Write launch scripts through ``open_exec`` (the workspace transport's)."""
        self._open_exec = open_exec

    def open_exec(self, pod: str, container: str, argv: list[str]) -> Any:
        opener = self._open_exec or kubernetes_exec(lambda: self.api_client, self.ns)
        return opener(pod, container, argv)

    # -- claims ------------------------------------------------------------------------------

    def _read_claim(self, name: str) -> dict[str, Any] | None:
        try:
            found = raw_call(self.custom.get_namespaced_custom_object, API_GROUP, API_VERSION, self.ns, CLAIMS, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        claim: dict[str, Any] = self._json(found)
        return claim

    def delete_claim(self, name: str) -> None:
        try:
            delete = self.custom.delete_namespaced_custom_object
            raw_call(delete, API_GROUP, API_VERSION, self.ns, CLAIMS, name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _list_claims(self, selector: str) -> list[dict[str, Any]]:
        listed = raw_call(
            self.custom.list_namespaced_custom_object, API_GROUP, API_VERSION, self.ns, CLAIMS, label_selector=selector
        )
        items: list[dict[str, Any]] = self._json(listed).get("items", [])
        return items

    def _create_claim(self, spec: ContainerSpec, claim: dict[str, Any]) -> None:
        self._ensure_policies(spec)  # the pod is under the default-deny policy already; the gateway's allowance
        create = self.custom.create_namespaced_custom_object
        raw_call(create, API_GROUP, API_VERSION, self.ns, CLAIMS, claim).release_conn()

    def _read_sandbox(self, name: str) -> dict[str, Any] | None:
        try:
            found = raw_call(
                self.custom.get_namespaced_custom_object, SANDBOX_GROUP, API_VERSION, self.ns, SANDBOXES, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        sandbox: dict[str, Any] = self._json(found)
        return sandbox

    def _claimed_pod(self, claim: dict[str, Any]) -> dict[str, Any] | None:
        """The pod of the Sandbox the claim is bound to, once the chain of controllers holds: the Sandbox is
        controlled by this claim (its uid) and the pod by this Sandbox; else None (not bound yet)."""
        sandbox_name = claim.get("status", {}).get("sandbox", {}).get("name")
        sandbox = self._read_sandbox(str(sandbox_name)) if sandbox_name else None
        if sandbox is None or not _controlled_by(sandbox, "SandboxClaim", claim):
            return None
        meta = sandbox.get("metadata", {})
        pod = self._read_pod(str((meta.get("annotations") or {}).get(POD_NAME_ANNOTATION) or meta.get("name")))
        if pod is None or not _controlled_by(pod, "Sandbox", sandbox):
            return None
        return pod

    def _bound_pod(self, name: str, spec: ContainerSpec) -> tuple[str | None, dict[str, Any] | None]:
        """(the claimed pod's name once it waits for its session, else None; the claim as last read)."""
        claim = self._read_claim(name)
        if claim is None:
            raise RuntimeUnavailableError(f"sandbox claim {name} in namespace {self.ns} was deleted while Hydra waited")
        pod = self._claimed_pod(claim)
        if pod is None:
            return None, claim
        check_pooled_pod(pod, self.pool, pod_manifest(spec, self.options))
        return (str(pod["metadata"]["name"]) if _waiting(pod) else None), claim

    def _label(self, pod: str, labels: dict[str, str]) -> None:
        body = {"metadata": {"labels": labels}}
        raw_call(self.core.patch_namespaced_pod, pod, self.ns, body).release_conn()

    def _write_launch(self, pod: str, script: str) -> None:
        channels = self.open_exec(pod, WORKSPACE_IN_CONTAINER_NAME, write_launch_command())
        try:
            with contextlib.suppress(OSError, WebSocketException):  # the command ended early: its status says why
                channels.write_stdin(script.encode())
                channels.close_stdin()
            code: int | None = None
            with contextlib.suppress(Exception):
                code = channels.finish()
        finally:
            with contextlib.suppress(Exception):
                channels.sock.close()
        if code != 0:
            said = channels.stderr.decode("utf-8", "replace").strip()[-500:] or "(nothing on stderr)"
            raise RuntimeUnavailableError(
                f"{channels.what}: writing the session's launch script failed (exit {code}): {said}",
                hint="is the pod's workspace volume full, or the pod failing?",
            )

    async def _wait_bound(self, name: str, spec: ContainerSpec) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bind_timeout_s
        while True:
            pod, claim = await self.call(f"read sandbox claim {name}", self._bound_pod, name, spec)
            if pod is not None:
                return pod
            if loop.time() >= deadline:
                raise RuntimeUnavailableError(
                    f"sandbox claim {name} of warm pool {self.pool} in namespace {self.ns} got no pod waiting for "
                    f"its session within {self.bind_timeout_s:g}s; last condition: {_condition(claim)}",
                    hint=f"kubectl -n {self.ns} get sandboxwarmpool {self.pool} (are pods ready?); "
                    "kubectl describe sandboxclaim; or unset HYDRA_KUBERNETES_WARM_POOL",
                )
            await asyncio.sleep(POLL_S)

    async def create(self, spec: ContainerSpec) -> str:
        """A pod claimed from the pool for a spec with a workspace (an agent's run); a pod of its own for
        one without (nothing would release a pooled pod from its wait)."""
        if not any(m.target == WORKSPACE_IN_CONTAINER for m in spec.mounts):
            return await super().create(spec)
        pod_manifest(spec, self.options)  # the refusals of a pod of its own, before any request
        script = launch_script(spec)
        claim = sandbox_claim(spec, self.pool, self.options, self._now())
        name = str(claim["metadata"]["name"])
        await self.call(f"create sandbox claim {name}", self._create_claim, spec, claim)
        try:
            pod = await self._wait_bound(name, spec)
            await self.call(f"label pod {pod}", self._label, pod, {**spec.labels, LABEL_CLAIM: name})
            await self.call(f"write the launch script into pod {pod}", self._write_launch, pod, script)
        except BaseException:
            await asyncio.shield(self.call(f"delete sandbox claim {name}", self.delete_claim, name))
            raise
        return pod

    # -- freeing the pod: delete its claim ---------------------------------------------------

    def _claim_of(self, pod: str) -> str | None:
        found = self._read_pod(pod) or self._last_seen.get(pod) or {}
        return (found.get("metadata", {}).get("labels") or {}).get(LABEL_CLAIM)

    async def _release(self, container_id: str) -> bool:
        """Delete the claim behind ``container_id``; True when the id was a claim alone (no pod to delete)."""
        if container_id.startswith(CLAIM_ID_PREFIX):
            claim = container_id.removeprefix(CLAIM_ID_PREFIX)
            await self.call(f"delete sandbox claim {claim}", self.delete_claim, claim)
            return True
        claim_name = await self.call(f"read pod {container_id}", self._claim_of, container_id)
        if claim_name is not None:
            await self.call(f"delete sandbox claim {claim_name}", self.delete_claim, claim_name)
        return False

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        if not await self._release(container_id):
            await super().stop(container_id, grace_s)

    async def kill(self, container_id: str) -> None:
        if not await self._release(container_id):
            await super().kill(container_id)

    async def remove(self, container_id: str) -> None:
        if not await self._release(container_id):
            await super().remove(container_id)

    async def inspect(self, container_id: str) -> ContainerInfo:
        if container_id.startswith(CLAIM_ID_PREFIX):
            return _claim_info(container_id.removeprefix(CLAIM_ID_PREFIX), {})
        return await super().inspect(container_id)

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """The selection's pods, and its claims whose pod does not carry their labels (yet) as ``claim/<name>``."""
        pods = await super().list_containers(labels)
        claimed = {p.labels.get(LABEL_CLAIM) for p in pods}

        def _claims() -> list[dict[str, Any]]:
            selector = ",".join(f"{k}={v}" for k, v in labels.items()) or LABEL_SESSION
            found = self._list_claims(selector)  # the selector again on our side, as for pods
            return [c for c in found if _selected(c.get("metadata", {}).get("labels") or {}, labels)]

        claims = await self.call("list sandbox claims", _claims)
        orphans = [c for c in claims if c["metadata"]["name"] not in claimed]
        return pods + [_claim_info(c["metadata"]["name"], c.get("metadata", {}).get("labels") or {}) for c in orphans]


def _claim_info(name: str, labels: dict[str, str]) -> ContainerInfo:
    return ContainerInfo(id=CLAIM_ID_PREFIX + name, name=CLAIM_ID_PREFIX + name, labels=labels, status="created")


def _selected(have: dict[str, str], labels: dict[str, str]) -> bool:
    return all(have.get(k) == v for k, v in labels.items()) if labels else LABEL_SESSION in have
