"""Egress for agent pods: per session a **gateway pod** (:mod:`.gateway_pods`) runs the shared gateway
process (:mod:`hydra_sandbox.sandbox.gateway_process`, through :mod:`.gateway_process`) on its TCP port
18080, and the agent relays its loopback port to that pod's IP.

* The agent pod has no route but to its session's gateway pod (the runtime creates that NetworkPolicy
  with the agent's pod: the spec's ``network_mode`` names the gateway pod). Its ``hydra-agent-entry``
  relays 127.0.0.1:18080 to ``HYDRA_EGRESS_TARGET=<gateway pod IP>:18080``, a value checked here and
  again by the entry script (an IPv4 address and a port, nothing socat could read as an option).
* :meth:`KubernetesEgress.serve` creates the pod (its policy first, its key in a Secret the pod owns),
  waits (bounded) until it runs, has an IP and printed its ready line, and follows its log for the
  numbered usage lines (:func:`~hydra_sandbox.sandbox.gateway_lines.gateway_line`, the remote Docker
  gateway's parser). Once ``on_usage`` says the budget is spent the pod is deleted: no further model
  request passes. A re-attached server replays the log from its start with a budget that starts from
  zero, so each response of the run is counted once, and the numbers let the recorder keep each usage
  event once (as on a remote Docker engine).
* Delegation cannot reach Hydra's agent MCP endpoint (a socket on Hydra's machine) from the cluster:
  :attr:`KubernetesEgress.reaches_hydra` is false, and the orchestrator runs such agents without it and
  records why.
* A server shutdown mid-run leaves the gateway pod running for the next server, which finds it by its
  labels; otherwise it goes (with its Secret and policy) after the agent's pod, at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import (
    GATEWAY_CONTAINER,
    GatewayPodSpec,
    gateway_pod_name,
)
from hydra_sandbox.sandbox.backends.kubernetes.gateway_pods import GatewayPods
from hydra_sandbox.sandbox.backends.kubernetes.logs import follow_pod_logs
from hydra_sandbox.sandbox.backends.kubernetes.manifests import gateway_policy_name
from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime
from hydra_sandbox.sandbox.egress import EGRESS_PORT, ActiveEgress, EgressPlan, GatewaySecrets
from hydra_sandbox.sandbox.gateway_beside import GatewayBeside
from hydra_sandbox.sandbox.gateway_lines import gateway_line
from hydra_sandbox.sandbox.gateways import ENTRYPOINT, agent_wiring
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_SESSION

log = logging.getLogger(__name__)

READY_DEADLINE_S = 120.0
"""How long a gateway pod may take to be scheduled, pull its image, run and say it is ready."""
TARGET_ENV = "HYDRA_EGRESS_TARGET"
GATEWAY_TIMEOUT_S = 86400
"""The gateway pod's own deadline (before the margin): the longest run a policy allows; it is removed
when its run ends, this only bounds one a crashed Hydra left."""


def _gateway_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == GATEWAY_CONTAINER), {})


def gateway_running(pod: dict[str, Any]) -> bool:
    return "running" in (_gateway_status(pod).get("state") or {}) and not _gateway_ended(pod)


def _gateway_ended(pod: dict[str, Any]) -> bool:
    state = _gateway_status(pod).get("state") or {}
    return "terminated" in state or pod.get("status", {}).get("phase") in {"Succeeded", "Failed"}


def _gateway_started(pod: dict[str, Any]) -> bool:
    return gateway_running(pod) or _gateway_ended(pod)


def describe(pod: dict[str, Any] | None) -> str:
    """The pod's last state as Kubernetes says it: phase, the gateway container's state and reason."""
    if not pod:
        return "gone"
    status = pod.get("status", {})
    said = [f"phase {status.get('phase', 'unknown')}"]
    for name, detail in (_gateway_status(pod).get("state") or {}).items():
        reason = (detail or {}).get("reason") or ""
        message = (detail or {}).get("message") or ""
        said.append(f"container {name}" + (f" ({reason}{': ' + message if message else ''})" if reason else ""))
    if status.get("reason"):
        said.append(f"{status['reason']}: {status.get('message', '')}".rstrip(": "))
    return ", ".join(said)


def pod_target(pod: dict[str, Any]) -> str:
    """``IP:PORT`` of the gateway pod, for the agent's relay; refused unless the IP is a plain IPv4 address."""
    ip = str(pod.get("status", {}).get("podIP") or "")
    try:
        address = ipaddress.IPv4Address(ip)
    except ValueError:
        raise RuntimeUnavailableError(
            f"gateway pod {pod.get('metadata', {}).get('name')}: its IP {ip!r} is not an IPv4 address",
            hint="the agent's relay takes an IPv4 pod address; IPv6-only clusters are not supported yet",
        ) from None
    return f"{address}:{EGRESS_PORT}"


