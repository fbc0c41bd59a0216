"""One in-memory Hydra for every test that drives the MCP server: the real operator server (the agents'
server mounted in it) over the fake sandbox, with an in-memory store unless a test asks for the real
embedded Chroma, reached through fastmcp's in-memory client.

``serve(...)`` gives the client and the services the server opened; ``operator_server(...)`` gives
the server itself (for its HTTP app or a client a test opens itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastmcp import Client, FastMCP
from fastmcp.server.auth.auth import TokenVerifier

from hydra_sandbox.mcp.app import HydraServers, build_servers
from hydra_sandbox.metrics import HydraMetrics
from hydra_sandbox.services import Services, open_services
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import ContextStore, InMemoryStore
from tests.fake_sandbox import FakeSandbox

TOOL_NAMES = (
    "spawn_agent",
    "list_agents",
    "list_sessions",
    "wait_session",
    "tail_logs",
    "summarize_session",
    "terminate_session",
    "resume_session",
    "log_context",
    "search_context",
    "get_diff",
    "apply_diff",
    "discard_diff",
)
"""Every tool the operator's server has (written out: a test must fail when one appears or goes)."""
REAL_STORE = "chroma"
"""Pass as ``store`` to open the real embedded ChromaStore (as ``hydra serve`` does)."""


@dataclass
class Hydra:
    client: Client
    services: Services


def operator_server(settings: HydraSettings, sandbox: FakeSandbox | None = None, **options: Any) -> FastMCP:
    """The operator's server of :func:`hydra_servers` (same options)."""
    return hydra_servers(settings, sandbox, **options).operator


def hydra_servers(
    settings: HydraSettings,
    sandbox: FakeSandbox | None = None,
    *,
    store: ContextStore | str | None = None,
    metrics: HydraMetrics | None = None,
    auth: TokenVerifier | None = None,
    opened: list[Services] | None = None,
) -> HydraServers:
    """Both servers (the agents' one mounted in the operator's) over ``sandbox`` (a new FakeSandbox by
    default) and ``store`` (in memory by default; :data:`REAL_STORE` for Chroma). The services the
    lifespan opens are appended to ``opened``."""
    fake = sandbox if sandbox is not None else FakeSandbox()

    @contextlib.asynccontextmanager
    async def factory(s: HydraSettings) -> AsyncIterator[Services]:
        chosen = None if store == REAL_STORE else (store if isinstance(store, ContextStore) else InMemoryStore())
        async with open_services(s, sandbox=fake, store=chosen) as services:
            if opened is not None:
                opened.append(services)
            yield services

    return build_servers(settings, services_factory=factory, auth=auth, metrics=metrics)


@contextlib.asynccontextmanager
async def serve(
    settings: HydraSettings,
    sandbox: FakeSandbox | None = None,
    *,
    store: ContextStore | str | None = None,
    metrics: HydraMetrics | None = None,
) -> AsyncIterator[Hydra]:
    """The operator's server running, and an in-memory client connected to it (the host, the operator)."""
    opened: list[Services] = []
    server = operator_server(settings, sandbox, store=store, metrics=metrics, opened=opened)
    async with Client(server) as client:
        yield Hydra(client, opened[0])
