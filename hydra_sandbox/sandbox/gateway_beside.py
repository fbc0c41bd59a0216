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
- A placement whose agent can wait for its gateway (:meth:`GatewayBeside._early_agent_side`: a remote
  Docker engine's, whose agent entry waits for the sockets in the shared volume) has the agent's
  container created and started while the gateway starts; the run awaits the gateway's ready line
  beside the agent (``ActiveEgress.ready``), so a gateway that never serves still fails the run with
  its reason. Otherwise (Kubernetes: the agent needs the gateway pod's address) the agent starts once
  the gateway serves.
- When the run ends it is removed (after the agent); a server shutdown (cancellation) leaves it for the
  agent that still runs, and ``hydra gc`` takes what a dead server left.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.sandbox.egress import DEFAULT_MODEL_URL, ActiveEgress, EgressPlan, GatewaySecrets

Started = tuple[str, asyncio.Future[None], asyncio.Task[None]]
"""A started (or found) gateway: its name or id, the future its ready line sets, the task following it."""


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
        starting: asyncio.Task[Started] | None = None
        try:
            early = await self._early_agent_side(plan)
            starting = asyncio.create_task(self._start_and_follow(plan, secrets or GatewaySecrets(), on_usage))
            if early is not None:  # the agent starts while its gateway does; the run awaits ``ready``
                yield early.model_copy(update={"ready": functools.partial(self._served, starting)})
            else:
                yield await self._agent_side(plan, *await asyncio.shield(starting))
        except asyncio.CancelledError:
            detached = True  # server shutdown: the agent keeps its gateway; the next server follows it
            raise
        finally:
            await asyncio.shield(self._stop_following(starting))
            if not detached:
                await asyncio.shield(self.remove(plan.session_id))

    async def _start_and_follow(
        self, plan: EgressPlan, secrets: GatewaySecrets, on_usage: UsageCallback | None
    ) -> Started:
        """Find or start the gateway and follow its output: its name, the future its ready line sets,
        and the follower task."""
        gateway = await self._find_or_start(plan, secrets)
        ready = asyncio.get_running_loop().create_future()
        return gateway, ready, asyncio.create_task(self._follow(gateway, ready, on_usage))

    async def _served(self, starting: asyncio.Task[Started]) -> None:
        """Return once the gateway (started beside an agent already starting) serves; else raise its
        start's error or why it does not serve. Shielded: a run that ends first leaves it to the teardown."""
        await self._until_ready(*await asyncio.shield(starting))

    @staticmethod
    async def _stop_following(starting: asyncio.Task[Started] | None) -> None:
        """Stop following the gateway (the run is over or detached). A start still under way is let finish,
        not cancelled: an engine request cancelled here still completes in its thread, and a gateway it
        created after the teardown looked would be left behind."""
        if starting is None:
            return
        await asyncio.wait([starting])
        if starting.cancelled() or starting.exception() is not None:
            return  # the run's error, if any, is raised where the start was awaited
        follower = starting.result()[2]
        follower.cancel()
        with contextlib.suppress(BaseException):
            await follower

    async def _early_agent_side(self, plan: EgressPlan) -> ActiveEgress | None:
        """What the agent's container is given when it may start before its gateway serves (its entry
        waits, bounded, for the gateway's sockets): returned before the gateway starts, and the run then
        awaits its ``ready`` (:meth:`_until_ready`). ``None`` (this default): the agent starts only once
        the gateway serves (:meth:`_agent_side`)."""
        return None

    async def _until_ready(self, gateway: str, ready: asyncio.Future[None], follower: asyncio.Task[None]) -> None:
        """Return once the gateway serves, or raise why it does not: needed with :meth:`_early_agent_side`."""
        raise NotImplementedError(f"{type(self).__name__} gives no early agent side")

    @abc.abstractmethod
    async def _find_or_start(self, plan: EgressPlan, secrets: GatewaySecrets) -> str:
        """The session's gateway still running from an earlier server, else a new one started: its name
        or id."""

    @abc.abstractmethod
    async def _follow(self, gateway: str, ready: asyncio.Future[None], on_usage: UsageCallback | None) -> None:
        """Follow the gateway's output for the run: set ``ready`` at its ready line, report usage."""

    async def _agent_side(
        self, plan: EgressPlan, gateway: str, ready: asyncio.Future[None], follower: asyncio.Task[None]
    ) -> ActiveEgress:
        """Once the gateway is ready (or failing with the reason), what the agent's container is given:
        needed without :meth:`_early_agent_side`."""
        raise NotImplementedError(f"{type(self).__name__} gives no agent side")

    @abc.abstractmethod
    async def remove(self, session_id: str) -> None:
        """Everything of the session's gateway; what is already gone is not an error."""
