"""SidecarEgress on the in-memory runtime: the gateway container beside a remote agent is hardened, holds
the model key only in a 0400 file of its own volume, shares nothing with the agent but the socket volume
(read-only there), reports usage through its log, and is removed on every way a run ends but a server
shutdown (then the next server finds it again)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.journal import Journal
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.policy import DelegationLimits, NetworkPolicy, Policy
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.backends.docker import docker_backend
from hydra_sandbox.sandbox.backends.docker.sidecar_egress import (
    CONFIG_FILE,
    GATEWAY_UID,
    SidecarEgress,
    config_archive,
    config_volume,
    gateway_name,
    socket_volume,
)
from hydra_sandbox.sandbox.budget import USAGE_EVENT, USAGE_STREAM, ModelBudget
from hydra_sandbox.sandbox.egress import ActiveEgress, EgressPlan, GatewaySecrets, plan_egress
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.gateway_process import GatewayProcessConfig
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, LABEL_SESSION, ContainerSpec
from hydra_sandbox.settings import load_settings

IMAGE = "hydra-gateway:test"
AGENT_IMAGE = "hydra-agent:fake"
KEY = "sk-test-do-not-leak-0123456789"
SESSION = "s-0000000c0de1"
READY = (b'{"ready":true}\n',)
USAGE = TokenUsage(input_tokens=7, output_tokens=5, total_tokens=12)


def gateway_program(*lines: bytes, exits: bool = False) -> FakeProgram:
    return FakeProgram(output=[("stdout", line) for line in lines], keeps_running=not exits, exit_code=1)


def runtime_with(program: FakeProgram) -> FakeRuntime:
    return FakeRuntime(
        lambda spec: program if spec.labels.get(LABEL_ROLE) == "gateway" else FakeProgram(), images=[IMAGE]
    )


def plan(mode: str = "model-only") -> EgressPlan:
    return plan_egress(NetworkPolicy(mode=mode), "http://10.0.0.1:8080/v1", SESSION)  # type: ignore[arg-type]


def egress(runtime: FakeRuntime, network: str = "bridge") -> SidecarEgress:
    return SidecarEgress(runtime, IMAGE, home="home-1", network=network)


async def gateway_up(active: ActiveEgress) -> None:
    """What the run awaits beside the agent: the agent's side is given before the gateway starts."""
    assert active.ready is not None, "the agent's side came after the gateway served"
    await active.ready()


def gateway_spec(runtime: FakeRuntime) -> ContainerSpec:
    (container,) = [c for c in runtime.containers.values() if c.spec.labels.get(LABEL_ROLE) == "gateway"]
    return container.spec


async def test_the_gateway_is_hardened_like_an_agent_and_is_the_only_one_with_a_network() -> None:
    runtime = runtime_with(gateway_program(*READY))
    async with egress(runtime, "hydra-egress-net").serve(plan(), secrets=GatewaySecrets()) as active:
        await gateway_up(active)
        spec = gateway_spec(runtime)
        assert spec.user == f"{GATEWAY_UID}:{GATEWAY_UID}" and spec.read_only_root and spec.cap_drop == ["ALL"]
        assert spec.no_new_privileges and not spec.privileged and not spec.devices and spec.network_mode == "none"
        assert spec.limits.pids > 0 and spec.limits.memory_mb <= 256 and spec.limits.cpus <= 1
        assert all(m.type == "volume" for m in spec.mounts) and not any("sock" in m.source for m in spec.mounts)
        assert spec.name == gateway_name(SESSION)
        assert spec.labels[LABEL_SESSION] == SESSION and spec.labels[LABEL_HOME] == "home-1"
        (gateway_id,) = runtime.networks_of
        assert runtime.networks_of[gateway_id] == "hydra-egress-net"
        assert active.network_mode == "none", "the agent itself gets no network"
        assert active.entrypoint == ["hydra-agent-entry"] and active.model_base_url == "http://127.0.0.1:18080/v1"


