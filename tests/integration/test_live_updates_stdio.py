"""Live updates over a real stdio transport: `hydra serve` started as a subprocess by the official
``mcp`` client, as an MCP host starts it. A session whose agent image does not exist fails at once, so
its transitions happen without running an agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp import Client as McpClient
from mcp.client.stdio import StdioServerParameters, stdio_client

from hydra_sandbox.mcp.live import session_uri
from tests.live_kit import Inbox, spawn, tool

pytestmark = pytest.mark.docker


async def test_a_2025_client_over_stdio_is_told_each_transition_of_the_session_it_spawned(tmp_path: Path) -> None:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "README.md").write_text("hello\n")
    env = {
        **os.environ,
        "HYDRA_DATA_HOME": str(tmp_path / "data"),
        "HYDRA_AGENT_IMAGE": f"hydra-agent:missing-{os.getpid()}",  # the run fails before any container
        "HYDRA_TRANSPORT": "stdio",
    }
    server = StdioServerParameters(command=sys.executable, args=["-m", "hydra_sandbox", "serve"], env=env)
    inbox = Inbox()
    async with McpClient(stdio_client(server), mode="legacy", message_handler=inbox) as client:
        session_id = await spawn(client, workdir)
        ended = await tool(client, "wait_session", session_id=session_id, timeout_s=60)
        assert ended["status"] == "failed", ended
        await inbox.until_updated(session_uri(session_id))
        other = await spawn(client, workdir)
        await tool(client, "wait_session", session_id=other, timeout_s=60)
        await inbox.until_updated(session_uri(other))
