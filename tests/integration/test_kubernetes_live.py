"""The Kubernetes runtime's whole flow on a real cluster: create a hardened pod (and its policies), follow
its timestamped log, wait for its exit code, find it again from a new runtime by labels, and gc it.

Runs only when ``KUBECONFIG`` names a kubeconfig file (the namespace is ``HYDRA_KUBERNETES_NAMESPACE``,
default ``hydra-test``, and must exist; the image ``HYDRA_TEST_KUBERNETES_IMAGE``, default
``busybox:1.36``, must be pullable and have ``sh``). Skipped with the reason everywhere else: no cluster
can be installed on the machines this project is built on (docs/kubernetes.md).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.kubernetes.manifests import PodOptions
from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime, load_api_client
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, LABEL_SESSION, ContainerSpec


def _cluster() -> Path:
    named = os.environ.get("KUBECONFIG", "")
    if not named or not Path(named.split(os.pathsep)[0]).is_file():
        pytest.skip(f"KUBECONFIG does not name a kubeconfig file ({named!r}): no cluster to run the live flow on")
    return Path(named.split(os.pathsep)[0])


async def test_whole_flow_on_a_live_cluster() -> None:
    kubeconfig = _cluster()
    namespace = os.environ.get("HYDRA_KUBERNETES_NAMESPACE", "hydra-test")
    image = os.environ.get("HYDRA_TEST_KUBERNETES_IMAGE", "busybox:1.36")
    home, session = secrets.token_hex(8), "s-" + secrets.token_hex(6)
    labels = {LABEL_HOME: home, LABEL_SESSION: session, LABEL_ROLE: "agent"}

    def runtime() -> KubernetesRuntime:
        return KubernetesRuntime(PodOptions(namespace=namespace), lambda: load_api_client(kubeconfig))

    spec = ContainerSpec(
        image=image,
        argv=["sh", "-c", "echo one; echo two >&2; exit 3"],
        user="1000:1000",
        labels=labels,
        name=f"hydra-{session}-0",
        workdir="/tmp",
        limits=ResourceLimits(cpus=0.1, memory_mb=64, timeout_s=120),
    )
    first = runtime()
    pod = await first.create(spec)
    try:
        await first.start(pod)
        output = b"".join([chunk async for _s, chunk in first.stream_logs(pod)])
        assert output.splitlines() == [b"one", b"two"]
        assert await first.wait(pod, timeout_s=120) == 3
        restarted = runtime()
        [found] = await restarted.list_containers({LABEL_SESSION: session})
        assert (found.id, found.exit_code) == (pod, 3)
        report = await collect_garbage(restarted, set(), home=home)
        assert report.containers == [pod]
        await asyncio.wait_for(restarted.wait(pod, timeout_s=60), 90)
    finally:
        await first.remove(pod)