async def test_the_model_key_is_only_in_a_0400_file_of_the_gateways_own_volume() -> None:
    runtime = runtime_with(gateway_program(*READY))
    secrets = GatewaySecrets(model_key=SecretStr(KEY))
    async with egress(runtime).serve(plan(), secrets=secrets) as active:
        await gateway_up(active)
        spec = gateway_spec(runtime)
        shown = json.dumps([spec.env, spec.labels, spec.argv, active.model_dump()])
        assert KEY not in shown, "the key is in what docker inspect shows, or in what the agent gets"
        member, content = runtime.volume_files[config_volume(SESSION)][CONFIG_FILE]
        assert member.mode == 0o400 and member.uid == GATEWAY_UID
        assert GatewayProcessConfig.model_validate_json(content).model_key == SecretStr(KEY)
        assert KEY.encode() in content
        assert socket_volume(SESSION) not in runtime.volume_files, "the agent's volume got a file"
        assert config_volume(SESSION) not in {m.source for m in active.mounts}


async def test_the_agent_mounts_the_gateways_socket_volume_read_only() -> None:
    runtime = runtime_with(gateway_program(*READY))
    async with egress(runtime).serve(plan("allowlist"), secrets=GatewaySecrets()) as active:
        await gateway_up(active)
        (mount,) = active.mounts
        assert mount.type == "volume" and mount.read_only and mount.target == "/run/hydra"
        gateway_mount = next(m for m in gateway_spec(runtime).mounts if m.target == "/run/hydra")
        assert gateway_mount.source == mount.source == socket_volume(SESSION) and not gateway_mount.read_only
        assert active.env["HYDRA_EGRESS_SOCKET"] == "/run/hydra/egress.sock"
        assert active.env["HTTPS_PROXY"] == "http://127.0.0.1:18080"


async def test_the_gateway_and_its_volumes_go_when_the_run_ends_or_fails() -> None:
    for failing in (False, True):
        runtime = runtime_with(gateway_program(*READY))
        with pytest.raises(RuntimeError) if failing else contextlib.nullcontext():
            async with egress(runtime).serve(plan(), secrets=GatewaySecrets()) as active:
                await gateway_up(active)
                assert len(runtime.containers) == 1 and len(runtime.volumes) == 2
                if failing:
                    raise RuntimeError("the run failed")
        assert runtime.containers == {} and runtime.volumes == {}, f"left behind (failing={failing})"


async def test_a_server_shutdown_leaves_the_gateway_for_the_next_server_which_follows_it_again() -> None:
    runtime = runtime_with(gateway_program(*READY, USAGE_LINE := _usage_line(USAGE)))
    first_usage: list[TokenUsage] = []
    entered = asyncio.Event()

    async def run_until_cancelled() -> None:
        async with egress(runtime).serve(plan(), secrets=GatewaySecrets(), on_usage=first_usage.append) as active:
            await gateway_up(active)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run_until_cancelled())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(runtime.running()) == 1 and len(runtime.volumes) == 2, "the gateway did not stay for the agent"
    created = runtime.calls.count("create_networked")
    second_usage: list[TokenUsage] = []
    async with egress(runtime).serve(plan(), secrets=GatewaySecrets(), on_usage=second_usage.append):
        await _until(lambda: bool(second_usage))
    assert runtime.calls.count("create_networked") == created, "a second gateway was started"
    assert second_usage == [USAGE] and USAGE_LINE.startswith(b'{"usage"')
    assert runtime.containers == {} and runtime.volumes == {}


async def test_a_spent_budget_stops_the_gateway() -> None:
    runtime = runtime_with(gateway_program(*READY, _usage_line(USAGE)))
    async with egress(runtime).serve(plan(), secrets=GatewaySecrets(), on_usage=lambda _u: "budget spent"):
        await _until(lambda: "kill" in runtime.calls)
        assert runtime.running() == []