class _GatewayLogSource:
    """The gateway container's log, for :func:`~.logs.follow_pod_logs`."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        self.runtime = runtime

    def wait_started(self, pod: str) -> bool | None:
        found = self.runtime.watch(pod, self.runtime.watch_window_s, _gateway_started)
        if found is None:
            return False
        return True if found and _gateway_started(found) else None

    def open_log(self, pod: str, follow: bool) -> Any:
        return self.runtime.open_log(pod, follow, container=GATEWAY_CONTAINER)

    def pod_running(self, pod: str) -> bool:
        found = self.runtime.read_pod(pod)
        return found is not None and not _gateway_ended(found)


class KubernetesEgress(GatewayBeside):
    """The :class:`~hydra_sandbox.sandbox.egress.EgressPlacement` of the Kubernetes backend: a gateway pod
    per session (the lifecycle is :class:`~hydra_sandbox.sandbox.gateway_beside.GatewayBeside`)."""

    where = "beside an agent pod"

    def __init__(
        self,
        runtime: KubernetesRuntime,
        image: str,
        *,
        home: str,
        ready_deadline_s: float = READY_DEADLINE_S,
        timeout_s: int = GATEWAY_TIMEOUT_S,
    ) -> None:
        self._runtime = runtime
        self._pods = GatewayPods(runtime)
        self._image = image
        self._home = home
        self.ready_deadline_s = ready_deadline_s
        self._timeout_s = timeout_s

    def _labels(self, session_id: str) -> dict[str, str]:
        return {LABEL_HOME: self._home, LABEL_SESSION: session_id}

    async def _find_or_start(self, plan: EgressPlan, secrets: GatewaySecrets) -> str:
        name = gateway_pod_name(plan.session_id)
        if not await self._running(name):
            await self._pods.remove(plan.session_id)  # what a crashed or ended run left (pod, Secret, policy)
            spec = GatewayPodSpec(
                plan=plan, labels=self._labels(plan.session_id), image=self._image, timeout_s=self._timeout_s
            )
            await self._pods.create(spec, secrets)
        return name

    async def _agent_side(
        self, plan: EgressPlan, gateway: str, ready: asyncio.Future[None], follower: asyncio.Task[None]
    ) -> ActiveEgress:
        target = await self._wait_ready(gateway, ready, follower)
        wiring = agent_wiring(plan, "/run/hydra", delegate=False)
        env = {k: v for k, v in wiring.env.items() if k != "HYDRA_EGRESS_SOCKET"} | {TARGET_ENV: target}
        return ActiveEgress(
            network_mode=f"container:{gateway}",  # the runtime opens the agent pod's way to this pod only
            env=env,
            model_base_url=wiring.model_base_url,
            entrypoint=ENTRYPOINT,
        )

    async def remove(self, session_id: str) -> None:
        """The session's gateway pod, Secret and policy, and the agent's allowance to reach it (after
        the agent's pod is gone); what is already gone is not an error, ``hydra gc`` takes what this missed."""
        with contextlib.suppress(RuntimeUnavailableError):
            await self._pods.remove(session_id)
        with contextlib.suppress(RuntimeUnavailableError):
            await self._runtime.remove_network(gateway_policy_name(session_id))

    async def _running(self, name: str) -> bool:
        pod = await self._runtime.call(f"read pod {name}", self._runtime.read_pod, name)
        return pod is not None and gateway_running(pod) and not pod.get("metadata", {}).get("deletionTimestamp")

    async def _wait_ready(self, name: str, ready: asyncio.Future[None], follower: asyncio.Task[None]) -> str:
        """The pod's ``IP:PORT`` once it said it is ready; a clear error naming the pod and its last state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_deadline_s
        done, _ = await asyncio.wait(
            {ready, follower}, timeout=self.ready_deadline_s, return_when=asyncio.FIRST_COMPLETED
        )
        pod = await self._runtime.call(f"read pod {name}", self._runtime.read_pod, name)
        if ready in done and ready.exception() is None:
            while pod is not None and not pod.get("status", {}).get("podIP") and loop.time() < deadline:
                await asyncio.sleep(0.2)  # a pod that runs has its IP; this only covers the status lagging
                pod = await self._runtime.call(f"read pod {name}", self._runtime.read_pod, name)
            if pod is not None and gateway_running(pod) and pod.get("status", {}).get("podIP"):
                return pod_target(pod)
        how = "did not say it was ready" if ready not in done else "has no IP"
        if follower in done and not follower.cancelled() and follower.exception() is not None:
            how += f" (following its log failed: {follower.exception()})"
        elif follower in done:
            how = "ended before it was ready"
        raise RuntimeUnavailableError(
            f"the egress gateway pod {name} in namespace {self._runtime.ns} {how} within "
            f"{self.ready_deadline_s:.0f} s; its last state: {describe(pod)}",
            hint=f"`kubectl -n {self._runtime.ns} describe pod {name}` and `kubectl logs {name}`; "
            f"HYDRA_GATEWAY_IMAGE ({self._image}) must be pullable by the cluster and have Hydra installed",
        )

    async def _follow(self, name: str, ready: asyncio.Future[None], on_usage: UsageCallback | None) -> None:
        pending = b""
        async for _stream, chunk in follow_pod_logs(_GatewayLogSource(self._runtime), name):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                reason = await gateway_line(line, ready, on_usage)
                if reason:  # the budget is spent: no further model request may pass
                    log.warning("gateway pod %s deleted: %s", name, reason)
                    with contextlib.suppress(RuntimeUnavailableError):
                        await self._runtime.kill(name)
        if ready.done():
            log.warning("egress gateway pod %s ended while its agent runs", name)
