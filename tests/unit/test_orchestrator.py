"""The backend-neutral orchestrator over the in-memory runtime: a run, a resume, a re-attach after a
restart, cancellation, the wall-clock and output limits, teardown on error and detach on shutdown,
each counting what is left behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import NetworkPolicy, Policy, ResourceLimits
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.backends.docker import docker_backend
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.codex_version import LABEL_CODEX_VERSION
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.supervisor import FailureCause
from hydra_sandbox.settings import HydraSettings, load_settings

IMAGE = "hydra-agent:fake"
SECRET = "sk-proj-FAKEfakeFAKEfake0123456789abcdef"

SID = "s-000000000001"


def jsonl(*items: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


CODEX_RUN = jsonl(
    {"type": "thread.started", "thread_id": "thread-1"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "i1", "type": "agent_message", "text": f"done, key {SECRET}"}},
    {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}},
)


class Observer:
    def __init__(self) -> None:
        self.started = 0
        self.failed: list[FailureCause] = []

    def container_started(self) -> None:
        self.started += 1

    def container_failed(self, cause: FailureCause) -> None:
        self.failed.append(cause)


class Sink:
    def __init__(self) -> None:
        self.drafts: list[EventDraft] = []

    async def __call__(self, draft: EventDraft) -> None:
        self.drafts.append(draft)

    @property
    def text(self) -> str:
        return "\n".join(d.text for d in self.drafts)


@pytest.fixture
def settings(tmp_path: Path) -> HydraSettings:
    return load_settings(data_home=tmp_path / "data", agent_image=IMAGE, model_base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("x = 1\n")
    return root


def orchestrator(settings: HydraSettings, runtime: FakeRuntime, run_dir: Path) -> SandboxOrchestrator:
    """The Docker backend's parts over the in-memory runtime."""
    parts = docker_backend(settings, runtime)
    backend = Backend("docker", runtime, parts.workspace, HostSocketEgress(lambda: run_dir))
    return SandboxOrchestrator(settings, SecretMasker(), backend)


def request(workdir: Path, **kw: Any) -> RunRequest:
    limits = kw.pop("limits", ResourceLimits())
    policy = Policy(name="t", network=NetworkPolicy(mode=kw.pop("network", "none")), resources=limits)
    base: dict[str, Any] = {"session_id": SID, "profile_id": "p", "policy": policy, "prompt": "fix it"}
    return RunRequest(working_dir=workdir, model="m", **(base | kw))


def left_behind(runtime: FakeRuntime) -> tuple[list[str], list[str]]:
    return sorted(c.spec.name or c.id for c in runtime.containers.values()), sorted(runtime.volumes)


async def wait_for(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not check():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


async def test_a_run_streams_masked_events_in_order_and_removes_its_container(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN), ("stderr", b"warn\n")]), images=[IMAGE])
    sandbox, sink, observer = orchestrator(settings, runtime, run_dir), Sink(), Observer()
    sandbox.add_observer(observer)
    result = await sandbox.run(request(workdir, secrets=[SECRET]), sink, asyncio.Event())
    assert result.status == "completed" and result.thread_id == "thread-1" and not result.has_changes
    stdout = [d.data["seq"] for d in sink.drafts if d.data["stream"] == "stdout"]
    assert stdout == list(range(len(stdout))) and "warn" in sink.text
    assert SECRET not in sink.text and "done, key" in sink.text
    assert observer.started == 1 and observer.failed == []
    assert left_behind(runtime) == ([], [])  # nothing to review: the raw Codex transcripts went with the run
    await sandbox.discard(SID)
    assert left_behind(runtime) == ([], [])
    assert not (settings.sessions_dir / SID).exists()


