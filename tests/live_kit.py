"""What the live-update tests share: the official ``mcp`` client on Hydra's servers (in memory and over
streamable HTTP on a Unix socket), an inbox of the change notifications a 2025-era connection got,
and tool calls through that client."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
from fastmcp import FastMCP
from mcp import Client as McpClient
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ResourceListChangedNotification, ResourceUpdatedNotification

from hydra_sandbox.agent_endpoint import AgentEndpoint, AgentTokens
from tests.mcp_calls import until


class Inbox:
    """A 2025-era client's message handler: the URIs it was told were updated, in order."""

    def __init__(self) -> None:
        self.updated: list[str] = []
        self.list_changed = 0

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
        elif isinstance(message, ResourceListChangedNotification):
            self.list_changed += 1

    async def until_updated(self, uri: str) -> None:
        async def arrived() -> bool:
            return uri in self.updated

        await until(arrived, f"notifications/resources/updated for {uri}", timeout_s=30)


def in_memory(server: FastMCP, mode: str, inbox: Inbox | None = None) -> McpClient:
    """The official client on ``server``'s low-level server, in process (``legacy``: the 2025
    handshake over memory streams, as stdio carries it; a version: the 2026 per-request path)."""
    return McpClient(server._mcp_server, mode=mode, message_handler=inbox)


def over_socket(socket_path: Path, token: str, mode: str, inbox: Inbox | None = None) -> McpClient:
    """The official client over streamable HTTP on a Unix socket, with a bearer token."""
    http = httpx2.AsyncClient(
        transport=httpx2.AsyncHTTPTransport(uds=str(socket_path)), headers={"Authorization": f"Bearer {token}"}
    )
    return McpClient(streamable_http_client("http://127.0.0.1/mcp", http_client=http), mode=mode, message_handler=inbox)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[Path]:
    """``app`` served by uvicorn on a fresh Unix socket (short path: socket paths are bounded)."""
    base = Path(tempfile.mkdtemp(prefix="hydra-live-", dir="/tmp"))
    socket_path = base / "mcp.sock"
    endpoint = AgentEndpoint(socket_path, AgentTokens(base / "unused"))
    await endpoint.start(app)
    try:
        yield socket_path
    finally:
        await endpoint.stop()
        shutil.rmtree(base, ignore_errors=True)


async def tool(client: McpClient, name: str, **args: Any) -> dict[str, Any]:
    """The structured result of a tool call that must succeed."""
    result = await client.call_tool(name, args)
    text = " ".join(getattr(b, "text", "") for b in result.content)
    assert not result.is_error, f"{name}: {text}"
    assert result.structured_content is not None
    return result.structured_content


async def spawn(client: McpClient, workdir: Path, **args: Any) -> str:
    return str((await tool(client, "spawn_agent", working_dir=str(workdir), **args))["session_id"])


async def stop(client: McpClient, session_id: str) -> None:
    """Terminate a running session and wait until it has ended (its transition recorded)."""
    await tool(client, "terminate_session", session_id=session_id, reason="test")
    ended = await tool(client, "wait_session", session_id=session_id, timeout_s=30)
    assert ended["status"] == "cancelled", ended
