"""The whole matrix: every tool, resource and prompt the two servers REGISTER, called by each principal.

- Every registered component has a row in the authority table, and every row is registered.
- The agents' server registers exactly the rows that allow agents.
- Over real HTTP (Unix sockets, real tokens): the operator is refused nothing by authority; an agent
  token on the operator's server (one that accepts both kinds) is refused exactly the rows that do not
  allow agents; on the agents' own endpoint those components do not even exist.

A new tool, resource or prompt fails this test until it has a row, and sample arguments below.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastmcp import Client, FastMCP
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.server.auth.auth import AccessToken, TokenVerifier

from hydra_sandbox.agent_endpoint import AgentEndpoint, AgentTokens
from hydra_sandbox.authority import (
    COMPONENTS,
    PROFILE_PROMPTS,
    Kind,
    Role,
    agent_components,
    component,
    component_key,
)
from hydra_sandbox.mcp.auth import AgentTokenVerifier, HydraTokenVerifier
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.hydra_server import hydra_servers
from tests.mcp_calls import call

OPERATOR_TOKEN = "operator-token-for-the-matrix"
DENIED = "AccessDenied:"


@dataclass(frozen=True)
class Ctx:
    workdir: str
    own: str
    """The agent's own session (finished, with a diff)."""


# Arguments for each registered tool: a call the principal could make on the agent's own session.
TOOL_ARGS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "spawn_agent": lambda c: {"working_dir": c.workdir, "parent_session_id": c.own},
    "list_agents": lambda c: {},
    "list_sessions": lambda c: {},
    "wait_session": lambda c: {"session_id": c.own, "timeout_s": 0},
    "tail_logs": lambda c: {"session_id": c.own},
    "summarize_session": lambda c: {"session_id": c.own},
    "terminate_session": lambda c: {"session_id": c.own, "reason": "matrix"},
    "resume_session": lambda c: {"session_id": c.own, "prompt": "again"},
    "log_context": lambda c: {"note": "matrix note", "session_id": c.own},
    "search_context": lambda c: {"query": "matrix"},
    "get_diff": lambda c: {"session_id": c.own},
    "apply_diff": lambda c: {"session_id": c.own},
    "discard_diff": lambda c: {"session_id": c.own},
}


class OperatorOrAgent(TokenVerifier):
    """An operator server that also accepts agent tokens: the case the table must hold on its own."""

    def __init__(self, *verifiers: TokenVerifier) -> None:
        super().__init__()
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self.verifiers:
            if (found := await verifier.verify_token(token)) is not None:
                return found
        return None


def over_socket(socket_path: Path, token: str) -> Client:
    def factory(**kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket_path)), **kwargs)

    return Client(StreamableHttpTransport("http://127.0.0.1:18081/mcp", auth=token, httpx_client_factory=factory))


@contextlib.asynccontextmanager
async def serving(app: Any, socket_path: Path) -> AsyncIterator[None]:
    endpoint = AgentEndpoint(socket_path, AgentTokens(socket_path.parent / "unused"))
    await endpoint.start(app)
    try:
        yield
    finally:
        await endpoint.stop()


async def registered(server: FastMCP) -> set[tuple[Kind, str]]:
    """What ``server`` registers (mounted servers included), as table keys; no middleware involved."""
    found = {(Kind.TOOL, t.name) for t in await server.list_tools(run_middleware=False)}
    found |= {(Kind.RESOURCE, str(r.uri)) for r in await server.list_resources(run_middleware=False)}
    found |= {(Kind.RESOURCE, t.uri_template) for t in await server.list_resource_templates(run_middleware=False)}
    found |= {
        (Kind.PROMPT, component_key(Kind.PROMPT, p.name, p.tags))
        for p in await server.list_prompts(run_middleware=False)
    }
    return found


async def attempt(client: Client, kind: Kind, key: str, ctx: Ctx, prompts: dict[str, str]) -> str | None:
    """Call one component; ``None`` when it answered, else the refusal's text."""
    try:
        if kind == Kind.TOOL:
            assert key in TOOL_ARGS, f"tool {key}: add sample arguments to TOOL_ARGS"
            result = await client.call_tool(key, TOOL_ARGS[key](ctx), raise_on_error=False)
            return " ".join(getattr(b, "text", "") for b in result.content) if result.is_error else None
        if kind == Kind.RESOURCE:
            await client.read_resource(key.replace("{session_id}", ctx.own))
            return None
        await client.get_prompt(prompts.get(key, key), {"task": "matrix"})
        return None
    except Exception as exc:  # the client raises a resource's or prompt's refusal
        return str(exc)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    return load_settings()


