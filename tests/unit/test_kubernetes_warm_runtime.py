"""The runtime that claims agent pods from Hydra's warm pool, against kmock's API server; the test plays
the agent-sandbox controller (it binds a claim to a pod of the pool's template, marked with the claim's
uid) and the kubelet, and ``pods/exec`` is served by this machine's ``sh`` (:mod:`tests.pod_exec_kit`).
The request sequence of a claim (created, bound, pod labelled, launch script written, freed by deleting
the claim), the refusals and the bounded wait, re-attach, ``hydra gc`` of claims, and every object
created valid against its schema (the CRD's, or Kubernetes 1.30 strict)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import kubernetes_validate
import pytest
from kubernetes import client as k8s

from hydra_sandbox.errors import RuntimeUnavailableError, UnsafeSpecError
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    MIN_KUBERNETES,
    TRANSFER_MOUNT,
    WORKSPACE_IN_CONTAINER_NAME,
)
from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import (
    API_GROUP,
    API_VERSION,
    LABEL_CLAIM,
    LAUNCH_SCRIPT,
    LAUNCH_SUBPATH,
    SHUTDOWN_MARGIN_S,
    launch_script,
    sandbox_template,
)
from hydra_sandbox.sandbox.backends.kubernetes.warm_runtime import WarmPoolRuntime
from hydra_sandbox.sandbox.spec import LABEL_SESSION, ContainerSpec, Mount
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER
from tests.agent_sandbox_kit import CLAIMS, IMAGE, OPTIONS, POOL, Controller, client_of, crd_schema
from tests.kube_kit import HOME, UidEmulator, labels, paths, until
from tests.pod_exec_kit import LocalPod

NOW = datetime(2026, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.kmock(cls=UidEmulator)


def agent(session: str = "s-0a1b2c3d4e5f", **changes: Any) -> ContainerSpec:
    spec = ContainerSpec(
        image=IMAGE,
        argv=["codex", "exec", "--json", "hi"],
        env={"CODEX_HOME": "/codex-home"},
        user="1000:1000",
        labels=labels(session),
        name=f"hydra-{session}-0",
        mounts=[
            Mount(type="volume", source=f"hydra-ws-{session}", target=WORKSPACE_IN_CONTAINER),
            Mount(type="volume", source=f"hydra-codex-{session}", target="/codex-home"),
        ],
    )
    return spec.model_copy(update=changes)


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> AsyncIterator[tuple[WarmPoolRuntime, Controller, LocalPod]]:
    def connect() -> k8s.ApiClient:
        return client_of(kmock)

    pod = LocalPod(tmp_path / "volume")
    runtime = WarmPoolRuntime(
        OPTIONS, POOL.name, connect, open_exec=pod.open_exec, bind_timeout_s=5, now=lambda: NOW, watch_window_s=2
    )
    yield runtime, Controller(kmock), pod


def created(server: kmock.KubernetesEmulator, plural: str) -> list[dict[str, Any]]:
    versions = [server.objects[key].history[0] for key in list(server.objects) if key[0].plural == plural]
    return [json.loads(json.dumps(version, default=dict)) for version in versions]


def live(server: kmock.KubernetesEmulator, plural: str) -> set[str]:
    return {k[2] for k in list(server.objects) if k[0].plural == plural and not server.objects[k].deleted}


async def test_create_claims_a_pooled_pod_labels_it_and_writes_the_launch_script(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, local = cluster
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "hydra-pool-x7k2p")
    assert await creating == "hydra-pool-x7k2p"

    [claim] = created(kmock, "sandboxclaims")
    jsonschema.validate(claim, crd_schema("sandboxclaims"))
    assert claim["metadata"]["name"] == spec.name and claim["metadata"]["labels"] == spec.labels
    assert claim["spec"]["warmPoolRef"] == {"name": POOL.name}
    assert claim["spec"]["lifecycle"] == {"shutdownTime": "2026-01-01T00:32:00Z", "shutdownPolicy": "Delete"}
    assert spec.limits.timeout_s + SHUTDOWN_MARGIN_S == 32 * 60
    key = next(k for k in kmock.objects if (k[0].plural, k[2]) == ("pods", "hydra-pool-x7k2p"))
    pod = kmock.objects[key].history[-1]
    assert {**spec.labels, LABEL_CLAIM: spec.name}.items() <= dict(pod["metadata"]["labels"]).items()
    [(pod_name, container, argv)] = local.execs
    assert (pod_name, container) == ("hydra-pool-x7k2p", WORKSPACE_IN_CONTAINER_NAME) and TRANSFER_MOUNT in argv[-1]
    assert (local.volume / LAUNCH_SUBPATH / LAUNCH_SCRIPT).read_text() == launch_script(spec)
    policies = {p["metadata"]["name"] for p in created(kmock, "networkpolicies")}
    assert "hydra-default-deny" in policies  # made before the claim, as before a pod of its own
    order = [p for m, p in paths(kmock) if m in {"POST", "PATCH"} and "status" not in p]
    assert order.index(CLAIMS) > max(i for i, p in enumerate(order) if "networkpolicies" in p)

    await runtime.remove("hydra-pool-x7k2p")
    assert live(kmock, "sandboxclaims") == set() and "hydra-pool-x7k2p" not in live(kmock, "pods")


async def test_a_claim_not_bound_in_time_is_deleted_and_the_error_names_it_and_its_last_condition(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, local = cluster
    runtime.bind_timeout_s = 0.5
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.refuse(spec.name or "")
    with pytest.raises(RuntimeUnavailableError) as failed:
        await creating
    assert f"sandbox claim {spec.name} of warm pool {POOL.name}" in failed.value.message
    assert "last condition: Ready=False WarmPoolEmpty: no sandbox to adopt" in failed.value.message
    assert failed.value.hint is not None and "sandboxwarmpool" in failed.value.hint
    assert live(kmock, "sandboxclaims") == set() and local.execs == []


@pytest.mark.parametrize(
    "foreign",
    [{"claim_uid": "another-claims-uid"}, {"sandbox_uid": "another-sandboxes-uid"}],
    ids=["sandbox-of-another-claim", "pod-of-another-sandbox"],
)
async def test_a_pod_not_controlled_by_the_claims_sandbox_is_never_taken(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod], foreign: dict[str, str]
) -> None:
    runtime, controller, local = cluster
    runtime.bind_timeout_s = 0.5
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "someone-elses", **foreign)
    with pytest.raises(RuntimeUnavailableError, match="got no pod waiting for its session"):
        await creating
    assert local.execs == [] and live(kmock, "sandboxclaims") == set()


async def test_a_pooled_pod_as_the_api_server_writes_it_back_is_hydras(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, _local = cluster
    template = sandbox_template(POOL, OPTIONS)
    pod_spec = template["spec"]["podTemplate"]["spec"]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        del pod_spec[flag]  # false: left out
    pod_spec["containers"][0]["resources"] = {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "hydra-pool-x7k2p", template=template)
    assert await creating == "hydra-pool-x7k2p"


async def test_the_pod_named_by_the_sandboxs_pod_name_annotation_is_the_claimed_one(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, _local = cluster
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "hydra-pool-x7k2p", pod="hydra-pool-x7k2p-pod")
    assert await creating == "hydra-pool-x7k2p-pod"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t["spec"]["podTemplate"]["metadata"]["labels"].pop("hydra.role"), "default-deny"),
        (lambda t: t["spec"]["podTemplate"]["spec"].update(automountServiceAccountToken=True), "token"),
        (lambda t: t["spec"]["podTemplate"]["spec"]["containers"][0].update(command=["sh"]), "launcher"),
        (lambda t: t["spec"]["podTemplate"]["spec"]["containers"][0].update(image="other:1"), "agent image .other:1."),
        (lambda t: t["spec"]["podTemplate"]["spec"].update(hostNetwork=True), "hostNetwork True"),
        (
            lambda t: t["spec"]["podTemplate"]["spec"]["containers"][0]["resources"]["limits"].update(memory="3Gi"),
            "agent resources",
        ),
        (
            lambda t: t["spec"]["podTemplate"]["spec"]["containers"][0]["securityContext"].update(privileged=True),
            "agent securityContext",
        ),
    ],
)
async def test_a_pooled_pod_that_is_not_hydras_agent_pod_is_refused_and_its_claim_deleted(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod], change: Any, named: str
) -> None:
    runtime, controller, local = cluster
    template = sandbox_template(POOL, OPTIONS)
    change(template)
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "foreign-pod", template=template)
    with pytest.raises(UnsafeSpecError, match=named) as refused:
        await creating
    assert "pod foreign-pod of warm pool hydra-pool is not Hydra's agent pod" in refused.value.message
    assert local.execs == [] and live(kmock, "sandboxclaims") == set()


async def test_a_run_whose_policy_asks_for_other_limits_than_the_pools_is_refused(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, _local = cluster
    spec = agent(limits=ResourceLimits(cpus=4))
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "hydra-pool-x7k2p")
    with pytest.raises(UnsafeSpecError, match="agent resources .* not the run's"):
        await creating
    assert live(kmock, "sandboxclaims") == set()


async def test_a_spec_without_a_workspace_gets_a_pod_of_its_own(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, _controller, _local = cluster
    pod = await runtime.create(agent(mounts=[]))
    assert pod == "hydra-s-0a1b2c3d4e5f-0" and created(kmock, "sandboxclaims") == []
    for manifest in created(kmock, "pods"):
        kubernetes_validate.validate(manifest, MIN_KUBERNETES, strict=True)


async def test_a_new_runtime_re_attaches_by_labels_and_frees_the_pod_by_deleting_its_claim(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, _local = cluster
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "hydra-pool-x7k2p")
    await creating
    restarted = WarmPoolRuntime(OPTIONS, POOL.name, runtime._connect, now=lambda: NOW)
    [found] = await restarted.list_containers({LABEL_SESSION: "s-0a1b2c3d4e5f"})
    assert found.id == "hydra-pool-x7k2p" and found.labels[LABEL_CLAIM] == spec.name
    await restarted.stop(found.id, grace_s=5)
    assert live(kmock, "sandboxclaims") == set() and "hydra-pool-x7k2p" not in live(kmock, "pods")


async def test_gc_deletes_claimed_pods_and_claims_left_mid_claim_of_this_hydra_only(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, _local = cluster
    bound, kept = agent("s-aaaaaaaaaaaa"), agent("s-bbbbbbbbbbbb")
    for spec, pod in ((bound, "hydra-pool-aaaaa"), (kept, "hydra-pool-bbbbb")):
        creating = asyncio.create_task(runtime.create(spec))
        await controller.bind(spec.name or "", pod)
        await creating
    orphan = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "SandboxClaim",
              "metadata": {"name": "hydra-s-cccccccccccc-0", "labels": labels("s-cccccccccccc")},
              "spec": {"warmPoolRef": {"name": POOL.name}}}  # fmt: skip
    foreign = {**orphan, "metadata": {"name": "theirs", "labels": labels("s-dddddddddddd", home="fedcba9876543210")}}
    for claim in (orphan, foreign):
        await controller.call("POST", CLAIMS, claim)
    report = await collect_garbage(runtime, {"s-bbbbbbbbbbbb"}, home=HOME)
    assert sorted(report.containers) == ["claim/hydra-s-cccccccccccc-0", "hydra-pool-aaaaa"]
    assert live(kmock, "sandboxclaims") == {"hydra-s-bbbbbbbbbbbb-0", "theirs"}


async def test_a_failed_launch_script_write_deletes_the_claim(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, local = cluster
    (local.volume / LAUNCH_SUBPATH).write_text("a file where the directory goes")
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await controller.bind(spec.name or "", "hydra-pool-x7k2p")
    with pytest.raises(RuntimeUnavailableError, match="writing the session's launch script failed"):
        await creating
    assert live(kmock, "sandboxclaims") == set()


async def test_a_whole_run_on_a_claimed_pod_puts_the_workspace_follows_the_log_and_deletes_the_claim(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    from hydra_sandbox.masking import SecretMasker
    from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_sandbox
    from tests.kube_flow_kit import KEY, SID, Node, Sink, live_objects, request, settings

    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "app.py").write_text("x = 1\n")
    local = LocalPod(tmp_path / "pod-volume")
    chosen = settings(tmp_path).model_copy(update={"kubernetes_warm_pool": POOL.name})
    runtime = WarmPoolRuntime(OPTIONS, POOL.name, lambda: client_of(kmock), watch_window_s=2)
    sandbox = kubernetes_sandbox(chosen, SecretMasker(), runtime=runtime, open_exec=local.open_exec)
    sink = Sink()
    running = asyncio.create_task(sandbox.run(request(workdir), sink, asyncio.Event()))
    node, controller = Node(kmock, local.volume, running), Controller(kmock)
    await node.run_gateway()
    await controller.bind(f"hydra-{SID}-0", "hydra-pool-x7k2p")
    agent_pod = await node.run_agent()
    assert agent_pod == "hydra-pool-x7k2p"
    await until(lambda: bool(sink.where(lambda d: d.data.get("thread_id") or "thread.started" in d.text)))
    await node.exit_agent(agent_pod)
    result = await running

    assert result.status == "completed" and result.has_changes
    preview = await sandbox.diff(SID, request(workdir).policy)
    assert [(f.path, f.status) for f in preview.files] == [("app.py", "modified")]
    assert [c for _p, c, _argv in local.execs] == [WORKSPACE_IN_CONTAINER_NAME] * 2 + ["workspace-out"]
    script = (local.volume / LAUNCH_SUBPATH / LAUNCH_SCRIPT).read_text()
    assert "hydra-agent-entry" in script and KEY not in script
    [claim] = created(kmock, "sandboxclaims")
    jsonschema.validate(claim, crd_schema("sandboxclaims"))
    assert KEY not in json.dumps(claim)
    # the Sandbox goes with its claim by the cluster's garbage collector (its owner reference), not by Hydra
    left = {(plural, name) for plural, name in live_objects(kmock) if plural != "sandboxes"}
    assert left == {("networkpolicies", "hydra-default-deny")}, "the session left objects behind"


async def test_a_claim_cancelled_while_waiting_for_its_pod_is_deleted(
    kmock: kmock.KubernetesEmulator, cluster: tuple[WarmPoolRuntime, Controller, LocalPod]
) -> None:
    runtime, controller, _local = cluster
    spec = agent()
    creating = asyncio.create_task(runtime.create(spec))
    await until(lambda: controller.claim(spec.name or "") is not None)
    creating.cancel()
    with pytest.raises(asyncio.CancelledError):
        await creating
    await until(lambda: live(kmock, "sandboxclaims") == set())
