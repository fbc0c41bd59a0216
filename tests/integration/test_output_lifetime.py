"""Raw agent output lives only as long as it must: an agent printing past its output limit is stopped,
the engine's log of it stays under its cap, and the log is gone with the container."""

from __future__ import annotations

import os
import uuid

import docker
import pytest

from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec
from hydra_sandbox.sandbox.supervisor import supervise

pytestmark = pytest.mark.docker


def _log_bytes(log_path: str) -> int:
    """The container's json-file log with its rotated files (``<path>.1`` ...)."""
    folder, name = os.path.split(log_path)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(name))


async def test_an_agent_printing_past_its_cap_is_stopped_and_its_log_stays_under_the_cap(
    agent_image: str, docker_client: docker.DockerClient
) -> None:
    if os.geteuid() != 0:
        pytest.skip("reading the engine's json-file log under /var/lib/docker needs root")
    runtime = DockerRuntime()
    limits = ResourceLimits(memory_mb=256, pids=64, max_output_bytes=300_000)
    spec = ContainerSpec(
        image=agent_image,
        argv=["bash", "-c", "while :; do yes 'a fake key sk-proj-LEAKLEAKLEAK' | head -c 10000000; done"],
        user="1234:1234",
        labels={LABEL_SESSION: f"s-{uuid.uuid4().hex[:12]}", LABEL_ROLE: "agent", "hydra.test": "1"},
        limits=limits,
    )
    cid = await runtime.create(spec)
    seen = 0

    async def count(_stream: str, chunk: bytes) -> None:
        nonlocal seen
        seen += len(chunk)

    try:
        await runtime.start(cid)
        outcome = await supervise(runtime, cid, timeout_s=120, max_output_bytes=300_000, on_output=count, grace_s=2)
        attrs = docker_client.containers.get(cid).attrs
        assert attrs["State"]["Status"] == "exited", "the agent kept running past its output limit"
        assert outcome.status == "failed" and outcome.failure == "output", outcome
        log_path = attrs["LogPath"]
        assert 0 < _log_bytes(log_path) <= spec.log_max_bytes, "the engine's log grew past its cap"
    finally:
        await runtime.remove(cid)
    assert seen < 310_000
    assert not os.path.exists(log_path), "the raw log outlived its container"
