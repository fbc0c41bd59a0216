"""The Kubernetes backend's test kit: agent specs, a runtime on kmock's API server emulator, and the
test's stand-in for the kubelet (it moves a pod's status and serves its log)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml
from kubernetes import client as k8s

from hydra_sandbox.sandbox.backends.kubernetes.manifests import PodOptions
from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_PARENT, LABEL_ROLE, LABEL_SESSION, ContainerSpec

Cluster = tuple[KubernetesRuntime, "Kubelet"]

NS = "hydra-agents"
HOME = "0123456789abcdef"
PODS = f"/api/v1/namespaces/{NS}/pods"
POLICIES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"


def labels(session: str, home: str = HOME) -> dict[str, str]:
    return {LABEL_HOME: home, LABEL_SESSION: session, LABEL_PARENT: "", LABEL_ROLE: "agent"}


def agent(session: str = "s-0a1b2c3d4e5f", *, home: str = HOME, gateway: bool = False) -> ContainerSpec:
    return ContainerSpec(
        image="hydra-agent:codex-0.169.0",
        argv=["codex", "exec", "--json", "hi"],
        user="1000:1000",
        labels=labels(session, home),
        name=f"hydra-{session}-0",
        network_mode=f"container:hydra-{session}-gateway" if gateway else "none",
    )


def runtime_for(server: kmock.KubernetesEmulator) -> KubernetesRuntime:
    def connect() -> k8s.ApiClient:
        configuration = k8s.Configuration()
        configuration.host = str(server.url).rstrip("/")
        return k8s.ApiClient(configuration)

    return KubernetesRuntime(PodOptions(namespace=NS), connect, watch_window_s=2)


class Kubelet:
    """The test's stand-in for the node: moves a pod's status (the mock broadcasts it to watches) and
    serves its log, a list of ``(timestamp, line)``; ``cut`` ends the first follow stream early."""

    def __init__(self, server: kmock.KubernetesEmulator) -> None:
        self.server = server
        self.lines: dict[str, list[tuple[str, bytes]]] = {}
        self.log_requests: list[dict[str, str]] = []

    async def set_state(self, pod: str, state: dict[str, Any], phase: str = "Running") -> None:
        status = {"phase": phase, "containerStatuses": [{"name": "agent", "state": state}]}
        async with aiohttp.ClientSession() as http:
            response = await http.patch(f"{str(self.server.url).rstrip('/')}{PODS}/{pod}", json={"status": status})
            assert response.status == 200

    async def run(self, pod: str) -> None:
        await self.set_state(pod, {"running": {"startedAt": "2026-01-01T00:00:00Z"}})

    async def exit(self, pod: str, code: int, reason: str = "Completed") -> None:
        terminated = {"exitCode": code, "reason": reason, "finishedAt": "2026-01-01T00:01:00Z"}
        await self.set_state(pod, {"terminated": terminated}, phase="Succeeded" if code == 0 else "Failed")

    def serve_log(self, pod: str, cut_first_after: int | None = None) -> None:
        def respond(request: Any) -> bytes:
            self.log_requests.append(dict(request.params))
            lines = self.lines.get(pod, [])
            if cut_first_after is not None and len(self.log_requests) == 1:
                lines = lines[:cut_first_after]  # the follow stream drops mid-log
            return b"".join(f"{stamp} ".encode() + line for stamp, line in lines)

        self.server[f"get {PODS}/{pod}/log"] << respond


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mock", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "u"}}],
        "current-context": "mock",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def until(condition: Callable[[], bool], deadline_s: float = 30) -> None:
    """Poll ``condition`` until it holds; fail after ``deadline_s``."""
    async with asyncio.timeout(deadline_s):
        while not condition():
            await asyncio.sleep(0.01)


def paths(server: kmock.KubernetesEmulator) -> list[tuple[str, str]]:
    return [(str(r.method).rpartition(".")[2].upper(), r.url.path) for r in server]


async def collect(stream: AsyncIterator[tuple[str, bytes]]) -> bytes:
    return b"".join([chunk async for _stream, chunk in stream])


class UidEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what the API server adds to every object it creates: ``metadata.uid``
    (owner references name it). Use with ``@pytest.mark.kmock(cls=UidEmulator)``."""

    async def _handle(self, request: Any) -> Any:
        if str(request.action).rpartition(".")[2].upper() == "CREATE" and isinstance(request.data, dict):
            request.data.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
        return await super()._handle(request)
