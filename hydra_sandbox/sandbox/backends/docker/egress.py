"""Egress for agents on this machine's Docker: the relays run in Hydra's process, each behind a Unix
socket in a per-session directory that is bind-mounted (read-only) into the agent container.

The container keeps ``network_mode="none"``. Inside it ``hydra-agent-entry`` starts socat on
``127.0.0.1:EGRESS_PORT`` relaying to the socket, and Codex is pointed at it; there is no IP route out,
so a process that ignores the proxy variables reaches nothing. The same directory may hold a second
socket leading to Hydra's agent MCP endpoint (see :mod:`hydra_sandbox.agent_endpoint`), whatever the
network mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hydra_sandbox.agent_endpoint import MCP_PORT, MCP_SOCKET_NAME
from hydra_sandbox.egress_relay import ConnectRelay, ForwardRelay, UnixForwardRelay
from hydra_sandbox.sandbox.egress import (
    DEFAULT_MODEL_URL,
    EGRESS_PORT,
    ActiveEgress,
    EgressPlan,
    model_endpoint,
    runtime_dir,
)
from hydra_sandbox.sandbox.spec import Mount

SOCKET_DIR_IN_CONTAINER = "/run/hydra"
SOCKET_NAME = "egress.sock"
ENTRYPOINT = ["hydra-agent-entry"]


class HostSocketEgress:
    """The :class:`~hydra_sandbox.sandbox.egress.EgressPlacement` of the local Docker backend."""

    def __init__(self, base_dir: Callable[[], Path] = runtime_dir) -> None:
        self._base_dir = base_dir

    def socket_dir(self, session_id: str) -> Path:
        """The session's socket directory on this host (the one bind-mounted into its container)."""
        return self._base_dir() / session_id

    @contextlib.asynccontextmanager
    async def serve(self, plan: EgressPlan, mcp_target: Path | None = None) -> AsyncIterator[ActiveEgress]:
        """Serve the plan's relay (and, given ``mcp_target``, a relay to Hydra's agent MCP endpoint) for
        the duration of a run, then remove the socket directory (kept when the server shuts down mid-run,
        for the agent it is mounted in)."""
        model_base_url = None if plan.model_url == DEFAULT_MODEL_URL else plan.model_url
        if plan.relay == "none" and mcp_target is None:
            yield ActiveEgress(model_base_url=model_base_url)
            return
        socket_dir = self.socket_dir(plan.session_id)
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o755)
        mounts = [Mount(type="bind", source=str(socket_dir), target=SOCKET_DIR_IN_CONTAINER, read_only=True)]
        detached = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                env, model_base_url = await _relays(stack, plan, socket_dir, mcp_target, model_base_url)
                yield ActiveEgress(env=env, mounts=mounts, model_base_url=model_base_url, entrypoint=ENTRYPOINT)
        except asyncio.CancelledError:
            # Server shutdown: the agent keeps running with this directory bind-mounted, so it stays; the
            # next server serves new sockets in the same directory, which the container then sees.
            detached = True
            raise
        finally:
            if not detached:
                shutil.rmtree(socket_dir, ignore_errors=True)


async def _relays(
    stack: contextlib.AsyncExitStack,
    plan: EgressPlan,
    socket_dir: Path,
    mcp_target: Path | None,
    model_base_url: str | None,
) -> tuple[dict[str, str], str | None]:
    """Start the plan's relays on ``stack``; the container's environment and the model URL it uses."""
    env: dict[str, str] = {}
    if plan.relay != "none":
        env["HYDRA_EGRESS_SOCKET"] = f"{SOCKET_DIR_IN_CONTAINER}/{SOCKET_NAME}"
        env["HYDRA_EGRESS_PORT"] = str(EGRESS_PORT)
    if plan.relay == "forward":
        assert plan.forward_to is not None
        parts = urlsplit(plan.model_url)
        model_base_url = urlunsplit(("http", f"127.0.0.1:{EGRESS_PORT}", parts.path, parts.query, ""))
        await stack.enter_async_context(ForwardRelay(socket_dir / SOCKET_NAME, *plan.forward_to))
    elif plan.relay == "connect":
        _scheme, host, port = model_endpoint(plan.model_url)
        proxy = f"http://127.0.0.1:{EGRESS_PORT}"
        # Only Hydra's own relays listen on the container's loopback, so it needs no proxy.
        local = "127.0.0.1,localhost" if mcp_target is not None else ""
        env |= {k: proxy for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
        env |= {"NO_PROXY": local, "no_proxy": local}
        relay = ConnectRelay(
            socket_dir / SOCKET_NAME, allowed_domains=plan.allowed_domains, allowed_ports={443}, trusted={(host, port)}
        )
        await stack.enter_async_context(relay)
    if mcp_target is not None:
        env |= {"HYDRA_MCP_SOCKET": f"{SOCKET_DIR_IN_CONTAINER}/{MCP_SOCKET_NAME}", "HYDRA_MCP_PORT": str(MCP_PORT)}
        await stack.enter_async_context(UnixForwardRelay(socket_dir / MCP_SOCKET_NAME, mcp_target))
    return env, model_base_url