ROWS = {(c.kind, c.key) for c in COMPONENTS}
PROMPTS = {PROFILE_PROMPTS: "default"}


async def test_every_registered_component_has_a_row_and_agents_get_exactly_theirs(settings: HydraSettings) -> None:
    servers = hydra_servers(settings)
    on_agents = await registered(servers.agents)
    on_operator = await registered(servers.operator) | on_agents  # outside a request no mounted tool is listed
    assert on_operator - ROWS == set(), "registered without a row in hydra_sandbox.authority.COMPONENTS"
    assert ROWS - on_operator == set(), "a row of the table names nothing the server registers"
    agent_rows = {(k, key) for k in Kind for key in agent_components(k)}
    assert on_agents == agent_rows, "the agents' server must hold exactly what the table lets agents call"


@dataclass
class Clients:
    operator: Client
    agent_on_operator: Client
    """An agent token on an operator server that accepts both kinds."""
    agent: Client
    """An agent token on the agents' own server (what the endpoint in a sandbox serves)."""
    ctx: Ctx


@contextlib.asynccontextmanager
async def clients(settings: HydraSettings, workdir: Path) -> AsyncIterator[Clients]:
    tokens = AgentTokens(settings.agent_tokens_dir)
    servers = hydra_servers(
        settings, auth=OperatorOrAgent(HydraTokenVerifier(OPERATOR_TOKEN), AgentTokenVerifier(tokens))
    )
    base = Path(tempfile.mkdtemp(prefix="hydra-matrix-", dir="/tmp"))  # Unix socket paths must be short
    operator_socket, agent_socket = base / "op.sock", base / "agent.sock"
    try:
        async with (
            serving(servers.operator.http_app(path="/mcp"), operator_socket),
            over_socket(operator_socket, OPERATOR_TOKEN) as operator,
        ):
            own = (await call(operator, "spawn_agent", working_dir=str(workdir)))["session_id"]
            await call(operator, "wait_session", session_id=own, timeout_s=10)
            token = tokens.issue(own)
            async with (
                serving(servers.agents.http_app(path="/mcp"), agent_socket),
                over_socket(operator_socket, token) as agent_on_operator,
                over_socket(agent_socket, token) as agent,
            ):
                yield Clients(operator, agent_on_operator, agent, Ctx(workdir="/workspace", own=own))
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_each_principal_is_refused_exactly_what_the_table_refuses_it(
    settings: HydraSettings, tmp_path: Path
) -> None:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    async with clients(settings, workdir) as c:
        for kind, key in sorted(ROWS):
            row = component(kind, key)
            assert row is not None
            refusal = await attempt(c.agent_on_operator, kind, key, c.ctx, PROMPTS)
            if Role.AGENT in row.roles:
                assert refusal is None or DENIED not in refusal, f"agent refused {key}: {refusal}"
                continue
            assert refusal is not None and DENIED in refusal, f"agent not refused {key}: {refusal}"
            assert kind != Kind.TOOL or refusal.startswith(f"{DENIED} {key}: agent session"), refusal
            gone = await attempt(c.agent, kind, key, c.ctx, PROMPTS)
            assert gone is not None and (DENIED in gone or "Unknown" in gone), f"{key}: {gone}"
        operator_ctx = Ctx(workdir=str(workdir), own=c.ctx.own)
        for kind, key in sorted(ROWS):
            refusal = await attempt(c.operator, kind, key, operator_ctx, PROMPTS)
            assert refusal is None or DENIED not in refusal, f"operator refused {key}: {refusal}"
        for client in (c.agent, c.agent_on_operator):
            assert {t.name for t in await client.list_tools()} == agent_components(Kind.TOOL)
            templates = {t.uri_template for t in await client.list_resource_templates()}
            listed = {str(r.uri) for r in await client.list_resources()} | templates
            assert listed == agent_components(Kind.RESOURCE), "an agent lists only what it may call"
            assert await client.list_prompts() == []
