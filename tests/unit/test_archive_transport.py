"""HYDRA_WORKSPACE_TRANSPORT=archive through the one orchestrator, over the in-memory runtime: the visible
tree goes into a labelled volume, the agent's changes come back into the session's layer, and nothing
(transfer containers, scratch volumes, the workspace volume) is left behind, even when the agent's tree
is refused."""

from __future__ import annotations

import asyncio
import copy
import os
import tarfile
from pathlib import Path

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.archive_transport import ArchiveVolumeTransport
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator
from hydra_sandbox.sandbox.workspace import prepare_layer
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.unit.test_orchestrator import CODEX_RUN, IMAGE, SID, Sink, orchestrator, request, wait_for


@pytest.fixture
def settings(tmp_path: Path) -> HydraSettings:
    return load_settings(
        data_home=tmp_path / "data",
        agent_image=IMAGE,
        model_base_url="http://127.0.0.1:9/v1",
        workspace_transport="archive",
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("x = 1\n")
    (root / "gone.txt").write_text("bye\n")
    (root / ".env").write_text("TOKEN=HIDDEN-VALUE\n")
    return root


def agent_writes(runtime: FakeRuntime, volume: str, rel: str, content: bytes | None) -> None:
    """The agent changes its copy of the tree (``None`` deletes ``rel``)."""
    files = runtime.volume_files[volume]
    if content is None:
        del files[rel]
        return
    member = copy.copy(files["app.py"][0])
    member.name, member.size, member.type = rel, len(content), tarfile.REGTYPE
    files[rel] = (member, content)


async def start(sandbox: SandboxOrchestrator, runtime: FakeRuntime, workdir: Path) -> asyncio.Task:
    task = asyncio.create_task(sandbox.run(request(workdir), Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    return task


async def test_the_visible_tree_goes_in_and_the_agents_changes_come_home(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    assert isinstance(sandbox.backend.workspace, ArchiveVolumeTransport)
    task = await start(sandbox, runtime, workdir)
    ws = sandbox.workspace(SID)
    files = runtime.volume_files[ws.volume_name]
    assert set(files) == {"", "app.py", "gone.txt"}  # .env never left this machine
    assert files[""][0].uid == ws.agent_uid and files["app.py"][1] == b"x = 1\n"
    assert runtime.volumes[ws.volume_name].labels["hydra.session"] == SID
    (agent_id,) = runtime.running()
    assert list(runtime.containers) == [agent_id], "a transfer container outlived the copy"
    agent_writes(runtime, ws.volume_name, "app.py", b"x = 2\n")
    agent_writes(runtime, ws.volume_name, "new.py", b"print()\n")
    agent_writes(runtime, ws.volume_name, "gone.txt", None)
    agent_writes(runtime, ws.volume_name, ".env", b"TOKEN=mine\n")
    runtime.exit(agent_id, 0)
    result = await task
    assert result.status == "completed" and result.has_changes
    preview = await sandbox.diff(SID, request(workdir).policy)
    assert {f.path: f.status for f in preview.files} == {"app.py": "modified", "new.py": "added", "gone.txt": "deleted"}
    assert [r.path for r in preview.refused] == [".env"]
    assert sorted(runtime.volumes) == [f"hydra-codex-{SID}"] and runtime.containers == {}
    await sandbox.apply(SID, request(workdir).policy, confirm=True)
    assert (workdir / "app.py").read_text() == "x = 2\n" and not (workdir / "gone.txt").exists()
    assert (workdir / ".env").read_text() == "TOKEN=HIDDEN-VALUE\n"


async def test_a_refused_tree_fails_the_run_and_leaves_nothing_behind(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    task = await start(sandbox, runtime, workdir)
    ws = sandbox.workspace(SID)
    link = copy.copy(runtime.volume_files[ws.volume_name]["app.py"][0])
    link.type, link.linkname, link.size = tarfile.LNKTYPE, "app.py", 0
    runtime.volume_files[ws.volume_name]["steal"] = (link, b"")
    runtime.exit(runtime.running()[0], 0)
    with pytest.raises(WorkspaceError, match="'./steal' is a hard link"):
        await task
    assert ws.volume_name not in runtime.volumes and runtime.containers == {}
    assert not (ws.upper / "app.py").exists()


async def test_a_resume_packs_the_first_runs_changes(settings: HydraSettings, workdir: Path, run_dir: Path) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    task = await start(sandbox, runtime, workdir)
    volume = sandbox.workspace(SID).volume_name
    agent_writes(runtime, volume, "new.py", b"first\n")
    runtime.exit(runtime.running()[0], 0)
    await task
    second = asyncio.create_task(sandbox.run(request(workdir, run_index=1), Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the second run started")
    assert runtime.volume_files[volume]["new.py"][1] == b"first\n"
    runtime.exit(runtime.running()[0], 0)
    assert (await second).has_changes


async def test_a_restarted_server_brings_home_the_changes_of_the_agent_it_followed(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    task = await start(orchestrator(settings, runtime, run_dir), runtime, workdir)
    task.cancel()  # the server shuts down; the agent keeps running on its volume
    with pytest.raises(asyncio.CancelledError):
        await task
    second = orchestrator(settings, runtime, run_dir)  # a new server: only the baseline on disk is shared
    volume = second.workspace(SID).volume_name
    agent_writes(runtime, volume, "app.py", b"x = 3\n")
    sink = Sink()
    follow = asyncio.create_task(second.follow(request(workdir), sink, asyncio.Event(), 0))
    await wait_for(lambda: "done, key" in sink.text, "the replayed log")
    runtime.exit(runtime.running()[0], 0)
    assert (await follow).has_changes
    preview = await second.diff(SID, request(workdir).policy)
    assert {f.path: f.status for f in preview.files} == {"app.py": "modified"}
    assert volume not in runtime.volumes


async def test_a_volume_a_crashed_run_left_is_read_back_before_the_next_run(tmp_path: Path, workdir: Path) -> None:
    runtime = FakeRuntime(images=[IMAGE])
    transport = ArchiveVolumeTransport(runtime, IMAGE)
    labels = {"hydra.session": SID, "hydra.role": "workspace"}
    ws = prepare_layer(SID, workdir, Policy(name="t"), tmp_path / "sessions", labels)
    await transport.attach(ws)
    agent_writes(runtime, ws.volume_name, "crash.py", b"kept\n")
    await transport.attach(ws)  # the next run, after one that died before its release
    assert runtime.volume_files[ws.volume_name]["crash.py"][1] == b"kept\n"
    assert (ws.upper / "crash.py").read_bytes() == b"kept\n"
    await transport.discard(ws)
    assert runtime.volumes == {} and runtime.containers == {}


async def test_an_engine_refusing_the_archive_stops_the_pack_and_leaves_nothing(tmp_path: Path, workdir: Path) -> None:
    for n in range(200):  # more than a pipe holds, so the pack is still writing when the engine gives up
        (workdir / f"f{n}.txt").write_bytes(os.urandom(1024))
    runtime = FakeRuntime(images=[IMAGE])
    runtime.failures["put_archive"] = RuntimeUnavailableError("Docker refused: no space left on device")
    transport = ArchiveVolumeTransport(runtime, IMAGE)
    ws = prepare_layer(SID, workdir, Policy(name="t"), tmp_path / "sessions", {"hydra.session": SID})
    async with asyncio.timeout(60):  # a pack left blocked on the pipe would hang here, not pass
        with pytest.raises(RuntimeUnavailableError, match="no space left"):
            await transport.attach(ws)
    assert runtime.volumes == {} and runtime.containers == {}


async def test_the_transfer_container_goes_after_the_attach_returns_and_before_the_release_does(
    tmp_path: Path, workdir: Path
) -> None:
    runtime = FakeRuntime(images=[IMAGE])
    removal_may_go = asyncio.Event()
    real_remove = runtime.remove

    async def remove(container_id: str) -> None:
        await removal_may_go.wait()  # held: the agent's container is made meanwhile
        await real_remove(container_id)

    runtime.remove = remove  # type: ignore[method-assign]
    transport = ArchiveVolumeTransport(runtime, IMAGE)
    ws = prepare_layer(SID, workdir, Policy(name="t"), tmp_path / "sessions", {"hydra.session": SID})
    mount = await asyncio.wait_for(transport.attach(ws), 30)  # not held by the transfer container's removal
    assert mount.source == ws.volume_name and (ws.volume_name, "app.py") in {
        (v, f) for v, files in runtime.volume_files.items() for f in files
    }
    assert len(runtime.containers) == 1, "the transfer container was removed before the attach returned"
    removal_may_go.set()
    await transport.release(ws)
    assert runtime.containers == {} and runtime.volumes == {}, "the release returned before the transfer's removal"


async def test_a_transfer_container_the_engine_will_not_remove_is_left_labelled_for_gc_and_the_attach_succeeds(
    tmp_path: Path, workdir: Path
) -> None:
    runtime = FakeRuntime(images=[IMAGE])
    runtime.failures["remove"] = RuntimeUnavailableError("Docker refused: device or resource busy")
    transport = ArchiveVolumeTransport(runtime, IMAGE)
    ws = prepare_layer(SID, workdir, Policy(name="t"), tmp_path / "sessions", {"hydra.session": SID})
    assert (await transport.attach(ws)).source == ws.volume_name
    with pytest.raises(RuntimeUnavailableError, match="volume is in use"):  # the run's teardown says so, goes on
        await transport.release(ws)
    (left,) = runtime.containers.values()
    assert left.spec.labels["hydra.session"] == SID and left.spec.labels["hydra.role"] == "transfer"
