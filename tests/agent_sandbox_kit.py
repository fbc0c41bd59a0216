"""The agent-sandbox CRDs in tests: their schemas (upstream fixtures, closed to unknown fields) and the
test's stand-in for the agent-sandbox controller and kubelet on kmock's API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml
from kubernetes import client as k8s

from hydra_sandbox.sandbox.backends.kubernetes.manifests import WORKSPACE_IN_CONTAINER_NAME, PodOptions
from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import (
    API_GROUP,
    API_VERSION,
    POD_NAME_ANNOTATION,
    SANDBOX_GROUP,
    WarmPoolOptions,
    sandbox_template,
)
from tests.kube_kit import HOME, NS, PODS, until

FIXTURES = Path(__file__).parent / "fixtures" / "agent_sandbox"
CLAIMS = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NS}/sandboxclaims"
SANDBOXES = f"/apis/{SANDBOX_GROUP}/{API_VERSION}/namespaces/{NS}/sandboxes"
IMAGE = "hydra-agent:codex-0.169.0"
POOL = WarmPoolOptions(name="hydra-pool", image=IMAGE, home=HOME)
OPTIONS = PodOptions(namespace=NS)


def closed(schema: Any) -> Any:
    """The CRD schema with every object closed to fields it does not name: the API server would prune an
    unknown field silently, so for Hydra a misspelt field is an error."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    return [closed(v) for v in schema] if isinstance(schema, list) else schema


def crd_schema(resource: str) -> dict[str, Any]:
    """The ``v1beta1`` schema of ``resource`` (e.g. ``sandboxclaims``), closed."""
    schema: dict[str, Any] = closed(yaml.safe_load((FIXTURES / f"{resource}.v1beta1.schema.yaml").read_text()))
    return schema


def client_of(server: kmock.KubernetesEmulator) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = str(server.url).rstrip("/")
    return k8s.ApiClient(configuration)


class Controller:
    """The test's agent-sandbox controller and kubelet: binds a claim to a Sandbox it controls, whose pod
    (of the pool's template, controlled by the Sandbox) waits in its init container."""

    def __init__(self, server: kmock.KubernetesEmulator) -> None:
        self.server = server
        self.url = str(server.url).rstrip("/")

    def claim(self, name: str) -> dict[str, Any] | None:
        for key in list(self.server.objects):
            if key[0].plural == "sandboxclaims" and key[2] == name and not self.server.objects[key].deleted:
                return json.loads(json.dumps(self.server.objects[key].history[-1], default=dict))
        return None

    async def call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            response = await http.request(method, f"{self.url}{path}", json=body)
            assert response.status in {200, 201}, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def bind(
        self,
        claim: str,
        sandbox: str,
        *,
        pod: str | None = None,
        template: dict[str, Any] | None = None,
        claim_uid: str | None = None,
        sandbox_uid: str | None = None,
    ) -> None:
        """Bind ``claim`` to Sandbox ``sandbox`` and its pod (``pod``: a name of its own, recorded in the
        Sandbox's pod-name annotation); ``claim_uid`` / ``sandbox_uid`` make the owner references name another."""
        await until(lambda: self.claim(claim) is not None)
        found = self.claim(claim)
        assert found is not None
        pod_name = pod or sandbox
        pod_template = (template or sandbox_template(POOL, OPTIONS))["spec"]["podTemplate"]
        claim_ref = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "SandboxClaim", "name": claim,
                     "uid": claim_uid or found["metadata"]["uid"], "controller": True}  # fmt: skip
        annotations = {POD_NAME_ANNOTATION: pod_name} if pod else {}
        made = await self.call(
            "POST",
            SANDBOXES,
            {"apiVersion": f"{SANDBOX_GROUP}/{API_VERSION}", "kind": "Sandbox",
             "metadata": {"name": sandbox, "ownerReferences": [claim_ref], "annotations": annotations},
             "spec": {"podTemplate": pod_template}},
        )  # fmt: skip
        sandbox_ref = {"apiVersion": f"{SANDBOX_GROUP}/{API_VERSION}", "kind": "Sandbox", "name": sandbox,
                       "uid": sandbox_uid or made["metadata"]["uid"], "controller": True}  # fmt: skip
        metadata = {"name": pod_name, "namespace": NS, "labels": pod_template["metadata"]["labels"],
                    "ownerReferences": [sandbox_ref]}  # fmt: skip
        await self.call("POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                                       "spec": pod_template["spec"]})  # fmt: skip
        waiting = [{"name": WORKSPACE_IN_CONTAINER_NAME, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]
        await self.call(
            "PATCH", f"{PODS}/{pod_name}", {"status": {"phase": "Pending", "initContainerStatuses": waiting}}
        )
        ready = {"type": "Ready", "status": "True", "reason": "DependenciesReady"}
        await self.call("PATCH", f"{CLAIMS}/{claim}", {"status": {"sandbox": {"name": sandbox}, "conditions": [ready]}})

    async def refuse(self, claim: str) -> None:
        await until(lambda: self.claim(claim) is not None)
        stuck = {"type": "Ready", "status": "False", "reason": "WarmPoolEmpty", "message": "no sandbox to adopt"}
        await self.call("PATCH", f"{CLAIMS}/{claim}", {"status": {"conditions": [stuck]}})