async def test_a_gateway_that_exits_before_it_is_ready_fails_the_run_naming_why_and_leaves_nothing() -> None:
    stderr = b"gateway: cannot read its configuration x: plan: Field required\n"
    runtime = runtime_with(FakeProgram(output=[("stderr", stderr)], exit_code=1))
    with pytest.raises(
        RuntimeUnavailableError, match="exited with 1: gateway: cannot read its configuration"
    ) as raised:
        async with egress(runtime).serve(plan(), secrets=GatewaySecrets()) as active:
            await gateway_up(active)
            pytest.fail("served without a ready gateway")
    assert "hydra images copy" in (raised.value.hint or "")
    assert runtime.containers == {} and runtime.volumes == {}


async def test_delegation_and_the_engines_own_network_are_refused() -> None:
    runtime = runtime_with(gateway_program(*READY))
    with pytest.raises(ConfigError, match="agent MCP gateway cannot run beside an agent on a remote engine"):
        async with egress(runtime).serve(plan(), Path("/tmp/hydra-mcp.sock"), secrets=GatewaySecrets()):
            pass
    assert runtime.containers == {}
    for network in ("host", "none", "container:hydra-x"):
        with pytest.raises(ConfigError, match="HYDRA_GATEWAY_NETWORK"):
            egress(runtime, network)


async def test_no_gateway_runs_for_a_session_without_egress() -> None:
    runtime = runtime_with(gateway_program(*READY))
    async with egress(runtime).serve(plan("none"), secrets=GatewaySecrets()) as active:
        assert active.mounts == [] and active.env == {} and active.network_mode == "none"
    assert runtime.calls == []


