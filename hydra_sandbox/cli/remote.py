"""How CLI commands reach Hydra's state without corrupting it.

The journal (SQLite, WAL) may be read by anyone at any time. Everything else belongs to the running
server: when one runs over HTTP, commands call its MCP tools; when one runs over stdio (started by an
MCP host), commands that need it are refused with a clear message, because a second process must not
open its embedded Chroma store (see docs/architecture.md). With no server running, the command opens
the services itself, under the same lock a server takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from hydra_sandbox.errors import HydraError
from hydra_sandbox.indexer import Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.server_lock import ServerLock, running_server
from hydra_sandbox.settings import HydraSettings, load_settings
from hydra_sandbox.store import ContextStore


def refuse_if_server_owns_store(settings: HydraSettings, action: str) -> None:
    server = running_server(settings.data_home)
    if server is not None:
        raise HydraError(
            f"a Hydra server (pid {server.pid}, {server.transport}) owns {settings.data_home}; "
            f"`hydra {action}` needs the store to itself",
            hint="stop the server first, or use its MCP tools",
        )


@dataclasses.dataclass
class StoreAccess:
    journal: Journal
    store: ContextStore
    indexer: Indexer


@contextlib.contextmanager
def local_store(settings: HydraSettings) -> Iterator[StoreAccess]:
    """The journal and the index, opened by this process under the server lock (for reindex and prune):
    no manager is started, so no session changes state."""
    from hydra_sandbox.chroma_store import ChromaStore

    with ServerLock(settings.data_home, "cli", settings.http_host, settings.http_port, ""):
        journal = Journal(settings.journal_path)
        store = ChromaStore.from_settings(settings)
        try:
            yield StoreAccess(journal, store, Indexer(journal, store))
        finally:
            store.close()
            journal.close()


def server_call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a Hydra tool: on the running HTTP server, or in-process when no server runs."""
    settings = load_settings()
    server = running_server(settings.data_home)
    if server is not None and server.transport == "http" and server.url and server.token:
        return asyncio.run(_remote(server.url, server.token, tool, arguments))
    if server is not None:
        raise HydraError(
            f"a Hydra server (pid {server.pid}, {server.transport}) owns {settings.data_home}",
            hint=f"call {tool} from that server's MCP host, or run the server with --transport http",
        )
    return asyncio.run(_in_process(settings, tool, arguments))


async def _remote(url: str, token: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    from fastmcp import Client
    from fastmcp.client.auth import BearerAuth

    try:
        async with Client(url, auth=BearerAuth(token)) as client:
            return await _call(client, tool, arguments)
    except HydraError:
        raise
    except Exception as exc:  # transport failures: one line, never a traceback
        raise HydraError(
            f"could not call {tool} on the Hydra server at {url}: {type(exc).__name__}: {exc}",
            hint="check it with `hydra doctor`; if it is gone, its stale server.json is ignored on the next call",
        ) from None


async def _in_process(settings: HydraSettings, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    from fastmcp import Client

    from hydra_sandbox.mcp.app import build_server

    with ServerLock(settings.data_home, "cli", settings.http_host, settings.http_port, ""):
        async with Client(build_server(settings)) as client:
            return await _call(client, tool, arguments)


async def _call(client: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    if result.is_error:
        text = " ".join(getattr(b, "text", "") for b in result.content)
        raise HydraError(text or f"{tool} failed")
    return dict(result.structured_content or {})
