"""Agents placed across several engines, each an in-memory runtime: the engine with the most free places
takes a new session (the first listed on a tie), places reserved before a container exists, a full set
makes the run wait (or end cancelled), an engine that does not answer is skipped and named, re-attach
and review find the engine that holds the session, and each engine shows in the status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.docker_hosts import parse_docker_hosts
from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import NetworkPolicy, Policy
from hydra_sandbox.sandbox import RunRequest, RunResult
from hydra_sandbox.sandbox.backends import open_backend
from hydra_sandbox.sandbox.backends.docker import docker_backend
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.backends.docker.several import engine_host
from hydra_sandbox.sandbox.codex_version import LABEL_CODEX_VERSION
from hydra_sandbox.sandbox.engine_set import EngineSet
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec
from hydra_sandbox.sandbox.workspace import LayerStore
from hydra_sandbox.settings import HydraSettings, load_settings

IMAGE = "hydra-agent:fake"
CODEX_RUN = b"".join(
    json.dumps(item).encode() + b"\n"
    for item in (
        {"type": "thread.started", "thread_id": "thread-1"},
        {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}},
    )
)


class DownRuntime(FakeRuntime):
    """An engine that does not answer: every call fails as a refused connection does."""

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        raise RuntimeUnavailableError("docker daemon unreachable: connection refused")


class FlakyRuntime(FakeRuntime):
    """An engine that stops answering while ``down`` is set (its containers keep running)."""

    down = False

    def _enter(self, method: str) -> None:
        if self.down:
            self.calls.append(method)
            raise RuntimeUnavailableError("docker daemon unreachable: connection refused")
        super()._enter(method)


class Sink:
    def __init__(self) -> None:
        self.drafts: list[EventDraft] = []

    async def __call__(self, draft: EventDraft) -> None:
        self.drafts.append(draft)


@pytest.fixture
def settings(tmp_path: Path) -> HydraSettings:
    return load_settings(data_home=tmp_path / "data", agent_image=IMAGE, model_base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "app.py").write_text("x = 1\n")
    return root


def fake_engine() -> FakeRuntime:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    runtime.image_labels[IMAGE] = {LABEL_CODEX_VERSION: "0.169.0"}  # the status reads it from the image
    return runtime


def engine_set(
    settings: HydraSettings, run_dir: Path, runtimes: dict[str, FakeRuntime], limit: int = 2
) -> tuple[EngineSet, list[tuple[str, str]]]:
    """The set over ``runtimes`` (host -> runtime, in order) and the placements it reports."""
    layers = LayerStore(settings.sessions_dir)
    engines = []
    for host, runtime in runtimes.items():
        parts = docker_backend(settings, runtime)
        backend = Backend("docker", runtime, parts.workspace, HostSocketEgress(lambda: run_dir), host=host)
        engines.append(SandboxOrchestrator(settings, SecretMasker(), backend, layers=layers))
    placed: list[tuple[str, str]] = []
    sandbox = EngineSet(engines, limit, recheck_s=0.02)
    sandbox.add_placement_listener(lambda session_id, host: placed.append((session_id, host)))
    return sandbox, placed


def request(workdir: Path, session_id: str, **kw: Any) -> RunRequest:
    policy = Policy(name="t", network=NetworkPolicy(mode="none"))
    return RunRequest(
        session_id=session_id, profile_id="p", policy=policy, prompt="fix it", working_dir=workdir, model="m", **kw
    )


async def foreign_agent(runtime: FakeRuntime, session_id: str = "s-foreign00001") -> str:
    """An agent of another Hydra on the same engine: it counts against the engine's limit."""
    spec = ContainerSpec(
        image=IMAGE, argv=["x"], user="1000:1000", labels={LABEL_SESSION: session_id, LABEL_ROLE: "agent"}
    )
    container_id = await runtime.create(spec)
    await runtime.start(container_id)
    return container_id


def ours(runtime: FakeRuntime, session_id: str) -> list[str]:
    return [c.id for c in runtime.containers.values() if c.spec.labels.get(LABEL_SESSION) == session_id]


