"""A session's gateway pod on the cluster: created confined, its key delivered through a Secret the pod
owns, and removed with everything it had.

Order of :meth:`GatewayPods.create`: the gateway's own NetworkPolicy first (the pod is never unconfined),
then the Pod, then the Secret with an ``ownerReference`` to the pod's uid (the kubelet holds the container
until the Secret exists; Kubernetes' garbage collector deletes the Secret with the pod, so a Hydra that
went away leaves no key behind). A Secret that cannot be created removes the pod again. The agent pod's
allowance to reach this pod is made by :meth:`~.runtime.KubernetesRuntime.create` with the agent's pod.

``hydra gc`` needs nothing new: the gateway pod and its policy carry the session's labels, so the
runtime's ``list_containers`` / ``list_networks`` find them, and the Secret goes with its pod.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import (
    GatewayPodSpec,
    gateway_own_policy,
    gateway_own_policy_name,
    gateway_pod_manifest,
    gateway_pod_name,
    gateway_secret,
    gateway_secret_name,
)
from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime, raw_call
from hydra_sandbox.sandbox.egress import GatewaySecrets


class GatewayPods:
    """Creates and removes sessions' gateway pods through ``runtime``'s client and thread limit."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        self.runtime = runtime

    async def create(self, spec: GatewayPodSpec, secrets: GatewaySecrets) -> str:
        """The session's gateway pod, confined and keyed; its name."""
        options = self.runtime.options
        pod = gateway_pod_manifest(spec, secrets, options)  # refuses a plan without a gateway, before any request
        policy = gateway_own_policy(spec.plan, spec.labels, options, delegate=spec.delegate)
        name = str(pod["metadata"]["name"])
        needs_secret = secrets.model_key is not None or (spec.delegate and secrets.mcp_token is not None)

        def _create() -> None:
            self.runtime.create_ignoring_conflict(self.runtime.networking.create_namespaced_network_policy, policy)
            response = raw_call(self.runtime.core.create_namespaced_pod, self.runtime.ns, pod)
            try:
                created: dict[str, Any] = json.loads(response.data)
            finally:
                response.release_conn()
            if not needs_secret:
                return
            try:
                secret = gateway_secret(spec.plan, spec.labels, secrets, created, options)
                raw_call(self.runtime.core.create_namespaced_secret, self.runtime.ns, secret).release_conn()
            except BaseException:
                self.runtime.delete_pod(name, 0)  # a gateway without its key is no gateway: fail closed
                raise

        await self.runtime.call(f"create gateway pod {name}", _create)
        return name

    async def remove(self, session_id: str) -> None:
        """The session's gateway pod, its Secret and its policy; what is already gone is not an error."""
        name = gateway_pod_name(session_id)

        def _remove() -> None:
            self.runtime.delete_pod(name, 0)
            for delete, obj in (
                (self.runtime.core.delete_namespaced_secret, gateway_secret_name(session_id)),
                (self.runtime.networking.delete_namespaced_network_policy, gateway_own_policy_name(session_id)),
            ):
                try:
                    raw_call(delete, obj, self.runtime.ns).release_conn()
                except ApiException as exc:
                    if exc.status != 404:
                        raise

        await self.runtime.call(f"remove gateway pod {name}", _remove)
