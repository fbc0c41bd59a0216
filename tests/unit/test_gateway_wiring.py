"""A run's gateways, wired by the orchestrator over the in-memory runtime (no Docker): the agent's
container is given sockets and ports only, never the model key nor its Hydra token, while what comes
out of those sockets reaches the model with the key and Hydra's agent endpoint with the token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import DelegationLimits, NetworkPolicy, Policy
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.backends.docker import docker_backend
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.egress import GatewaySecrets, plan_egress
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.gateways import session_gateways
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.spec import ContainerSpec
from hydra_sandbox.settings import load_settings
from tests.unit.test_model_gateway import Upstream, ask, request

IMAGE = "hydra-agent:fake"
KEY = "sk-proj-WIRINGwiringWIRING0123456789abcdef"
RUN = b'{"type": "thread.started", "thread_id": "t"}\n'

SID = "s-000000000001"


class Endpoint:
    """Stands in for the agent endpoint: serving, a socket, real token storage."""

    def __init__(self, socket_path: Path, tokens: AgentTokens) -> None:
        self.socket_path, self.tokens, self.serving = socket_path, tokens, True


def _request(workdir: Path, mode: str, **network: Any) -> RunRequest:
    policy = Policy(
        name="t", network=NetworkPolicy(mode=mode, **network), delegation=DelegationLimits(max_depth=1)
    )
    return RunRequest(session_id=SID, profile_id="p", policy=policy, prompt="go", working_dir=workdir, model="m")


def _secret_free(spec: ContainerSpec, *secrets: str) -> None:
    seen = json.dumps({"env": spec.env, "argv": spec.argv, "mounts": [m.model_dump() for m in spec.mounts]})
    for secret in secrets:
        assert secret not in seen
    assert "OPENAI_API_KEY" not in spec.env and "HYDRA_AGENT_TOKEN" not in spec.env
    assert "bearer_token_env_var" not in seen and "env_key" not in seen


async def test_a_delegating_run_holds_no_key_nor_token_and_its_sockets_add_both_on_the_host(
    tmp_path: Path, run_dir: Path
) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    tokens = AgentTokens(tmp_path / "tokens")
    async with Upstream() as model, Upstream(unix=run_dir / "endpoint.sock") as endpoint:
        settings = load_settings(
            data_home=tmp_path / "data", agent_image=IMAGE, model_base_url=model.url, model_api_key=KEY
        )
        runtime = FakeRuntime(FakeProgram(output=[("stdout", RUN)], keeps_running=True), images=[IMAGE])
        egress = HostSocketEgress(lambda: run_dir)
        backend = Backend("docker", runtime, docker_backend(settings, runtime).workspace, egress)
        agent_endpoint: Any = Endpoint(run_dir / "endpoint.sock", tokens)
        sandbox = SandboxOrchestrator(settings, SecretMasker(), backend, agent_endpoint)
        task = asyncio.create_task(sandbox.run(_request(workdir, "model-only"), _sink, asyncio.Event()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not runtime.running():
            assert loop.time() < deadline, "the agent never started"
            await asyncio.sleep(0.01)
        cid = runtime.running()[0]
        spec = runtime.containers[cid].spec
        token_files = list((tmp_path / "tokens").iterdir())
        assert len(token_files) == 1 and token_files[0].read_text() == SID
        model_answer = await ask(run_dir / SID / "egress.sock", request(extra="authorization: Bearer mine\r\n"))
        mcp_request = request(target="/mcp").replace(b"host: 127.0.0.1:18080", b"host: 127.0.0.1:18081")
        mcp_answer = await ask(run_dir / SID / "hydra-mcp.sock", mcp_request)
        runtime.exit(cid, 0)
        assert (await task).status == "completed"
    assert model_answer.status == 200 and mcp_answer.status == 200
    assert model.seen[0].header("authorization") == [f"Bearer {KEY}"]
    (bearer,) = endpoint.seen[0].header("authorization")
    token = bearer.removeprefix("Bearer ")
    _secret_free(spec, KEY, token)
    assert spec.env["HYDRA_MCP_SOCKET"] == "/run/hydra/hydra-mcp.sock"
    assert "model_providers.hydra=" in " ".join(spec.argv) and "http://127.0.0.1:18080/v1" in " ".join(spec.argv)
    assert tokens.session_for(token) is None, "the run's token outlived the run"


async def _sink(_draft: object) -> None:
    return None


async def test_an_https_model_is_reached_through_the_gateway_in_plain_http_without_a_proxy(run_dir: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="model-only"), "https://models.example/v1", SID)
    async with HostSocketEgress(lambda: run_dir).serve(plan, secrets=GatewaySecrets(model_key=SecretStr(KEY))) as a:
        assert a.model_base_url == "http://127.0.0.1:18080/v1"
        assert not {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY"} & set(a.env)
        assert KEY not in json.dumps(a.model_dump(mode="json"))


async def test_allowlist_mode_tunnels_connect_on_the_model_socket_to_listed_public_names_only(
    tmp_path: Path, run_dir: Path
) -> None:
    async with Upstream() as model:
        network = NetworkPolicy(mode="allowlist", allow_domains=["localhost", "pkg.example"])
        plan = plan_egress(network, model.url, SID)
        async with HostSocketEgress(lambda: run_dir).serve(plan, secrets=GatewaySecrets(model_key=SecretStr(KEY))) as a:
            sock = run_dir / SID / "egress.sock"
            assert a.env["HTTPS_PROXY"] == "http://127.0.0.1:18080" and a.env["NO_PROXY"] == "127.0.0.1,localhost"
            ok = await ask(sock, request())
            refused = [
                await ask(sock, f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n".encode())
                for target in ("not-listed.example:443", f"localhost:{model.port}", "localhost:443", "127.0.0.1:443")
            ]
    assert ok.status == 200 and model.seen[0].header("authorization") == [f"Bearer {KEY}"]
    # unlisted; a port other than 443 (the model's own port is not trusted here); a listed name that
    # resolves to loopback; an IP literal: each refused before any byte reached the model server
    assert [r.status for r in refused] == [403, 403, 403, 403]
    assert len(model.seen) == 1 and model.connections == 1


def test_a_delegating_run_without_a_token_is_refused_before_anything_is_served(tmp_path: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="none"), None, SID)
    with pytest.raises(ConfigError, match=f"session {SID}.*token"):
        session_gateways(plan, tmp_path, GatewaySecrets(), mcp_target=tmp_path / "endpoint.sock")


async def test_past_its_token_budget_a_run_is_refused_further_model_requests_and_fails_with_the_reason(
    tmp_path: Path, run_dir: Path
) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    drafts: list[EventDraft] = []

    async def sink(draft: EventDraft) -> None:
        drafts.append(draft)

    async with Upstream() as model:  # every answer reports 3 input + 4 output tokens
        settings = load_settings(data_home=tmp_path / "data", agent_image=IMAGE, model_base_url=model.url)
        runtime = FakeRuntime(FakeProgram(output=[("stdout", RUN)], keeps_running=True), images=[IMAGE])
        egress = HostSocketEgress(lambda: run_dir)
        backend = Backend("docker", runtime, docker_backend(settings, runtime).workspace, egress)
        sandbox = SandboxOrchestrator(settings, SecretMasker(), backend)
        run = _request(workdir, "model-only")
        limits = run.policy.resources.model_copy(update={"max_model_tokens": 10})
        run = run.model_copy(update={"policy": run.policy.model_copy(update={"resources": limits})})
        task = asyncio.create_task(sandbox.run(run, sink, asyncio.Event()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not runtime.running():
            assert loop.time() < deadline, "the agent never started"
            await asyncio.sleep(0.01)
        sock = run_dir / SID / "egress.sock"
        answers = [await ask(sock, request()) for _ in range(3)]
        runtime.exit(runtime.running()[0], 1)  # Codex ends on the refusal
        result = await task
    assert [a.status for a in answers] == [200, 200, 429] and len(model.seen) == 2  # the third never left
    assert "max_model_tokens is 10" in answers[2].error
    assert result.status == "failed" and result.reason is not None and "used 14 tokens" in result.reason
    usage = [d for d in drafts if d.data.get("gateway") == "model_usage"]
    assert [d.data["session_tokens"] for d in usage] == [7, 14] and usage[0].type == "status"
    assert usage[0].data["model_usage"]["input_tokens"] == 3 and usage[0].data["max_model_tokens"] == 10
    (spent,) = [d for d in drafts if d.data.get("gateway") == "model_budget_spent"]
    assert spent.type == "error" and "max_model_tokens is 10" in spent.text


async def test_a_chatgpt_sign_in_without_a_key_refuses_the_run_before_anything_starts(
    tmp_path: Path, run_dir: Path
) -> None:
    codex_home = tmp_path / "codex"
    codex_home.mkdir()
    (codex_home / "auth.json").write_text(json.dumps({"tokens": {"access_token": "chatgpt-access-xyz"}}))
    workdir = tmp_path / "w"
    workdir.mkdir()
    settings = load_settings(data_home=tmp_path / "data", agent_image=IMAGE, codex_home=codex_home)
    runtime = FakeRuntime(FakeProgram(output=[("stdout", RUN)]), images=[IMAGE])
    backend = Backend("docker", runtime, docker_backend(settings, runtime).workspace, HostSocketEgress(lambda: run_dir))
    sandbox = SandboxOrchestrator(settings, SecretMasker(), backend)
    refusal = rf"session {SID}: no model API key: .*ChatGPT sign-in.*codex login --with-api-key"
    with pytest.raises(ConfigError, match=refusal):
        await sandbox.run(_request(workdir, "model-only"), _sink, asyncio.Event())
    assert runtime.containers == {} and not (settings.sessions_dir / SID).exists()


async def test_bytes_sent_after_a_connect_head_before_the_tunnel_exists_are_refused(run_dir: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="allowlist", allow_domains=["pkg.example"]), None, SID)
    async with HostSocketEgress(lambda: run_dir).serve(plan):
        raw = b"CONNECT pkg.example:443 HTTP/1.1\r\nhost: pkg.example:443\r\n\r\n\x16\x03\x01early"
        answer = await ask(run_dir / SID / "egress.sock", raw)
    assert answer.status == 400 and "before the tunnel" in answer.error


async def test_delegating_runs_do_not_grow_the_masker_and_each_runs_token_is_masked_by_its_form(
    tmp_path: Path, run_dir: Path
) -> None:
    """Each run's token used to be added to the masker, whose known-value database is recompiled per
    addition: spawns got slower with every run (0.8 s after 40). Tokens are masked by the built-in rule."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    tokens = AgentTokens(tmp_path / "tokens")
    issued: list[str] = []
    issue = tokens.issue

    def recording_issue(session_id: str) -> str:
        issued.append(issue(session_id))
        return issued[-1]

    tokens.issue = recording_issue  # type: ignore[method-assign]
    masker = SecretMasker()
    settings = load_settings(data_home=tmp_path / "data", agent_image=IMAGE, model_base_url="http://127.0.0.1:9/v1")
    runtime = FakeRuntime(FakeProgram(output=[("stdout", RUN)]), images=[IMAGE])
    backend = Backend("docker", runtime, docker_backend(settings, runtime).workspace, HostSocketEgress(lambda: run_dir))
    endpoint: Any = Endpoint(run_dir / "endpoint.sock", tokens)
    sandbox = SandboxOrchestrator(settings, masker, backend, endpoint)
    known = []
    for run_index in range(3):
        request = _request(workdir, "model-only").model_copy(update={"run_index": run_index})
        assert (await sandbox.run(request, _sink, asyncio.Event())).status == "completed"
        known.append(masker.known_forms)
    assert len(issued) == 3 and len(set(issued)) == 3
    assert known[0] == known[1] == known[2], "a run's token was added to the known-value database"
    for token in issued:
        assert token.startswith("hydra_at_") and token not in masker.mask(f"leaked: Bearer {token}.")
