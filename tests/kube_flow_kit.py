"""The whole-run harness of the Kubernetes backend against kmock: the test's kubelet for a session's
gateway and agent pods, the settings and request of a run, and what the mock API server holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from hydra_sandbox.events import EventDraft
from hydra_sandbox.policy import NetworkPolicy, Policy
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import gateway_pod_name
from hydra_sandbox.sandbox.backends.kubernetes.manifests import READY_MARKER, WORKSPACE_SUBPATH
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.kube_kit import NS, PODS, until

SID = "s-0a1b2c3d4e5f"
KEY = "sk-flow-0123456789abcdef0123456789"
GATEWAY_IP = "10.244.3.7"
GATEWAY = gateway_pod_name(SID)
PODS_PLURAL = "pods"
USAGE = {"input_tokens": 7, "output_tokens": 5, "total_tokens": 12, "seq": 0}
CODEX = [
    b'{"type":"thread.started","thread_id":"thread-k8s"}\n',
    b'{"type":"turn.completed","usage":{"input_tokens":7,"output_tokens":5}}\n',
]


class Node:
    """The test's kubelet for the session's two pods: the gateway runs, gets its IP and prints its
    lines; the agent runs once the workspace marker is in (the init container's condition), edits
    a file, prints Codex's lines and exits when told."""

    def __init__(self, server: kmock.KubernetesEmulator, volume: Path, run: asyncio.Task[Any]) -> None:
        self.server, self.volume, self.run = server, volume, run
        self.logs: dict[str, list[tuple[str, bytes]]] = {}
        self.log_containers: list[str] = []

    async def until(self, condition: Callable[[], bool]) -> None:
        """``condition``, or the run's own error when it ended first."""
        await until(lambda: condition() or self.run.done())
        if self.run.done() and not condition():
            self.run.result()
            pytest.fail("the run ended before the pods got that far")

    def live(self, name: str) -> bool:
        return (PODS_PLURAL, name) in live_objects(self.server)

    def agent_pod(self) -> str | None:
        return next((n for r, n in live_objects(self.server) if r == PODS_PLURAL and n != GATEWAY), None)

    async def patch(self, name: str, status: dict[str, Any]) -> None:
        async with aiohttp.ClientSession() as http:
            url = f"{str(self.server.url).rstrip('/')}{PODS}/{name}"
            assert (await http.patch(url, json={"status": status})).status == 200

    def serve_log(self, name: str) -> None:
        def respond(request: Any) -> bytes:
            self.log_containers.append(str(request.params.get("container")))
            return b"".join(f"{stamp} ".encode() + line for stamp, line in self.logs.get(name, []))

        self.server[f"get {PODS}/{name}/log"] << respond

    async def run_gateway(self) -> None:
        await self.until(lambda: self.live(GATEWAY))
        ready = json.dumps({"ready": True}).encode() + b"\n"
        usage = json.dumps({"usage": USAGE}).encode() + b"\n"
        self.logs[GATEWAY] = [("2026-01-01T00:00:01Z", ready), ("2026-01-01T00:00:02Z", usage)]
        self.serve_log(GATEWAY)
        running = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        status = {"phase": "Running", "podIP": GATEWAY_IP, "containerStatuses": [{"name": "gateway", "state": running}]}
        await self.patch(GATEWAY, status)

    async def run_agent(self) -> str:
        await self.until(lambda: self.agent_pod() is not None and (self.volume / READY_MARKER).exists())
        name = self.agent_pod()
        assert name is not None
        (self.volume / WORKSPACE_SUBPATH / "app.py").write_text("x = 2  # the agent's edit\n")
        self.logs[name] = [(f"2026-01-01T00:01:0{i}Z", line) for i, line in enumerate(CODEX)]
        self.serve_log(name)
        running = {"running": {"startedAt": "2026-01-01T00:01:00Z"}}
        await self.patch(name, {"phase": "Running", "containerStatuses": [{"name": "agent", "state": running}]})
        return name

    async def exit_agent(self, name: str) -> None:
        done = {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-01-01T00:02:00Z"}}
        await self.patch(name, {"phase": "Succeeded", "containerStatuses": [{"name": "agent", "state": done}]})


def settings(tmp_path: Path) -> HydraSettings:
    return load_settings(
        data_home=tmp_path / "data",
        backend="kubernetes",
        kubernetes_namespace=NS,
        agent_image="hydra-agent:codex-0.169.0",
        gateway_image="hydra-server:test",
        model_base_url="http://model.test:8080/v1",
        openai_api_key=KEY,
    )


def request(workdir: Path) -> RunRequest:
    policy = Policy(name="t", network=NetworkPolicy(mode="model-only"))
    return RunRequest(session_id=SID, profile_id="p", policy=policy, prompt="fix it", working_dir=workdir, model="m")


def live_objects(server: kmock.KubernetesEmulator) -> set[tuple[str, str]]:
    """(plural, name) of every object not deleted."""
    return {(key[0].plural, key[2]) for key in list(server.objects) if not server.objects[key].deleted}


def created(server: kmock.KubernetesEmulator, plural: str) -> list[dict[str, Any]]:
    """Each object of ``plural`` as it was created (deleted ones too)."""
    versions = [server.objects[key].history[0] for key in list(server.objects) if key[0].plural == plural]
    return [json.loads(json.dumps(version, default=dict)) for version in versions]


class Sink:
    def __init__(self) -> None:
        self.drafts: list[EventDraft] = []

    async def __call__(self, draft: EventDraft) -> None:
        self.drafts.append(draft)

    def where(self, check: Callable[[EventDraft], bool]) -> list[EventDraft]:
        return [d for d in self.drafts if check(d)]