async def wait_for(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not check():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


async def run_until_started(
    sandbox: EngineSet, runtime: FakeRuntime, req: RunRequest, cancel: asyncio.Event | None = None
) -> tuple[asyncio.Task[RunResult], str]:
    task = asyncio.create_task(sandbox.run(req, Sink(), cancel or asyncio.Event()))
    await wait_for(
        lambda: any(runtime.containers[c].status == "running" for c in ours(runtime, req.session_id)), "start"
    )
    return task, ours(runtime, req.session_id)[0]


async def test_a_new_session_goes_to_the_engine_with_the_most_free_places_and_says_where(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a, b = fake_engine(), fake_engine()
    await foreign_agent(a)
    sandbox, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    task, container_id = await run_until_started(sandbox, b, request(workdir, "s-000000000001"))
    assert placed == [("s-000000000001", "unix:///b.sock")] and ours(a, "s-000000000001") == []
    b.exit(container_id, 0)
    assert (await task).status == "completed"


async def test_a_tie_goes_to_the_first_listed_engine(settings: HydraSettings, run_dir: Path, workdir: Path) -> None:
    a, b = fake_engine(), fake_engine()
    sandbox, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    task, container_id = await run_until_started(sandbox, a, request(workdir, "s-000000000001"))
    assert placed == [("s-000000000001", "unix:///a.sock")]
    a.exit(container_id, 0)
    await task


async def test_sessions_started_together_are_spread_by_the_places_reserved_before_their_containers_exist(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a, b = fake_engine(), fake_engine()
    sandbox, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b}, limit=1)
    ids = ["s-000000000001", "s-000000000002"]
    tasks = [asyncio.create_task(sandbox.run(request(workdir, sid), Sink(), asyncio.Event())) for sid in ids]
    await wait_for(lambda: len(placed) == 2, "both placed")
    assert sorted(host for _sid, host in placed) == ["unix:///a.sock", "unix:///b.sock"]
    for runtime in (a, b):
        await wait_for(lambda runtime=runtime: bool(runtime.running()), "a running agent")  # type: ignore[misc]
        (container_id,) = runtime.running()
        runtime.exit(container_id, 0)
    assert [r.status for r in await asyncio.gather(*tasks)] == ["completed", "completed"]


async def test_when_every_engine_is_full_the_run_waits_and_starts_where_a_place_frees(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a, b = fake_engine(), fake_engine()
    await foreign_agent(a)
    other = await foreign_agent(b)
    sandbox, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b}, limit=1)
    task = asyncio.create_task(sandbox.run(request(workdir, "s-000000000001"), Sink(), asyncio.Event()))
    await wait_for(lambda: b.calls.count("list_containers") >= 2, "it asked the engines again")
    assert not task.done() and placed == [] and a.calls.count("create") == b.calls.count("create") == 1
    placement: Any = (await sandbox.status())["placement"]
    assert placement["waiting_for_a_place"] == ["s-000000000001"]
    b.exit(other, 0)  # another Hydra's agent on b ends
    await wait_for(lambda: bool(ours(b, "s-000000000001")), "placed on b")
    await wait_for(lambda: len(b.running()) == 1, "running on b")
    b.exit(b.running()[0], 0)
    assert (await task).status == "completed" and placed == [("s-000000000001", "unix:///b.sock")]
    placement = (await sandbox.status())["placement"]
    assert placement["waiting_for_a_place"] == []