async def test_the_agent_container_is_hardened_labelled_and_sees_the_overlay_of_its_layer(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    task = asyncio.create_task(sandbox.run(request(workdir, network="model-only"), Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    spec = runtime.containers[runtime.running()[0]].spec
    ws = sandbox.workspace(SID)
    assert spec.user == f"{ws.agent_uid}:{ws.agent_gid}" and not spec.user.startswith("0:")
    assert spec.read_only_root and spec.cap_drop == ["ALL"] and spec.network_mode == "none"
    assert spec.labels["hydra.session"] == SID and spec.labels["hydra.role"] == "agent"
    assert spec.argv[:3] == ["hydra-agent-entry", "codex", "exec"] and spec.argv[-2:] == ["--", "fix it"]
    volume = runtime.volumes[ws.volume_name]
    assert f"upperdir={ws.upper}" in volume.driver_opts["o"] and f"lowerdir={ws.lowers[-1]}" in volume.driver_opts["o"]
    assert {m.target for m in spec.mounts} == {"/workspace", "/codex-home", "/run/hydra"}
    assert (run_dir / SID / "egress.sock").exists()
    assert spec.runtime is None  # the engine's default runtime unless HYDRA_AGENT_RUNTIME names one
    runtime.exit(runtime.running()[0], 0)
    assert (await task).status == "completed"
    assert not (run_dir / SID).exists(), "the egress socket directory outlived the run"


async def run_to_end(sandbox: SandboxOrchestrator, runtime: FakeRuntime, req: RunRequest, write: str = "") -> Any:
    """Run ``req`` with a program that waits; write ``write`` into the layer while it runs; return
    (result, the agent's argv)."""
    task = asyncio.create_task(sandbox.run(req, Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    (container_id,) = runtime.running()
    argv = runtime.containers[container_id].spec.argv
    if write:
        (sandbox.workspace(req.session_id).upper / write).write_text("y = 2\n")
    runtime.exit(container_id, 0)
    return await task, argv


async def test_a_resume_reuses_the_layer_and_codex_home_and_continues_the_thread(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    first, _argv = await run_to_end(sandbox, runtime, request(workdir), write="new.py")
    assert first.has_changes and f"hydra-codex-{SID}" in runtime.volumes  # kept while the diff awaits review
    upper = sandbox.workspace(SID).upper
    second = request(workdir, run_index=1, resume_thread_id="thread-1", prompt="go on")
    result, argv = await run_to_end(sandbox, runtime, second)
    assert result.has_changes and sandbox.workspace(SID).upper == upper
    assert argv[argv.index("exec") + 1] == "resume" and "thread-1" in argv
    assert runtime.calls.count("create_volume") == 3  # workspace twice (fresh per run), codex home once
    preview = await sandbox.diff(SID, second.policy)
    assert [f.path for f in preview.files] == ["new.py"]
    await sandbox.apply(SID, second.policy, confirm=True)
    assert "hydra-codex-s1" not in runtime.volumes, "the Codex transcripts outlived the applied session"


async def test_a_resume_after_the_session_ended_starts_a_new_thread_on_the_same_layer(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    first, _argv = await run_to_end(sandbox, runtime, request(workdir))
    assert not first.has_changes and "hydra-codex-s1" not in runtime.volumes
    second = request(workdir, run_index=1, resume_thread_id="thread-1", prompt="go on")
    result, argv = await run_to_end(sandbox, runtime, second, write="later.py")
    assert result.status == "completed" and result.has_changes
    assert "resume" not in argv and "thread-1" not in argv and argv[-1] == "go on"


async def test_a_restarted_server_follows_the_running_agent_after_a_detached_shutdown(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    first = orchestrator(settings, runtime, run_dir)
    task = asyncio.create_task(first.run(request(workdir, network="model-only"), Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    task.cancel()  # the server shuts down
    with pytest.raises(asyncio.CancelledError):
        await task
    (container_id,) = runtime.running()
    assert f"hydra-ws-{SID}" in runtime.volumes and (run_dir / SID).is_dir(), "detach removed what it uses"
    second, sink = orchestrator(settings, runtime, run_dir), Sink()
    assert await second.live_sessions() == {SID}
    follow = asyncio.create_task(second.follow(request(workdir, network="model-only"), sink, asyncio.Event(), 0))
    await wait_for(lambda: "done, key" in sink.text, "the replayed log")
    runtime.emit(container_id, "stdout", jsonl({"type": "turn.started"}))
    runtime.exit(container_id, 0)
    result = await follow
    assert result.status == "completed" and result.thread_id == "thread-1"
    assert left_behind(runtime) == ([], [])  # the re-attached run ended the session: its Codex home is gone


async def test_following_a_session_whose_container_vanished_fails_it_with_the_reason(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    sandbox = orchestrator(settings, FakeRuntime(images=[IMAGE]), run_dir)
    result = await sandbox.follow(request(workdir), Sink(), asyncio.Event(), 0)
    assert result.status == "failed" and "vanished" in (result.reason or "")


async def test_terminating_a_run_stops_its_container_and_tears_down(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(keeps_running=True), images=[IMAGE])
    sandbox, observer, cancel = orchestrator(settings, runtime, run_dir), Observer(), asyncio.Event()
    sandbox.add_observer(observer)
    task = asyncio.create_task(sandbox.run(request(workdir), Sink(), cancel))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    cancel.set()
    result = await task
    assert result.status == "cancelled" and "stop" in runtime.calls and observer.failed == ["cancelled"]
    assert left_behind(runtime) == ([], [])  # the run ended the session: no Codex transcripts left


async def test_the_wall_clock_limit_stops_the_run(settings: HydraSettings, workdir: Path, run_dir: Path) -> None:
    runtime = FakeRuntime(FakeProgram(keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    result = await sandbox.run(request(workdir, limits=ResourceLimits(timeout_s=1)), Sink(), asyncio.Event())
    assert result.status == "timed_out" and "stop" in runtime.calls
    assert left_behind(runtime) == ([], [])  # the run ended the session: no Codex transcripts left


async def test_output_beyond_the_limit_is_cut_once_and_the_agent_is_stopped(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    noise = [("stderr", b"x" * 700 + b"\n")] * 4
    program = FakeProgram(output=[("stdout", CODEX_RUN), *noise], keeps_running=True)
    runtime = FakeRuntime(program, images=[IMAGE])
    sandbox, sink, observer = orchestrator(settings, runtime, run_dir), Sink(), Observer()
    sandbox.add_observer(observer)
    limits = ResourceLimits(max_output_bytes=len(CODEX_RUN) + 1024)
    result = await sandbox.run(request(workdir, limits=limits), sink, asyncio.Event())
    assert result.status == "failed" and result.output_truncated and "stop" in runtime.calls
    assert "output limit" in (result.reason or "") and observer.failed == ["output"]
    assert sink.text.count("output truncated after") == 1
    assert left_behind(runtime) == ([], [])


async def test_an_oom_kill_fails_the_run_naming_it(settings: HydraSettings, workdir: Path, run_dir: Path) -> None:
    runtime = FakeRuntime(FakeProgram(exit_code=137, oom_killed=True), images=[IMAGE])
    sandbox, observer = orchestrator(settings, runtime, run_dir), Observer()
    sandbox.add_observer(observer)
    result = await sandbox.run(request(workdir), Sink(), asyncio.Event())
    assert result.status == "failed" and "out of memory" in (result.reason or "") and observer.failed == ["oom"]


@pytest.mark.parametrize("step", ["create", "start", "stream_logs"])
async def test_a_runtime_failure_mid_run_tears_everything_down(
    settings: HydraSettings, workdir: Path, run_dir: Path, step: str
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)]), images=[IMAGE])
    if step == "stream_logs":
        runtime.stream_logs = broken_logs  # type: ignore[method-assign]
    else:
        runtime.failures[step] = RuntimeUnavailableError("Docker refused: boom")
    sandbox, observer = orchestrator(settings, runtime, run_dir), Observer()
    sandbox.add_observer(observer)
    with pytest.raises(RuntimeUnavailableError, match="boom"):
        await sandbox.run(request(workdir, network="model-only"), Sink(), asyncio.Event())
    assert observer.failed == ["error"]
    assert left_behind(runtime) == ([], [])  # the run ended the session: no Codex transcripts left
    assert f"hydra-ws-{SID}" not in runtime.volumes and not (run_dir / SID).exists()


async def test_output_lines_still_grouped_when_a_run_fails_are_recorded(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)]), images=[IMAGE])

    async def output_then_lost(container_id: str) -> Any:
        yield "stderr", b"compiling\nlinking\n"
        raise RuntimeUnavailableError("lost the output: boom")

    runtime.stream_logs = output_then_lost  # type: ignore[method-assign]
    sink = Sink()
    with pytest.raises(RuntimeUnavailableError, match="boom"):
        await orchestrator(settings, runtime, run_dir).run(request(workdir), sink, asyncio.Event())
    assert [(d.type, d.text, d.data["lines"]) for d in sink.drafts if d.type == "output"] == [
        ("output", "compiling\nlinking", 2)
    ]


async def broken_logs(container_id: str) -> Any:
    raise RuntimeUnavailableError("lost the output: boom")
    yield  # pragma: no cover


async def test_a_missing_agent_image_fails_before_anything_is_created(
    settings: HydraSettings, workdir: Path, run_dir: Path
) -> None:
    runtime = FakeRuntime()
    sandbox = orchestrator(settings, runtime, run_dir)
    with pytest.raises(RuntimeUnavailableError, match="hydra images build"):
        await sandbox.run(request(workdir), Sink(), asyncio.Event())
    assert runtime.calls == ["image_exists"] and not settings.sessions_dir.exists()


async def test_status_names_the_backend_and_its_health(settings: HydraSettings, run_dir: Path) -> None:
    runtime = FakeRuntime(images=[IMAGE])
    runtime.image_labels[IMAGE] = {LABEL_CODEX_VERSION: "0.171.0"}
    sandbox = orchestrator(settings, runtime, run_dir)
    assert await sandbox.status() == {
        "backend": "docker",
        "docker": "ok",
        "agent_image": IMAGE,
        "agent_image_present": True,
        "agent_image_id": f"sha256:fake-{IMAGE}",
        "codex_version": "0.171.0",
        "codex_version_source": "label",
    }
    runtime.failures["image_exists"] = RuntimeUnavailableError("cannot reach the Docker daemon")
    assert str((await sandbox.status())["docker"]).startswith("unavailable: cannot reach")


async def test_status_reports_the_codex_found_in_the_image_not_the_setting(
    settings: HydraSettings, run_dir: Path
) -> None:
    assert settings.codex_version != "0.170.2"
    runtime = FakeRuntime(FakeProgram(output=[("stdout", b"codex-cli 0.170.2\n")]), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    first, again = await sandbox.status(), await sandbox.status()
    assert first["codex_version"] == again["codex_version"] == "0.170.2" and first["codex_version_source"] == "probe"
    assert runtime.calls.count("create") == 1  # asked once per image id


async def test_status_says_why_the_codex_version_is_unknown(settings: HydraSettings, run_dir: Path) -> None:
    missing = await orchestrator(settings, FakeRuntime(), run_dir).status()
    assert missing["agent_image_present"] is False
    assert str(missing["codex_version"]).startswith("unknown: the agent image is missing")
    silent = FakeRuntime(FakeProgram(exit_code=1), images=[IMAGE])
    status = await orchestrator(settings, silent, run_dir).status()
    assert status["docker"] == "ok" and "`codex --version` exited 1" in str(status["codex_version"])


async def test_the_agent_runtime_setting_reaches_the_agent_container(
    tmp_path: Path, workdir: Path, run_dir: Path
) -> None:
    settings = load_settings(
        data_home=tmp_path / "data", agent_image=IMAGE, model_base_url="http://127.0.0.1:9/v1", agent_runtime="runsc"
    )
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    sandbox = orchestrator(settings, runtime, run_dir)
    task = asyncio.create_task(sandbox.run(request(workdir), Sink(), asyncio.Event()))
    await wait_for(lambda: bool(runtime.running()), "the agent started")
    (container_id,) = runtime.running()
    assert runtime.containers[container_id].spec.runtime == "runsc"
    runtime.exit(container_id, 0)
    assert (await task).status == "completed"
