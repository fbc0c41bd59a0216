"""A whole run on the Kubernetes backend, through the orchestrator, against kmock's API server (the
test plays the kubelet: it moves the pods' status and serves their logs) with ``pods/exec`` served by
this machine's ``tar`` (:mod:`tests.pod_exec_kit`): the gateway pod, its policy and Secret are created,
the agent pod gets its workspace over exec before it starts, relays to the gateway pod's IP, its log is
followed, the change set comes back before the pod is deleted and the diff shows the agent's edit, the
gateway's usage line reaches the session's budget, and everything is deleted at the end; a server
shutdown leaves it all for the next server, which re-attaches. Every object created is schema-valid."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kubernetes_validate
import pytest

from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import NetworkPolicy, Policy
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_sandbox
from hydra_sandbox.sandbox.backends.kubernetes.egress import TARGET_ENV
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import gateway_pod_name, gateway_secret_name
from hydra_sandbox.sandbox.backends.kubernetes.manifests import MIN_KUBERNETES, READY_MARKER, WORKSPACE_SUBPATH
from hydra_sandbox.sandbox.budget import USAGE_EVENT
from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.kube_kit import NS, PODS, UidEmulator, runtime_for, until
from tests.pod_exec_kit import LocalPod

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

pytestmark = pytest.mark.kmock(cls=UidEmulator)


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


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("x = 1\n")
    return root


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


def sandbox_for(server: kmock.KubernetesEmulator, tmp_path: Path, pod: LocalPod) -> SandboxOrchestrator:
    return kubernetes_sandbox(settings(tmp_path), SecretMasker(), runtime=runtime_for(server), open_exec=pod.open_exec)


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


async def test_a_run_on_the_kubernetes_backend_goes_through_its_gateway_pod_and_brings_the_edit_home(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, workdir: Path
) -> None:
    volume = tmp_path / "pod-volume"
    pod, sink = LocalPod(volume), Sink()
    sandbox = sandbox_for(kmock, tmp_path, pod)
    running = asyncio.create_task(sandbox.run(request(workdir), sink, asyncio.Event()))
    node = Node(kmock, volume, running)
    await node.run_gateway()
    agent = await node.run_agent()
    await until(lambda: bool(sink.where(lambda d: "thread.started" in d.text or d.data.get("thread_id"))))
    await node.exit_agent(agent)
    result = await running

    assert result.status == "completed" and result.thread_id == "thread-k8s" and result.has_changes
    preview = await sandbox.diff(SID, request(workdir).policy)
    assert [(f.path, f.status) for f in preview.files] == [("app.py", "modified")] and "+x = 2" in preview.unified
    assert (workdir / "app.py").read_text() == "x = 1\n", "the operator's folder was written before apply"

    (agent_pod,) = [o for o in created(kmock, PODS_PLURAL) if o["metadata"]["name"] == agent]
    container = agent_pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[TARGET_ENV] == f"{GATEWAY_IP}:18080" and "HYDRA_EGRESS_SOCKET" not in env
    assert container["command"][0] == "hydra-agent-entry" and KEY not in json.dumps(agent_pod)
    assert [c for _p, c, _argv in pod.execs] == ["workspace-in", "workspace-out"]
    (secret,) = [o for o in created(kmock, "secrets") if o["metadata"]["name"] == gateway_secret_name(SID)]
    assert secret["stringData"]["model-key"] == KEY
    assert node.log_containers[0] == "gateway" and "agent" in node.log_containers

    usage = sink.where(lambda d: d.data.get("gateway") == USAGE_EVENT)
    assert [(d.data["session_tokens"], d.data["seq"]) for d in usage] == [(12, 0)]
    assert sink.where(lambda d: d.data.get("delegation") == "off") == []  # this policy asked for no children

    for plural in (PODS_PLURAL, "secrets", "networkpolicies"):
        for manifest in created(kmock, plural):
            kubernetes_validate.validate(manifest, MIN_KUBERNETES, strict=True)
    assert live_objects(kmock) == {("networkpolicies", "hydra-default-deny")}, "the session left objects behind"


async def test_a_server_shutdown_leaves_the_pods_and_the_next_server_re_attaches_and_finishes(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, workdir: Path
) -> None:
    volume = tmp_path / "pod-volume"
    pod = LocalPod(volume)
    first = sandbox_for(kmock, tmp_path, pod)
    running = asyncio.create_task(first.run(request(workdir), Sink(), asyncio.Event()))
    node = Node(kmock, volume, running)
    await node.run_gateway()
    agent = await node.run_agent()
    await until(lambda: sum(c == "agent" for c in node.log_containers) >= 1)
    running.cancel()  # the server shuts down
    with pytest.raises(asyncio.CancelledError):
        await running
    assert {GATEWAY, agent} <= {n for _r, n in live_objects(kmock)}, "a shutdown removed what the agent uses"

    second, sink = sandbox_for(kmock, tmp_path, pod), Sink()
    assert await second.live_sessions() == {SID}
    follow = asyncio.create_task(second.follow(request(workdir), sink, asyncio.Event(), 0))
    await until(lambda: bool(sink.where(lambda d: d.data.get("gateway") == USAGE_EVENT)))
    await node.exit_agent(agent)
    result = await follow
    assert result.status == "completed" and result.has_changes
    assert [f.path for f in (await second.diff(SID, request(workdir).policy)).files] == ["app.py"]
    gateway_posts = [o for o in created(kmock, PODS_PLURAL) if o["metadata"]["name"] == GATEWAY]
    assert len(gateway_posts) == 1, "the re-attached server made a second gateway pod"
    assert live_objects(kmock) == {("networkpolicies", "hydra-default-deny")}
