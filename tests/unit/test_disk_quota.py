"""The writable layer's disk quota (``resources.disk_mb``): narrowed for children like every limit, the
layer on a filesystem of that size, removed cleanly, refused with the reason where it cannot be had, and
reported when the agent filled it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hydra_sandbox.errors import PolicyViolation, WorkspaceError
from hydra_sandbox.policy import Policy, PolicyRequest, ResourceLimits, narrow
from hydra_sandbox.sandbox import quota
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.workspace import prepare_layer, remove_layer
from hydra_sandbox.settings import load_settings
from tests.unit.test_orchestrator import IMAGE, Sink, orchestrator, request, wait_for

needs_mounts = pytest.mark.skipif(
    quota.unsupported_reason() is not None, reason=f"no disk quota on this host: {quota.unsupported_reason()}"
)


def policy(disk_mb: int | None) -> Policy:
    return Policy(name="q", resources=ResourceLimits(disk_mb=disk_mb))


def test_a_child_may_set_a_quota_its_parent_lacks_but_never_widen_one() -> None:
    assert narrow(policy(None), PolicyRequest(resources={"disk_mb": 100})).resources.disk_mb == 100
    assert narrow(policy(200), PolicyRequest(resources={"disk_mb": 100})).resources.disk_mb == 100
    assert narrow(policy(200), None).resources.disk_mb == 200
    with pytest.raises(PolicyViolation, match=r"resources.disk_mb: 300 is wider than the parent's 200"):
        narrow(policy(200), PolicyRequest(resources={"disk_mb": 300}))


def test_without_mount_rights_a_quota_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    (tmp_path / "project").mkdir()
    with pytest.raises(WorkspaceError, match="resources.disk_mb: session s-0+1 asks for a 64 MB quota, but .*root"):
        prepare_layer("s-000000000001", tmp_path / "project", policy(64), tmp_path / "sessions", {})


@needs_mounts
def test_the_layer_lives_on_a_filesystem_of_its_quota_and_goes_with_the_session(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    os.chown(tmp_path / "project", 1000, 1000)
    ws = prepare_layer("s-000000000001", tmp_path / "project", policy(64), tmp_path / "sessions", {})
    try:
        assert ws.session_dir == tmp_path / "sessions" / "s-000000000001" and ws.quota_mb == 64
        mount = quota.mount_path(ws.session_dir)
        assert os.path.ismount(mount) and ws.upper.parent == mount and ws.work.parent == mount
        stats = os.statvfs(mount)
        assert 48 << 20 < stats.f_blocks * stats.f_frsize <= 64 << 20
        with pytest.raises(OSError, match="No space left"), open(ws.upper / "big", "wb") as handle:
            for _ in range(80):
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        assert quota.layer_full(ws.session_dir)
    finally:
        remove_layer(ws)
    assert not os.path.ismount(mount) and not ws.session_dir.exists()


@needs_mounts
async def test_a_run_that_filled_its_quota_says_so_in_its_reason_and_log(tmp_path: Path) -> None:
    workdir, run_dir = tmp_path / "project", Path(tempfile.mkdtemp(prefix="hydra-q-"))
    workdir.mkdir()
    os.chown(workdir, 1000, 1000)
    settings = load_settings(data_home=tmp_path / "data", agent_image=IMAGE, model_base_url="http://127.0.0.1:9/v1")
    runtime = FakeRuntime(FakeProgram(keeps_running=True), images=[IMAGE])
    sandbox, sink = orchestrator(settings, runtime, run_dir), Sink()
    req = request(workdir, limits=ResourceLimits(disk_mb=32))
    task = asyncio.create_task(sandbox.run(req, sink, asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    upper = sandbox.workspace("s-000000000001").upper
    try:
        with open(upper / "fill", "wb") as handle:  # what the agent wrote until ENOSPC
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
    except OSError:
        pass
    runtime.exit(runtime.running()[0], 0)
    result = await task
    try:
        assert "disk quota of 32 MB reached" in (result.reason or "") and "ENOSPC" in (result.reason or "")
        assert sink.text.count("disk quota of 32 MB reached") == 1
    finally:
        await sandbox.discard("s-000000000001")
        shutil.rmtree(run_dir, ignore_errors=True)
    assert not (settings.sessions_dir / "s-000000000001").exists()


@needs_mounts
async def test_the_quota_mount_is_held_only_while_the_session_is_live_or_reviewable(tmp_path: Path) -> None:
    workdir, run_dir = tmp_path / "project", Path(tempfile.mkdtemp(prefix="hydra-q-"))
    workdir.mkdir()
    os.chown(workdir, 1000, 1000)
    settings = load_settings(data_home=tmp_path / "data", agent_image=IMAGE, model_base_url="http://127.0.0.1:9/v1")
    runtime = FakeRuntime(FakeProgram(), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    req = request(workdir, limits=ResourceLimits(disk_mb=32))
    try:
        result = await sandbox.run(req, Sink(), asyncio.Event())
        mount = quota.mount_path(sandbox.workspace("s-000000000001").session_dir)
        assert not result.has_changes and not os.path.ismount(mount), "an ended session still holds a loop mount"
        # mounted again for the diff
        assert (await sandbox.diff("s-000000000001", req.policy)).files == [] and os.path.ismount(mount)
    finally:
        await sandbox.discard("s-000000000001")
        shutil.rmtree(run_dir, ignore_errors=True)
    assert not os.path.ismount(mount) and not (settings.sessions_dir / "s-000000000001").exists()
