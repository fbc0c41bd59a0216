"""The writable layer's quota in a real agent container: writing past ``resources.disk_mb`` through the
overlay volume gets ENOSPC, and the host keeps at most the quota."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from hydra_sandbox.policy import Policy, ResourceLimits
from hydra_sandbox.sandbox import quota
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.backends.docker.workspace import OverlayVolumeTransport
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec
from hydra_sandbox.sandbox.supervisor import supervise
from hydra_sandbox.sandbox.workspace import prepare_layer, remove_layer

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(quota.unsupported_reason() is not None, reason=f"no quota here: {quota.unsupported_reason()}"),
]


async def test_writing_300_mb_under_a_100_mb_quota_gets_enospc(agent_image: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("x = 1\n")
    os.chown(project, 1000, 1000)
    session = f"s-{uuid.uuid4().hex[:12]}"
    labels = {LABEL_SESSION: session, LABEL_ROLE: "workspace", "hydra.test": "1"}
    policy = Policy(name="q", resources=ResourceLimits(disk_mb=100, memory_mb=256, pids=64))
    ws = prepare_layer(session, project, policy, tmp_path / "sessions", labels)
    runtime = DockerRuntime()
    transport = OverlayVolumeTransport(runtime)
    out: list[bytes] = []

    async def collect(_stream: str, chunk: bytes) -> None:
        out.append(chunk)

    cid = None
    try:
        mount = await transport.attach(ws)
        spec = ContainerSpec(
            image=agent_image,
            argv=["bash", "-c", "dd if=/dev/urandom of=/workspace/big bs=1M count=300 2>&1 | tail -4"],
            user="1000:1000",
            labels={**labels, LABEL_ROLE: "agent"},
            mounts=[mount],
            limits=policy.resources,
        )
        cid = await runtime.create(spec)
        await runtime.start(cid)
        await supervise(runtime, cid, timeout_s=120, max_output_bytes=100_000, on_output=collect, grace_s=2)
        text = b"".join(out).decode(errors="replace")
        assert "No space left on device" in text, text
        assert (ws.upper / "big").stat().st_size <= 100 << 20
        assert quota.layer_full(ws.session_dir)
        assert (project / "app.py").read_text() == "x = 1\n" and not (project / "big").exists()
    finally:
        if cid is not None:
            await runtime.remove(cid)
        await transport.release(ws)
        remove_layer(ws)
    assert not os.path.ismount(quota.mount_path(ws.session_dir))
