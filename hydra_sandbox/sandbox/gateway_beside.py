"""Egress for agents that do not share Hydra's machine: the session's gateways
(:mod:`hydra_sandbox.sandbox.gateway_process`) run in a container or pod of their own beside the agent,
the only one of the two with a network. :class:`GatewayBeside` is the lifecycle every such placement
shares (a remote Docker engine's :class:`~hydra_sandbox.sandbox.backends.docker.sidecar_egress.SidecarEgress`,
Kubernetes' :class:`~hydra_sandbox.sandbox.backends.kubernetes.egress.KubernetesEgress`); a backend says
how its gateway starts, is followed, is reached and is removed.

- No agent MCP gateway: Hydra's agent endpoint is a socket on Hydra's machine, which no gateway there can
  reach (``reaches_hydra``; the orchestrator records why the run may not delegate).
- A gateway left running by a server that shut down mid-run is found and followed again, never doubled.
- Its stdout (the ready line, numbered usage lines: :mod:`hydra_sandbox.sandbox.gateway_lines`) is
  followed for the whole run.
- When the run ends it is removed (after the agent); a server shutdown (cancellation) leaves it for the
  agent that still runs, and ``hydra gc`` takes what a dead server left.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.sandbox.egress import DEFAULT_MODEL_URL, ActiveEgress, EgressPlan, GatewaySecrets


class GatewayBeside(abc.ABC):
    """An :class:`~hydra_sandbox.sandbox.egress.EgressPlacement` whose gateway runs beside the agent."""

    reaches_hydra = False
    """Hydra's agent MCP endpoint is a socket on Hydra's machine: no gateway beside an agent can reach it."""

    where = "beside the agent"
    """Where the gateway runs, for the refusal of an agent MCP gateway."""

    @contextlib.asynccontextmanager
    async def serve(
        self,
        plan: EgressPlan,
        mcp_target: Path | None = None,
        *,
        secrets: GatewaySecrets | None = None,
        on_usage: UsageCallback | None = None,
    ) -> AsyncIterator[ActiveEgress]:
        """Run (or, after a restart, find) the session's gateway for the duration of a run."""
        if mcp_target is not None:
            raise ConfigError(
                f"session {plan.session_id}: the agent MCP gateway cannot run {self.where} "
                "(Hydra's endpoint is a socket on Hydra's machine)",
                hint="set HYDRA_AGENT_MCP=false, or use a policy with delegation.max_depth: 0",
            )
        if plan.relay == "none":
            yield ActiveEgress(model_base_url=None if plan.model_url == DEFAULT_MODEL_URL else plan.model_url)
            return
        detached = False
        follower: asyncio.Task[None] | None = None
        try:
            gateway = await self._find_or_start(plan, secrets or GatewaySecrets())
            ready = asyncio.get_running_loop().create_future()
            follower = asyncio.create_task(self._follow(gateway, ready, on_usage))
            yield await self._agent_side(plan, gateway, ready, follower)
        except asyncio.CancelledError:
            detached = True  # server shutdown: the agent keeps its gateway; the next server follows it
            raise
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(BaseException):
                    await follower
            if not detached:
                await asyncio.shield(self.remove(plan.session_id))

    @abc.abstractmethod
    async def _find_or_start(self, plan: EgressPlan, secrets: GatewaySecrets) -> str:
        """The session's gateway still running from an earlier server, else a new one started: its name
        or id."""

    @abc.abstractmethod
    async def _follow(self, gateway: str, ready: asyncio.Future[None], on_usage: UsageCallback | None) -> None:
        """Follow the gateway's output for the run: set ``ready`` at its ready line, report usage."""

    @abc.abstractmethod
    async def _agent_side(
        self, plan: EgressPlan, gateway: str, ready: asyncio.Future[None], follower: asyncio.Task[None]
    ) -> ActiveEgress:
        """Once the gateway is ready (or failing with the reason), what the agent's container is given."""

    @abc.abstractmethod
    async def remove(self, session_id: str) -> None:
        """Everything of the session's gateway; what is already gone is not an error."""
