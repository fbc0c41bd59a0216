"""The MCP endpoint agents delegate through: per-run tokens, the Unix socket, and what a token may see."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from hydra_sandbox.agent_endpoint import AgentEndpoint, AgentTokens
from hydra_sandbox.authority import OPERATOR, Agent
from hydra_sandbox.mcp.app import build_agent_server
from hydra_sandbox.mcp.auth import AgentTokenVerifier
from hydra_sandbox.mcp.middleware import ServicesRef
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.services import Services, open_services
from hydra_sandbox.settings import HydraSettings, load_settings
from hydra_sandbox.store import InMemoryStore
from tests.fake_sandbox import FakeSandbox


def test_tokens_are_stored_only_as_hashes_and_revoked_with_their_session(tmp_path: Path) -> None:
    tokens = AgentTokens(tmp_path / "tokens")
    first, second, other = tokens.issue("s1"), tokens.issue("s1"), tokens.issue("s2")
    assert len({first, second, other}) == 3
    assert tokens.session_for(first) == "s1" and tokens.session_for(other) == "s2"
    for path in (tmp_path / "tokens").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert first not in path.name and first not in path.read_text()
    assert tokens.session_for("made-up") is None and tokens.session_for("") is None
    assert tokens.session_for("x" * 10_000) is None
    assert tokens.revoke("s1") == 2
    assert tokens.session_for(first) is None and tokens.session_for(other) == "s2"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    return load_settings()


@contextlib.asynccontextmanager
async def agent_endpoint(
    settings: HydraSettings, services: Services, socket_path: Path
) -> AsyncIterator[AgentEndpoint]:
    endpoint = AgentEndpoint(socket_path, AgentTokens(settings.agent_tokens_dir))
    server = build_agent_server(ServicesRef(services), auth=AgentTokenVerifier(endpoint.tokens), metrics=None)
    await endpoint.start(server.http_app(path="/mcp"))
    try:
        yield endpoint
    finally:
        await endpoint.stop()


def over_socket(socket_path: Path, token: str) -> Client:
    def factory(**kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket_path)), **kwargs)

    return Client(StreamableHttpTransport("http://127.0.0.1:18081/mcp", auth=token, httpx_client_factory=factory))


async def test_an_agent_token_spawns_below_its_own_session_and_sees_nothing_else(
    settings: HydraSettings, tmp_path: Path
) -> None:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    socket_path = Path(f"/tmp/hydra-test-{os.getpid()}-{id(tmp_path)}.sock")
    async with open_services(settings, sandbox=FakeSandbox(), store=InMemoryStore()) as services:
        manager = services.manager
        parent = (await manager.spawn(_request(workdir), principal=OPERATOR)).session["session_id"]
        stranger = (await manager.spawn(_request(workdir), principal=OPERATOR)).session["session_id"]
        async with agent_endpoint(settings, services, socket_path) as endpoint:
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
            token = endpoint.tokens.issue(parent)
            async with over_socket(socket_path, token) as client:
                child = await client.call_tool("spawn_agent", {"working_dir": "/workspace", "custom_prompt": "sub"})
                assert child.structured_content is not None
                record = manager.get(child.structured_content["session_id"], principal=OPERATOR)
                assert record.parent_session_id == parent and record.working_dir == workdir.resolve()
                listed = (await client.call_tool("list_sessions", {})).structured_content
                assert listed is not None
                assert {s["session_id"] for s in listed["sessions"]} == {parent, record.session_id}
                denied = await client.call_tool("get_diff", {"session_id": stranger}, raise_on_error=False)
                assert denied.is_error and "not visible to agent session" in str(denied.content)
                denied = await client.call_tool(
                    "spawn_agent", {"working_dir": "/workspace", "parent_session_id": stranger}, raise_on_error=False
                )
                assert denied.is_error and "not visible" in str(denied.content)
            assert await _status_with(socket_path, token) != 401
            endpoint.tokens.revoke(parent)
            assert await _status_with(socket_path, token) == 401, "a revoked token still works"
            assert await _status_with(socket_path, "made-up") == 401
        assert not socket_path.exists(), "the endpoint's socket outlived it"


async def test_agent_callers_default_to_their_own_session_as_parent(settings: HydraSettings, tmp_path: Path) -> None:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    async with open_services(settings, sandbox=FakeSandbox(), store=InMemoryStore()) as services:
        manager = services.manager
        parent = (await manager.spawn(_request(workdir), principal=OPERATOR)).session["session_id"]
        agent = Agent(session_id=parent)
        child = (await manager.spawn(_request("/workspace/"), agent)).session
        assert child["parent_session_id"] == parent
        grandchild = (await manager.spawn(_request(str(workdir), parent=child["session_id"]), agent)).session
        assert grandchild["parent_session_id"] == child["session_id"]


def _request(working_dir: Path | str, parent: str | None = None) -> SpawnRequest:
    return SpawnRequest(working_dir=str(working_dir), parent_session_id=parent)


async def _status_with(socket_path: Path, token: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket_path))) as http:
        response = await http.post("http://127.0.0.1:18081/mcp", json=body, headers=headers)
        return response.status_code
