"""Whether the cluster serves the agent-sandbox CRDs the warm pool needs, asked through API discovery
(``GET /apis/<group>/<version>``, which every authenticated account may read), for ``hydra doctor``."""

from __future__ import annotations

import json

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime, raw_call
from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import API_GROUP, API_VERSION, CRD_RESOURCES


def _served(runtime: KubernetesRuntime) -> set[str]:
    """The resources the cluster serves in the warm pool's group and version (none when it serves neither)."""
    api = k8s.CustomObjectsApi(runtime.api_client)
    try:
        response = raw_call(api.get_api_resources, API_GROUP, API_VERSION)
    except ApiException as exc:
        if exc.status == 404:
            return set()
        raise
    try:
        found = json.loads(response.data)
    finally:
        response.release_conn()
    return {str(r.get("name")) for r in found.get("resources") or [] if isinstance(r, dict)}


async def missing_crd_resources(runtime: KubernetesRuntime) -> list[str]:
    """Which of :data:`~.warm_pool.CRD_RESOURCES` the cluster does not serve, as ``resource.group/version``."""
    served = await runtime.call(f"discover {API_GROUP}/{API_VERSION}", _served, runtime)
    return [f"{r}.{API_GROUP}/{API_VERSION}" for r in CRD_RESOURCES if r not in served]
