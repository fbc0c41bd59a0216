"""The orchestrator's calls to a transport whose workspace lives in the agent's container itself
(:class:`~hydra_sandbox.sandbox.workspace.ContainerWorkspace`, the Kubernetes pod's emptyDir): the
workspace goes in after the container is created and before it starts, the change set comes out
before the container is removed (also at the end of a re-attached run), never on a server shutdown,
and a failure of either is the run's, with the container still removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER, ContainerWorkspace, StagedWorkspace
from hydra_sandbox.settings import HydraSettings
from tests.unit.test_orchestrator import (
    CODEX_RUN,
    IMAGE,
    Sink,
    left_behind,
    request,
    settings,
    wait_for,
    workdir,
)

__all__ = ["settings", "workdir"]  # fixtures, used by name


class PodLikeTransport:
    """Records each call with the runtime's calls made so far; ``before_remove`` writes the agent's
    edit into the layer, as reading it back from the pod does."""

    def __init__(self, runtime: FakeRuntime, fail: str | None = None) -> None:
        self.runtime = runtime
        self.fail = fail
        self.log: list[tuple[str, list[str]]] = []

    def _record(self, what: str) -> None:
        self.log.append((what, list(self.runtime.calls)))
        if what == self.fail:
            raise WorkspaceError(f"{what} failed: the pod said no")

    async def attach(self, ws: StagedWorkspace) -> Mount:
        self._record("attach")
        return Mount(type="volume", source=ws.volume_name, target=WORKSPACE_IN_CONTAINER)

    async def after_create(self, ws: StagedWorkspace, container_id: str) -> None:
        assert container_id in self.runtime.containers
        self._record("after_create")

    async def before_remove(self, ws: StagedWorkspace, container_id: str) -> None:
        assert container_id in self.runtime.containers, "the pod was removed before its workspace was read"
        self._record("before_remove")
        (ws.upper / "edited.py").write_text("y = 2\n")

    async def release(self, ws: StagedWorkspace) -> None:
        self._record("release")

    async def discard(self, ws: StagedWorkspace) -> None:
        self._record("discard")

    def names(self) -> list[str]:
        return [what for what, _calls in self.log]


def orchestrator(
    settings: HydraSettings, runtime: FakeRuntime, transport: PodLikeTransport, run_dir: Path
) -> SandboxOrchestrator:
    backend = Backend("pods", runtime, transport, HostSocketEgress(lambda: run_dir))
    return SandboxOrchestrator(settings, SecretMasker(), backend)


def test_the_pod_transport_is_a_container_workspace_and_the_docker_ones_are_not(settings: HydraSettings) -> None:
    from hydra_sandbox.sandbox.archive_transport import ArchiveVolumeTransport
    from hydra_sandbox.sandbox.backends.kubernetes.exec_transport import PodExecTransport

    assert isinstance(PodExecTransport(lambda *a: None), ContainerWorkspace)  # type: ignore[arg-type,return-value]
    assert not isinstance(ArchiveVolumeTransport(FakeRuntime(), IMAGE), ContainerWorkspace)


async def test_the_workspace_goes_in_between_create_and_start_and_comes_out_before_remove(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)]), images=[IMAGE])
    transport = PodLikeTransport(runtime)
    result = await orchestrator(settings, runtime, transport, run_dir).run(request(workdir), Sink(), asyncio.Event())
    assert transport.names() == ["attach", "after_create", "before_remove", "release"]
    put_calls, take_calls = transport.log[1][1], transport.log[2][1]
    assert put_calls[-1] == "create" and "start" not in put_calls
    assert "remove" not in take_calls[take_calls.index("start") :]
    assert result.status == "completed" and result.has_changes  # the change set read back is the diff's
    assert left_behind(runtime)[0] == []


async def test_a_failed_put_fails_the_run_and_removes_the_container_without_reading_it_back(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)]), images=[IMAGE])
    transport = PodLikeTransport(runtime, fail="after_create")
    with pytest.raises(WorkspaceError, match="the pod said no"):
        await orchestrator(settings, runtime, transport, run_dir).run(request(workdir), Sink(), asyncio.Event())
    assert "before_remove" not in transport.names() and "start" not in runtime.calls
    assert left_behind(runtime)[0] == []


async def test_a_failed_take_fails_the_run_naming_it_and_still_removes_the_container(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)]), images=[IMAGE])
    transport = PodLikeTransport(runtime, fail="before_remove")
    with pytest.raises(WorkspaceError, match="before_remove failed"):
        await orchestrator(settings, runtime, transport, run_dir).run(request(workdir), Sink(), asyncio.Event())
    assert transport.names().count("before_remove") == 1 and left_behind(runtime)[0] == []


async def test_a_server_shutdown_leaves_the_workspace_in_the_pod_and_the_followed_run_takes_it_once(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    transport = PodLikeTransport(runtime)
    first = orchestrator(settings, runtime, transport, run_dir)
    task = asyncio.create_task(first.run(request(workdir), Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    task.cancel()  # the server shuts down
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.names() == ["attach", "after_create"], "a shutdown read the pod's workspace or released it"
    (container_id,) = runtime.running()
    second = orchestrator(settings, runtime, transport, run_dir)
    follow = asyncio.create_task(second.follow(request(workdir), Sink(), asyncio.Event(), 0))
    await wait_for(lambda: runtime.calls.count("stream_logs") == 2, "the new server follows the pod")
    runtime.exit(container_id, 0)
    result = await follow
    assert transport.names() == ["attach", "after_create", "before_remove", "release"]
    assert result.status == "completed" and result.has_changes and left_behind(runtime)[0] == []


async def test_a_stopped_run_whose_changes_cannot_be_read_back_keeps_its_status_and_says_why(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(keeps_running=True), images=[IMAGE])
    transport = PodLikeTransport(runtime, fail="before_remove")  # a pod deleted by the stop: nothing to exec into
    sandbox = orchestrator(settings, runtime, transport, run_dir)
    result = await sandbox.run(request(workdir, limits=ResourceLimits(timeout_s=1)), Sink(), asyncio.Event())
    assert result.status == "timed_out" and "could not be read back" in (result.reason or "")
    assert "the pod said no" in (result.reason or "") and left_behind(runtime)[0] == []