def test_the_configuration_archive_is_one_file_with_the_key_in_clear_for_the_gateway_alone() -> None:
    data = config_archive(GatewayProcessConfig(plan=plan(), model_key=SecretStr(KEY)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode, member.uid, member.isreg()) == (CONFIG_FILE, 0o400, GATEWAY_UID, True)
        assert json.loads(tar.extractfile(member).read())["model_key"] == KEY  # type: ignore[union-attr]


def _usage_line(usage: TokenUsage) -> bytes:
    return json.dumps({"usage": usage.model_dump()}).encode() + b"\n"


async def _until(done: Callable[[], bool], deadline_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not done():
        assert loop.time() < end, "not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_a_delegating_run_on_a_remote_engine_runs_without_delegation_says_why_and_removes_the_agent_first(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    settings = load_settings(data_home=tmp_path / "data", agent_image=AGENT_IMAGE, model_base_url="http://m:1/v1")
    agent = FakeProgram(output=[("stdout", b'{"type": "thread.started", "thread_id": "t"}\n')], keeps_running=True)
    runtime = FakeRuntime(
        lambda spec: gateway_program(*READY) if spec.labels.get(LABEL_ROLE) == "gateway" else agent,
        images=[IMAGE, AGENT_IMAGE],
    )
    in_use: list[str] = []
    real_remove_volume = runtime.remove_volume

    async def remove_volume(name: str) -> None:
        in_use.extend(name for c in runtime.containers.values() for m in c.spec.mounts if m.source == name)
        await real_remove_volume(name)

    runtime.remove_volume = remove_volume  # type: ignore[method-assign]
    backend = Backend("docker", runtime, docker_backend(settings, runtime).workspace, egress(runtime))
    tokens = AgentTokens(tmp_path / "tokens")
    endpoint: Any = type("Endpoint", (), {"socket_path": tmp_path / "e.sock", "tokens": tokens, "serving": True})()
    sandbox = SandboxOrchestrator(settings, SecretMasker(), backend, endpoint)
    policy = Policy(name="t", network=NetworkPolicy(mode="model-only"), delegation=DelegationLimits(max_depth=1))
    request = RunRequest(session_id=SESSION, profile_id="p", policy=policy, prompt="go", working_dir=workdir, model="m")
    said: list[EventDraft] = []

    async def sink(draft: EventDraft) -> None:
        said.append(draft)

    task = asyncio.create_task(sandbox.run(request, sink, asyncio.Event()))
    await _until(lambda: any(c.spec.labels.get(LABEL_ROLE) == "agent" for c in runtime.containers.values()))
    (agent_id,) = [c.id for c in runtime.containers.values() if c.spec.labels.get(LABEL_ROLE) == "agent"]
    spec = runtime.containers[agent_id].spec
    runtime.exit(agent_id, 0)
    assert (await task).status == "completed"
    assert "HYDRA_MCP_SOCKET" not in spec.env and not list((tmp_path / "tokens").glob("*"))
    assert any(d.data.get("delegation") == "off" and "HYDRA_AGENT_MCP" in d.text for d in said)
    assert in_use == [], f"volumes removed while a container still mounted them: {in_use}"
    assert not [c for c in runtime.containers.values() if c.spec.labels.get(LABEL_ROLE) == "gateway"]


async def test_a_gateway_image_missing_on_the_engine_is_named_with_the_commands_that_put_it_there() -> None:
    runtime = FakeRuntime(images=[])
    with pytest.raises(RuntimeUnavailableError, match=f"gateway image {IMAGE} is missing") as raised:
        async with egress(runtime).serve(plan(), secrets=GatewaySecrets()):
            pytest.fail("served without a gateway image")
    assert "hydra images build --gateway" in (raised.value.hint or "")
    assert runtime.containers == {} and runtime.volumes == {}


async def test_a_re_attach_counts_the_gateways_usage_again_but_records_each_event_once(tmp_path: Path) -> None:
    ref, path = SessionRef(session_id=SESSION), tmp_path / "journal.sqlite3"

    async def one_server(*seqs: int) -> int:
        journal = Journal(path)
        recorder = Recorder(journal, SecretMasker())
        await recorder.track(ref, None)

        handled: list[EventDraft] = []

        async def sink(draft: EventDraft) -> None:
            await recorder.record(ref, draft.model_copy(update={"data": {**draft.data, "run": 0}}))
            handled.append(draft)

        budget = ModelBudget(SESSION, None, sink)
        lines = [_usage_line(USAGE.model_copy(update={"seq": seq})) for seq in seqs]
        runtime = runtime_with(gateway_program(*READY, *lines))
        async with egress(runtime).serve(plan(), secrets=GatewaySecrets(), on_usage=budget):
            # the budget counts before its event is handed on: wait for the recorder, not the count
            await _until(lambda: len(handled) == len(seqs))
        journal.close()
        return budget.used

    assert await one_server(0) == 12
    assert await one_server(0, 1) == 24, "the new server counts the whole run"
    usage = [e for e in Journal(path).events(SESSION) if e.data.get("gateway") == USAGE_EVENT]
    assert [(e.data["stream"], e.data["seq"]) for e in usage] == [(USAGE_STREAM, 0), (USAGE_STREAM, 1)]


def remote_run(tmp_path: Path, runtime: FakeRuntime) -> tuple[SandboxOrchestrator, RunRequest]:
    """An orchestrator over ``runtime`` with the remote engine's workspace transport and gateway, and a
    ``model-only`` run request for it."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    settings = load_settings(data_home=tmp_path / "data", agent_image=AGENT_IMAGE, model_base_url="http://m:1/v1")
    backend = Backend("docker", runtime, docker_backend(settings, runtime).workspace, egress(runtime))
    policy = Policy(name="t", network=NetworkPolicy(mode="model-only"))
    request = RunRequest(session_id=SESSION, profile_id="p", policy=policy, prompt="go", working_dir=workdir, model="m")
    return SandboxOrchestrator(settings, SecretMasker(), backend), request


async def _no_events(draft: EventDraft) -> None:
    return None


def role_of(runtime: FakeRuntime, role: str) -> list[str]:
    return [c.id for c in runtime.containers.values() if c.spec.labels.get(LABEL_ROLE) == role]


async def test_the_agents_container_is_created_and_started_while_its_gateway_still_starts(tmp_path: Path) -> None:
    agent = FakeProgram(output=[("stdout", b'{"type": "thread.started", "thread_id": "t"}\n')], keeps_running=True)
    runtime = FakeRuntime(
        lambda spec: gateway_program(*READY) if spec.labels.get(LABEL_ROLE) == "gateway" else agent,
        images=[IMAGE, AGENT_IMAGE],
    )
    real_create_networked = runtime.create_networked
    agent_seen: list[ContainerSpec] = []

    async def create_networked(spec: ContainerSpec, network: str) -> str:
        """The gateway is created only once the agent runs: a run that waited for it would never start."""
        await _until(lambda: any(runtime.containers[i].status == "running" for i in role_of(runtime, "agent")), 10)
        agent_seen.append(runtime.containers[role_of(runtime, "agent")[0]].spec)
        return await real_create_networked(spec, network)

    runtime.create_networked = create_networked  # type: ignore[method-assign]
    sandbox, request = remote_run(tmp_path, runtime)
    task = asyncio.create_task(sandbox.run(request, _no_events, asyncio.Event()))
    await _until(lambda: bool(role_of(runtime, "gateway")), 10)
    (spec,) = agent_seen
    socket_mount = next(m for m in spec.mounts if m.target == "/run/hydra")
    assert socket_mount.read_only and socket_mount.source in runtime.volumes, "the agent mounted no made volume"
    assert spec.env["HYDRA_EGRESS_WAIT_S"] == "60" and spec.network_mode == "none"
    runtime.exit(role_of(runtime, "agent")[0], 0)
    assert (await task).status == "completed"
    assert runtime.containers == {}


async def test_a_gateway_that_never_serves_stops_the_started_agent_and_fails_the_run_with_its_reason(
    tmp_path: Path,
) -> None:
    stderr = b"gateway: cannot read its configuration x: plan: Field required\n"
    runtime = FakeRuntime(
        lambda spec: (
            FakeProgram(output=[("stderr", stderr)], exit_code=1)
            if spec.labels.get(LABEL_ROLE) == "gateway"
            else FakeProgram(keeps_running=True)
        ),  # an agent whose entry still waits for the sockets
        images=[IMAGE, AGENT_IMAGE],
    )
    sandbox, request = remote_run(tmp_path, runtime)
    with pytest.raises(RuntimeUnavailableError, match="exited with 1: gateway: cannot read its configuration"):
        await asyncio.wait_for(sandbox.run(request, _no_events, asyncio.Event()), 30)
    assert runtime.calls.count("start") == 2, "the agent did not start beside its gateway"
    assert runtime.containers == {}, "the agent or the gateway was left behind"
    assert not [v for v in runtime.volumes if v.startswith(("hydra-egress-", "hydra-gwconf-"))]


async def test_an_agent_that_cannot_be_created_while_its_gateway_starts_leaves_neither_behind(tmp_path: Path) -> None:
    runtime = runtime_with(gateway_program(*READY))
    real_create, real_create_networked = runtime.create, runtime.create_networked
    agent_refused = asyncio.Event()

    async def create(spec: ContainerSpec) -> str:
        if spec.labels.get(LABEL_ROLE) == "agent":
            agent_refused.set()
            raise RuntimeUnavailableError("Docker refused: no space left on device")
        return await real_create(spec)

    async def create_networked(spec: ContainerSpec, network: str) -> str:
        await asyncio.wait_for(agent_refused.wait(), 10)  # the gateway's start is under way as the run fails
        return await real_create_networked(spec, network)

    runtime.create = create  # type: ignore[method-assign]
    runtime.create_networked = create_networked  # type: ignore[method-assign]
    runtime.images.add(AGENT_IMAGE)
    sandbox, request = remote_run(tmp_path, runtime)
    with pytest.raises(RuntimeUnavailableError, match="no space left on device"):
        await asyncio.wait_for(sandbox.run(request, _no_events, asyncio.Event()), 30)
    assert "create_networked" in runtime.calls, "the gateway's start was not under way"
    assert runtime.containers == {} and not [
        v for v in runtime.volumes if v.startswith(("hydra-egress-", "hydra-gwconf-"))
    ]
