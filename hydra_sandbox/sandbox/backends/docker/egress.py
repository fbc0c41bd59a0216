"""Egress for agents on this machine's Docker: the session's gateways
(:func:`~hydra_sandbox.sandbox.gateways.session_gateways`) run in Hydra's process, each behind a Unix
socket in a per-session directory that is bind-mounted (read-only) into the agent container.

The container keeps ``network_mode="none"``. Inside it ``hydra-agent-entry`` starts socat on
``127.0.0.1:EGRESS_PORT`` (and ``MCP_PORT``) relaying to the sockets, and Codex is pointed at them; there
is no IP route out, so a process that ignores the proxy variables reaches nothing. The model key and the
agent's Hydra token stay in this process: the gateways add them to each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.sandbox.egress import DEFAULT_MODEL_URL, ActiveEgress, EgressPlan, GatewaySecrets, runtime_dir
from hydra_sandbox.sandbox.gateways import ENTRYPOINT, agent_wiring, session_gateways
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.session_ids import session_path

SOCKET_DIR_IN_CONTAINER = "/run/hydra"


class HostSocketEgress:
    """The :class:`~hydra_sandbox.sandbox.egress.EgressPlacement` of the local Docker backend."""

    reaches_hydra = True
    """Its gateways run in Hydra's own process, beside the agent MCP endpoint's socket."""

    def __init__(self, base_dir: Callable[[], Path] = runtime_dir) -> None:
        self._base_dir = base_dir

    def socket_dir(self, session_id: str) -> Path:
        """The session's socket directory on this host (the one bind-mounted into its container)."""
        return session_path(self._base_dir(), session_id)

    @contextlib.asynccontextmanager
    async def serve(
        self,
        plan: EgressPlan,
        mcp_target: Path | None = None,
        *,
        secrets: GatewaySecrets | None = None,
        on_usage: UsageCallback | None = None,
    ) -> AsyncIterator[ActiveEgress]:
        """Serve the plan's gateways (and, given ``mcp_target``, the gateway to Hydra's agent MCP endpoint)
        for the duration of a run, then remove the socket directory (kept when the server shuts down
        mid-run, for the agent it is mounted in)."""
        if plan.relay == "none" and mcp_target is None:
            yield ActiveEgress(model_base_url=None if plan.model_url == DEFAULT_MODEL_URL else plan.model_url)
            return
        socket_dir = self.socket_dir(plan.session_id)
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o755)
        mounts = [Mount(type="bind", source=str(socket_dir), target=SOCKET_DIR_IN_CONTAINER, read_only=True)]
        wiring = agent_wiring(plan, SOCKET_DIR_IN_CONTAINER, delegate=mcp_target is not None)
        services = session_gateways(
            plan, socket_dir, secrets or GatewaySecrets(), mcp_target=mcp_target, on_usage=on_usage
        )
        detached = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                for service in services:
                    await stack.enter_async_context(service)
                yield ActiveEgress(
                    env=wiring.env, mounts=mounts, model_base_url=wiring.model_base_url, entrypoint=ENTRYPOINT
                )
        except asyncio.CancelledError:
            # Server shutdown: the agent keeps running with this directory bind-mounted, so it stays; the
            # next server serves new sockets in the same directory, which the container then sees.
            detached = True
            raise
        finally:
            if not detached:
                shutil.rmtree(socket_dir, ignore_errors=True)