async def test_a_run_cancelled_while_it_waits_for_a_place_ends_cancelled_and_starts_nothing(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a = fake_engine()
    await foreign_agent(a)
    sandbox, _placed = engine_set(settings, run_dir, {"unix:///a.sock": a}, limit=1)
    cancel = asyncio.Event()
    task = asyncio.create_task(sandbox.run(request(workdir, "s-000000000001"), Sink(), cancel))
    await wait_for(lambda: a.calls.count("list_containers") >= 2, "it waits")
    cancel.set()
    result = await task
    assert result.status == "cancelled" and "waited for a free place" in (result.reason or "")
    assert a.calls.count("create") == 1  # the other Hydra's agent only


async def test_an_engine_that_does_not_answer_is_skipped_and_the_status_says_which_and_why(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    down, b = DownRuntime(images=[IMAGE]), fake_engine()
    sandbox, placed = engine_set(settings, run_dir, {"tcp://down.lan:2376": down, "unix:///b.sock": b})
    task, container_id = await run_until_started(sandbox, b, request(workdir, "s-000000000001"))
    assert placed == [("s-000000000001", "unix:///b.sock")]
    assert await sandbox.live_sessions() == {"s-000000000001"}
    status = await sandbox.status()
    assert status["docker"] == "unavailable: tcp://down.lan:2376 (the others take the sessions)"
    engines: Any = status["engines"]
    assert engines["tcp://down.lan:2376"]["reachable"] is False
    assert "connection refused" in engines["tcp://down.lan:2376"]["error"]
    healthy = engines["unix:///b.sock"]
    assert {k: healthy[k] for k in ("docker", "agents", "free", "reachable")} == {
        "docker": "ok",
        "agents": 1,
        "free": 1,
        "reachable": True,
    }
    assert healthy["codex_version"] == "0.169.0"
    b.exit(container_id, 0)
    await task


async def test_a_run_fails_naming_each_engine_when_none_answers(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    sandbox, placed = engine_set(settings, run_dir, {"unix:///a.sock": DownRuntime(), "unix:///b.sock": DownRuntime()})
    result = await sandbox.run(request(workdir, "s-000000000001"), Sink(), asyncio.Event())
    assert result.status == "failed" and placed == []
    assert result.reason is not None and result.reason.startswith(
        "no Docker engine answers: unix:///a.sock: unreachable"
    )
    assert "unix:///b.sock: unreachable (docker daemon unreachable: connection refused)" in result.reason


async def test_a_resume_goes_back_to_its_engine_while_it_has_room_and_a_forged_host_is_ignored(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a, b = fake_engine(), fake_engine()
    await foreign_agent(b)
    sandbox, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    task, container_id = await run_until_started(sandbox, b, request(workdir, "s-000000000001", host="unix:///b.sock"))
    b.exit(container_id, 0)
    await task
    task, container_id = await run_until_started(sandbox, a, request(workdir, "s-000000000002", host="tcp://evil:1"))
    a.exit(container_id, 0)
    await task
    assert placed == [("s-000000000001", "unix:///b.sock"), ("s-000000000002", "unix:///a.sock")]


async def test_after_a_restart_follow_finds_the_engine_whose_container_has_the_session(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a, b = fake_engine(), fake_engine()
    await foreign_agent(a)
    first, _placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    task, container_id = await run_until_started(first, b, request(workdir, "s-000000000001"))
    task.cancel()  # the server shuts down; the agent keeps running
    with pytest.raises(asyncio.CancelledError):
        await task
    second, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    assert await second.live_sessions() == {"s-000000000001", "s-foreign00001"}
    sink = Sink()
    follow = asyncio.create_task(second.follow(request(workdir, "s-000000000001"), sink, asyncio.Event(), 0))
    await wait_for(lambda: bool(sink.drafts), "the replayed log")
    b.exit(container_id, 0)
    assert (await follow).status == "completed" and placed == [("s-000000000001", "unix:///b.sock")]


async def test_follow_of_a_vanished_container_fails_and_names_the_engine_that_did_not_answer(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    sandbox, _placed = engine_set(settings, run_dir, {"unix:///a.sock": fake_engine(), "unix:///b.sock": DownRuntime()})
    req = request(workdir, "s-000000000001", host="unix:///a.sock")  # its engine answers: no wait
    result = await sandbox.follow(req, Sink(), asyncio.Event(), 0)
    assert result.status == "failed" and "vanished" in (result.reason or "")
    assert "unix:///b.sock (docker daemon unreachable: connection refused)" in (result.reason or "")


async def test_after_a_restart_apply_removes_the_sessions_codex_home_on_the_engine_that_holds_it(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a, b = fake_engine(), fake_engine()
    await foreign_agent(a)
    first, _placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    req = request(workdir, "s-000000000001")
    task, container_id = await run_until_started(first, b, req)
    (first.engines["unix:///b.sock"].workspace(req.session_id).upper / "new.py").write_text("y = 2\n")
    b.exit(container_id, 0)
    assert (await task).has_changes and "hydra-codex-s-000000000001" in b.volumes
    second, _placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    preview = await second.diff(req.session_id, req.policy)  # the change set is on this machine
    assert [f.path for f in preview.files] == ["new.py"]
    await second.apply(req.session_id, req.policy, confirm=True, digest=preview.digest)
    assert (workdir / "new.py").read_text() == "y = 2\n"
    assert "hydra-codex-s-000000000001" not in b.volumes and "remove_volume" not in a.calls
    await second.discard(req.session_id)
    assert not (settings.sessions_dir / req.session_id).exists()


def test_an_engine_set_without_engines_or_with_no_places_is_refused(settings: HydraSettings, run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="at least one engine"):
        EngineSet([], 2)
    with pytest.raises(ConfigError, match="HYDRA_ENGINE_MAX_AGENTS: 0 running agents per engine would place none"):
        engine_set(settings, run_dir, {"unix:///a.sock": fake_engine()}, limit=0)


@pytest.mark.parametrize("value", ["0", "-1", "257", "many"])
def test_a_bad_per_engine_limit_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("HYDRA_ENGINE_MAX_AGENTS", value)
    with pytest.raises(ConfigError, match="HYDRA_ENGINE_MAX_AGENTS"):
        load_settings(data_home=tmp_path)


def test_several_local_engines_open_as_one_set_limited_per_engine_sharing_layers_and_budgets(tmp_path: Path) -> None:
    hosts = "unix:///run/a/docker.sock, unix:///run/b/docker.sock"
    default = open_backend(
        HydraSettings(docker_host=hosts, data_home=tmp_path, max_concurrent_agents=3), SecretMasker()
    )
    assert isinstance(default, EngineSet) and default.limit == 3
    assert list(default.engines) == ["unix:///run/a/docker.sock", "unix:///run/b/docker.sock"]
    a, b = default.engines.values()
    assert a.layers is b.layers and a.model_tokens is b.model_tokens, "a session's layer or budget split by engine"
    capped = open_backend(HydraSettings(docker_host=hosts, data_home=tmp_path, engine_max_agents=5), SecretMasker())
    assert isinstance(capped, EngineSet) and capped.limit == 5
    one = open_backend(HydraSettings(docker_host="unix:///run/a/docker.sock", data_home=tmp_path), SecretMasker())
    assert isinstance(one, SandboxOrchestrator) and one.backend.host == "unix:///run/a/docker.sock"
    local = open_backend(HydraSettings(data_home=tmp_path), SecretMasker())
    assert isinstance(local, SandboxOrchestrator) and local.backend.host == "local"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("ssh://ops@build2.lan:2222", "ssh://build2.lan:2222"),
        ("ssh://ops@build2.lan", "ssh://build2.lan"),
        ("ssh://[fd00::2]", "ssh://[fd00::2]"),
        ("tcp://build1.lan", "tcp://build1.lan:2376"),
        ("unix:///run/b/docker.sock", "unix:///run/b/docker.sock"),
    ],
)
def test_the_host_a_session_shows_never_carries_a_user_name(url: str, host: str) -> None:
    (engine,) = parse_docker_hosts(url)
    assert engine_host(engine) == host


async def test_a_restarted_server_waits_for_a_sessions_engine_that_does_not_answer_and_then_re_attaches(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    a = fake_engine()
    b = FlakyRuntime(FakeProgram(output=[("stdout", CODEX_RUN)], keeps_running=True), images=[IMAGE])
    await foreign_agent(a)
    first, _placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    task, container_id = await run_until_started(first, b, request(workdir, "s-000000000001"))
    task.cancel()  # the server shuts down, and engine b stops answering for a while
    with pytest.raises(asyncio.CancelledError):
        await task
    b.down = True
    second, placed = engine_set(settings, run_dir, {"unix:///a.sock": a, "unix:///b.sock": b})
    assert await second.unanswered_hosts() == {"unix:///b.sock"}
    assert await second.live_sessions() == {"s-foreign00001"}  # b's agent cannot be seen
    sink = Sink()
    req = request(workdir, "s-000000000001", host="unix:///b.sock")
    follow = asyncio.create_task(second.follow(req, sink, asyncio.Event(), 0))
    await wait_for(lambda: b.calls.count("list_containers") >= 2, "it asked b again")
    assert not follow.done() and sink.drafts == []
    b.down = False
    await wait_for(lambda: bool(sink.drafts), "the replayed log")
    b.exit(container_id, 0)
    assert (await follow).status == "completed" and placed == [("s-000000000001", "unix:///b.sock")]


async def test_a_follow_waiting_for_its_engine_ends_cancelled_when_terminated(
    settings: HydraSettings, run_dir: Path, workdir: Path
) -> None:
    down = DownRuntime()
    sandbox, _placed = engine_set(settings, run_dir, {"unix:///a.sock": fake_engine(), "unix:///b.sock": down})
    cancel = asyncio.Event()
    req = request(workdir, "s-000000000001", host="unix:///b.sock")
    follow = asyncio.create_task(sandbox.follow(req, Sink(), cancel, 0))
    await wait_for(lambda: down.calls.count("list_containers") >= 2, "it waits for b")
    cancel.set()
    result = await follow
    assert result.status == "cancelled" and result.reason == "cancelled while its engine unix:///b.sock did not answer"


async def test_when_no_engine_answers_none_is_waited_for() -> None:
    settings = load_settings(agent_image=IMAGE)
    sandbox, _placed = engine_set(settings, Path("/nonexistent"), {"unix:///a.sock": DownRuntime()})
    assert await sandbox.unanswered_hosts() == set()
