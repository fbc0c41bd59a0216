"""The Kubernetes runtime's request sequence against a mock API server (kmock's KubernetesEmulator, on a
loopback port the test starts): create with its NetworkPolicies, watch to the exit code, follow the
timestamped log and resume it without loss or repeats, stop/kill/remove as deletes, re-attach by labels
from a new runtime (a restarted Hydra). The test plays the kubelet (tests/kube_kit.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator

import kmock
import pytest
from kubernetes import client as k8s

from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError, UnsafeSpecError
from hydra_sandbox.sandbox.backends.kubernetes.manifests import DEFAULT_DENY_POLICY, PodOptions, gateway_policy_name
from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, LABEL_SESSION
from tests.kube_kit import (
    HOME,
    NS,
    PODS,
    POLICIES,
    Cluster,
    Kubelet,
    agent,
    collect,
    labels,
    paths,
    runtime_for,
    until,
)


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> AsyncIterator[Cluster]:
    yield runtime_for(kmock), Kubelet(kmock)


def test_runtime_implements_the_container_runtime_seam(kmock: kmock.KubernetesEmulator) -> None:
    assert isinstance(runtime_for(kmock), ContainerRuntime)


async def test_create_sets_up_the_default_deny_policy_before_the_pod(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    pod = await runtime.create(agent())
    await runtime.start(pod)
    assert pod == "hydra-s-0a1b2c3d4e5f-0"
    assert paths(kmock)[:2] == [("POST", POLICIES), ("POST", PODS)]
    created = kmock[f"post {PODS}"][0].data
    assert created["spec"]["automountServiceAccountToken"] is False
    assert kmock[f"post {POLICIES}"][0].data["metadata"]["name"] == DEFAULT_DENY_POLICY
    await runtime.create(agent("s-111111111111"))
    assert len(kmock[f"post {POLICIES}"]) == 1  # once per runtime: no gateway, no allowance


async def test_spec_with_a_gateway_gets_its_sessions_allowance_too(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    await runtime.create(agent(gateway=True))
    names = [r.data["metadata"]["name"] for r in kmock[f"post {POLICIES}"]]
    assert names == [DEFAULT_DENY_POLICY, gateway_policy_name("s-0a1b2c3d4e5f")]
    assert [n.name for n in await runtime.list_networks({LABEL_HOME: HOME})] == [names[1]]


async def test_unhardened_spec_is_refused_before_any_request(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    with pytest.raises(UnsafeSpecError, match="privileged"):
        await runtime.create(agent().model_copy(update={"privileged": True}))
    assert paths(kmock) == []


async def test_wait_watches_the_pod_until_its_container_exits(cluster: Cluster) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    waiting = asyncio.create_task(runtime.wait(pod, timeout_s=60))
    await kubelet.run(pod)
    await kubelet.exit(pod, 3, reason="Error")
    assert await waiting == 3
    info = await runtime.inspect(pod)
    assert (info.status, info.exit_code, info.oom_killed) == ("exited", 3, False)


async def test_wait_gives_up_after_its_timeout(cluster: Cluster) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    await kubelet.run(pod)
    assert await runtime.wait(pod, timeout_s=1) is None


async def test_oom_kill_is_named(cluster: Cluster) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    await kubelet.exit(pod, 137, reason="OOMKilled")
    assert (await runtime.inspect(pod)).oom_killed is True


async def test_log_is_followed_with_timestamps_and_resumed_without_loss_or_repeat(
    cluster: Cluster,
) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    same = "2026-01-01T00:00:01.000000002Z"  # two lines may carry one timestamp: both kept, once each
    kubelet.lines[pod] = [
        ("2026-01-01T00:00:01.000000001Z", b'{"type":"a"}\n'),
        (same, b"two\n"),
        (same, b"three\n"),
        ("2026-01-01T00:00:02Z", b"four\n"),
        ("2026-01-01T00:00:03Z", b"last, unterminated"),
    ]
    kubelet.serve_log(pod, cut_first_after=2)
    await kubelet.run(pod)

    async def end_when_resumed() -> None:  # the kubelet ends the pod once Hydra reads the log again
        await until(lambda: len(kubelet.log_requests) >= 2)
        await kubelet.exit(pod, 0)

    ender = asyncio.create_task(end_when_resumed())
    output = await asyncio.wait_for(collect(runtime.stream_logs(pod)), 60)
    await ender
    assert output == b'{"type":"a"}\ntwo\nthree\nfour\nlast, unterminated'
    assert all(r.get("timestamps") == "true" and r.get("container") == "agent" for r in kubelet.log_requests)
    assert kubelet.log_requests[0].get("follow") == "true"


async def test_log_waits_for_the_container_to_start(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    kubelet.lines[pod] = [("2026-01-01T00:00:01Z", b"hello\n")]
    kubelet.serve_log(pod)
    await kubelet.set_state(pod, {"waiting": {"reason": "ContainerCreating"}}, phase="Pending")
    reading = asyncio.create_task(collect(runtime.stream_logs(pod)))
    await until(lambda: any(r.params.get("watch") == "true" for r in kmock[f"get {PODS}"]))
    assert not kubelet.log_requests  # nothing asked of a container that has no log yet
    await kubelet.exit(pod, 0)
    assert await asyncio.wait_for(reading, 60) == b"hello\n"


async def test_log_of_a_pod_deleted_meanwhile_ends_quietly(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    pod = await runtime.create(agent())
    reading = asyncio.create_task(collect(runtime.stream_logs(pod)))
    await until(lambda: any(r.params.get("watch") == "true" for r in kmock[f"get {PODS}"]))
    await runtime.kill(pod)
    assert await asyncio.wait_for(reading, 60) == b""


async def test_a_follower_that_goes_away_stops_watching_a_pod_that_never_starts(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    await kubelet.set_state(pod, {"waiting": {"reason": "ImagePullBackOff"}}, phase="Pending")
    assert (await runtime.inspect(pod)).error == "ImagePullBackOff"
    reading = asyncio.create_task(collect(runtime.stream_logs(pod)))
    await until(lambda: any(r.params.get("watch") == "true" for r in kmock[f"get {PODS}"]))
    reading.cancel()
    await until(lambda: not [t for t in threading.enumerate() if t.name == f"logs-{pod}"])


async def test_stop_deletes_with_the_grace_period_and_kill_with_none(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, kubelet = cluster
    first, second = await runtime.create(agent()), await runtime.create(agent("s-111111111111"))
    await kubelet.run(first)
    await runtime.inspect(first)
    await runtime.stop(first, grace_s=7)
    await runtime.kill(second)
    deletes = kmock[f"delete {PODS}/{first}"], kmock[f"delete {PODS}/{second}"]
    assert [d[0].params.get("gracePeriodSeconds") for d in deletes] == ["7", "0"]
    assert (await runtime.inspect(first)).status == "removed"  # the last state seen stays readable
    await runtime.stop(first)  # gone: already stopped, not an error


async def test_remove_of_a_pod_already_gone_is_not_an_error(cluster: Cluster) -> None:
    runtime, _ = cluster
    await runtime.remove("hydra-s-999999999999-0")
    with pytest.raises(RuntimeUnavailableError, match="hydra-s-999999999999-0 not found in namespace hydra-agents"):
        await runtime.inspect("hydra-s-999999999999-0")


async def test_restarted_hydra_finds_its_pod_by_labels_and_replays_its_log(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, kubelet = cluster
    pod = await runtime.create(agent())
    await kubelet.run(pod)
    kubelet.lines[pod] = [("2026-01-01T00:00:01Z", b"one\n"), ("2026-01-01T00:00:02Z", b"two\n")]
    kubelet.serve_log(pod)
    restarted = runtime_for(kmock)  # a new process: nothing remembered
    [found] = await restarted.list_containers({LABEL_SESSION: "s-0a1b2c3d4e5f", LABEL_ROLE: "agent"})
    assert (found.id, found.status, found.labels) == (pod, "running", labels("s-0a1b2c3d4e5f"))
    await kubelet.exit(pod, 0)
    assert await asyncio.wait_for(collect(restarted.stream_logs(found.id)), 60) == b"one\ntwo\n"
    assert await restarted.wait(found.id, timeout_s=30) == 0


async def test_listing_filters_by_labels_on_hydras_side_too(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    await runtime.create(agent("s-aaaaaaaaaaaa"))
    await runtime.create(agent("s-bbbbbbbbbbbb", home="fedcba9876543210"))
    mine = await runtime.list_containers({LABEL_HOME: HOME})
    assert [c.labels[LABEL_SESSION] for c in mine] == ["s-aaaaaaaaaaaa"]
    assert kmock[f"get {PODS}"][0].params == {"labelSelector": f"{LABEL_HOME}={HOME}"}


async def test_refusal_by_the_api_server_names_the_pod_and_namespace(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    kmock[f"post {PODS}"] << 403 << {"kind": "Status", "message": 'pods is forbidden: User "x" cannot create'}
    said = r"create pod hydra-s-0a1b2c3d4e5f-0 in namespace hydra-agents: 403 pods is forbidden"
    with pytest.raises(RuntimeUnavailableError, match=said):
        await runtime.create(agent())


async def test_unreachable_api_server_is_a_runtime_error() -> None:
    with socket.socket() as bound:  # a loopback port of the test's own that does not listen: refused
        bound.bind(("127.0.0.1", 0))

        def connect() -> k8s.ApiClient:
            configuration = k8s.Configuration()
            configuration.host = f"http://127.0.0.1:{bound.getsockname()[1]}"
            configuration.retries = 0
            return k8s.ApiClient(configuration)

        runtime = KubernetesRuntime(PodOptions(namespace=NS), connect)
        with pytest.raises(RuntimeUnavailableError, match="cannot reach the Kubernetes API server to list pods"):
            await runtime.list_containers({})


async def test_networks_are_policies_volumes_live_with_pods_images_are_pulled(
    kmock: kmock.KubernetesEmulator, cluster: Cluster
) -> None:
    runtime, _ = cluster
    with pytest.raises(ConfigError, match="creates no networks"):
        await runtime.create_network("hydra-net-x", {})
    assert await runtime.create_volume("hydra-codex-s-x", {}) == "hydra-codex-s-x"
    await runtime.remove_volume("hydra-codex-s-x")
    assert await runtime.list_volumes({}) == []
    assert await runtime.image_exists("hydra-agent:any") is True
    assert await runtime.image_info("hydra-agent:any") is None
    assert paths(kmock) == []  # none of it asked the cluster anything
