"""What an operator and the supervisor do with the Kubernetes runtime, against kmock's mock API server:
runs supervised to completion and to a timeout, ``hydra gc`` (the function and the CLI through a
kubeconfig), and ``hydra doctor``'s check of the cluster."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import kmock
import pytest
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.doctor import _backend_checks
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.sandbox.backends.kubernetes import permissions
from hydra_sandbox.sandbox.backends.kubernetes.manifests import DEFAULT_DENY_POLICY, gateway_policy_name
from hydra_sandbox.sandbox.backends.kubernetes.permissions import NEEDED
from hydra_sandbox.sandbox.spec import LABEL_HOME, home_label
from hydra_sandbox.sandbox.supervisor import supervise
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.kube_kit import HOME, NS, PODS, Cluster, Kubelet, agent, runtime_for, write_kubeconfig


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> AsyncIterator[Cluster]:
    yield runtime_for(kmock), Kubelet(kmock)


async def test_gc_removes_orphaned_pods_and_policies_of_this_hydra_only(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    await runtime.create(agent("s-aaaaaaaaaaaa", gateway=True))
    await runtime.create(agent("s-bbbbbbbbbbbb", gateway=True))
    await runtime.create(agent("s-cccccccccccc", home="fedcba9876543210"))
    report = await collect_garbage(runtime, {"s-bbbbbbbbbbbb"}, home=HOME)
    assert report.containers == ["hydra-s-aaaaaaaaaaaa-0"]
    assert report.networks == [gateway_policy_name("s-aaaaaaaaaaaa")]
    left = {name for (_resource, _ns, name) in kmock.objects if not kmock.objects[_resource, _ns, name].deleted}
    assert left == {
        DEFAULT_DENY_POLICY,
        "hydra-s-bbbbbbbbbbbb-0",
        gateway_policy_name("s-bbbbbbbbbbbb"),
        "hydra-s-cccccccccccc-0",
    }


async def test_supervise_runs_a_pod_to_completion_through_the_runtime(
    cluster: Cluster,
) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    kubelet.lines[pod] = [("2026-01-01T00:00:01Z", b'{"type":"thread.started"}\n')]
    kubelet.serve_log(pod)
    await kubelet.exit(pod, 0)
    seen: list[bytes] = []

    async def on_output(_stream: str, chunk: bytes) -> None:
        seen.append(chunk)

    outcome = await supervise(runtime, pod, timeout_s=60, max_output_bytes=1 << 20, on_output=on_output)
    assert (outcome.status, outcome.exit_code) == ("completed", 0)
    assert b"".join(seen) == b'{"type":"thread.started"}\n'


async def test_supervise_times_out_a_pod_by_deleting_it_and_still_reports(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    await kubelet.run(pod)

    async def on_output(_stream: str, _chunk: bytes) -> None:
        raise AssertionError("a pod that prints nothing has no output")

    kubelet.serve_log(pod)
    outcome = await supervise(runtime, pod, timeout_s=1, max_output_bytes=1024, on_output=on_output, grace_s=3)
    assert (outcome.status, outcome.failure) == ("timed_out", "timeout")
    assert kmock[f"delete {PODS}/{pod}"][0].params.get("gracePeriodSeconds") == "3"
    # A follow stream that keeps ending empty is re-read after a pause, not in a tight loop (3 requests
    # here with the pause, 64 without it); the bound leaves room for a slow machine.
    assert len(kubelet.log_requests) <= 15


async def test_hydra_gc_removes_a_dead_sessions_pod_through_a_kubeconfig(
    kmock: kmock.KubernetesEmulator,
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole chain an operator uses: settings, the kubeconfig file, open_runtimes, the CLI."""
    runtime, _ = cluster
    home = home_label(tmp_path)
    await runtime.create(agent("s-aaaaaaaaaaaa", home=home))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    for name, value in {
        "HYDRA_DATA_HOME": str(tmp_path),
        "HYDRA_BACKEND": "kubernetes",
        "HYDRA_KUBERNETES_NAMESPACE": NS,
        "HYDRA_KUBERNETES_KUBECONFIG": str(kubeconfig),
    }.items():
        monkeypatch.setenv(name, value)
    result = await asyncio.to_thread(CliRunner().invoke, app, ["gc"])  # the CLI runs its own event loop
    assert result.exit_code == 0, result.output
    assert "removed 1 container(s), 0 volume(s), 0 network(s) on namespace hydra-agents" in result.output
    assert await runtime.list_containers({LABEL_HOME: home}) == []


