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
from pathlib import Path

import kmock
import kubernetes_validate
import pytest

from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_sandbox
from hydra_sandbox.sandbox.backends.kubernetes.egress import TARGET_ENV
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import gateway_secret_name
from hydra_sandbox.sandbox.backends.kubernetes.manifests import MIN_KUBERNETES
from hydra_sandbox.sandbox.budget import USAGE_EVENT
from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator
from tests.kube_flow_kit import (
    GATEWAY,
    GATEWAY_IP,
    KEY,
    PODS_PLURAL,
    SID,
    Node,
    Sink,
    created,
    live_objects,
    request,
    settings,
)
from tests.kube_kit import UidEmulator, runtime_for, until
from tests.pod_exec_kit import LocalPod

pytestmark = pytest.mark.kmock(cls=UidEmulator)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("x = 1\n")
    return root


def sandbox_for(server: kmock.KubernetesEmulator, tmp_path: Path, pod: LocalPod) -> SandboxOrchestrator:
    return kubernetes_sandbox(settings(tmp_path), SecretMasker(), runtime=runtime_for(server), open_exec=pod.open_exec)


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