class Authorization:
    """Stands in for the cluster's SelfSubjectAccessReview API (the mock server stores every review under
    one empty name, so a second one conflicts): allowed unless (verb, resource[/sub]) is refused."""

    asked: ClassVar[list[Any]] = []
    refused: ClassVar[set[tuple[str, str]]] = set()

    def __init__(self, _client: object) -> None:
        pass

    def create_self_subject_access_review(self, review: Any) -> Any:
        attributes = review.spec.resource_attributes
        self.asked.append(attributes)
        resource = "/".join(filter(None, (attributes.resource, attributes.subresource)))
        allowed = (attributes.verb, resource) not in self.refused
        return SimpleNamespace(spec=review.spec, status=SimpleNamespace(allowed=allowed))


async def doctor_settings(kmock: kmock.KubernetesEmulator, cluster: Cluster, tmp_path: Path) -> HydraSettings:
    """Settings of the Kubernetes backend on the mock cluster (through a kubeconfig, as an operator has
    it), whose namespace holds one agent pod."""
    runtime, _ = cluster
    await runtime.create(agent())
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    return load_settings(
        data_home=tmp_path, backend="kubernetes", kubernetes_namespace=NS, kubernetes_kubeconfig=kubeconfig
    )


@pytest.fixture
def authorization(monkeypatch: pytest.MonkeyPatch) -> type[Authorization]:
    monkeypatch.setattr(Authorization, "asked", [])
    monkeypatch.setattr(Authorization, "refused", set())
    monkeypatch.setattr(permissions.k8s, "AuthorizationV1Api", Authorization)
    return Authorization


async def test_doctor_names_each_right_the_cluster_refuses_hydras_account(
    kmock: kmock.KubernetesEmulator, cluster: Cluster, tmp_path: Path, authorization: type[Authorization]
) -> None:
    settings = await doctor_settings(kmock, cluster, tmp_path)
    authorization.refused = {("create", "pods/exec"), ("delete", "secrets")}
    [check] = await asyncio.to_thread(_backend_checks, settings)
    assert not check.ok
    assert check.detail == f"namespace {NS}: reachable, but Hydra's account may not create pods/exec, delete secrets"
    assert check.fix is not None and "docs/kubernetes.md" in check.fix


async def test_doctor_checks_the_kubernetes_backends_cluster_and_namespace(
    kmock: kmock.KubernetesEmulator, cluster: Cluster, tmp_path: Path, authorization: type[Authorization]
) -> None:
    settings = await doctor_settings(kmock, cluster, tmp_path)
    [check] = await asyncio.to_thread(_backend_checks, settings)
    assert (check.name, check.ok) == ("kubernetes", True)
    assert check.detail == f"namespace {NS}: reachable, 1 pod(s) of Hydra's, every right of the Role granted"
    assert {a.namespace for a in authorization.asked} == {NS} and len(authorization.asked) == len(NEEDED)
    with socket.socket() as bound:  # nothing listens there
        bound.bind(("127.0.0.1", 0))
        unreachable = write_kubeconfig(tmp_path / "gone", f"http://127.0.0.1:{bound.getsockname()[1]}")
        [check] = await asyncio.to_thread(
            _backend_checks, settings.model_copy(update={"kubernetes_kubeconfig": unreachable})
        )
    assert not check.ok and "cannot reach the Kubernetes API server" in check.detail
    assert check.fix is not None and "kubeconfig" in check.fix
    assert _backend_checks(settings.model_copy(update={"backend": "docker"})) == []
