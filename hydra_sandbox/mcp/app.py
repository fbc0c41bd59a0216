"""Building and running Hydra's two MCP servers.

- The **agents' server** holds exactly the tools and resources that :mod:`hydra_sandbox.authority`
  lets agents call, and nothing else. The endpoint inside sandboxes
  (:mod:`hydra_sandbox.agent_endpoint`) serves it alone, with agent tokens.
- The **operator's server** holds the operator-only tools (``apply_diff``, ``discard_diff``), the
  status resource and the prompts, and *mounts* the agents' server, so the operator sees every tool
  and a tool reaches agents only by being in the agents' server.

Both run :class:`~hydra_sandbox.mcp.middleware.HydraMiddleware`, which binds each request's principal,
and both serve live updates (:mod:`.live`) from one hub, each with its own principal rule.
The operator server's lifespan opens the services once and starts the agents' endpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastmcp import FastMCP
from fastmcp.server.auth.auth import TokenVerifier

from hydra_sandbox import __version__
from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.authority import Kind, agent_components
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.http_routes import register_http_routes
from hydra_sandbox.mcp.auth import AgentTokenVerifier, HydraTokenVerifier, PrincipalOf, agent_side, operator_side
from hydra_sandbox.mcp.live import LiveUpdates
from hydra_sandbox.mcp.live_handlers import LiveHandlers, follow_spawned
from hydra_sandbox.mcp.middleware import HydraMiddleware, ServicesRef, quiet_refusals
from hydra_sandbox.mcp.prompts import register_prompts
from hydra_sandbox.mcp.resources import RESOURCES
from hydra_sandbox.mcp.tools import TOOLS
from hydra_sandbox.metrics import HydraMetrics
from hydra_sandbox.services import Services, open_services
from hydra_sandbox.settings import HydraSettings

ServicesFactory = Callable[[HydraSettings], contextlib.AbstractAsyncContextManager[Services]]

INSTRUCTIONS = """Hydra runs Codex agents in hardened sandboxes. Typical loop: list_agents to pick a
profile; spawn_agent(working_dir=ABSOLUTE_PATH, custom_prompt=TASK) returns a session_id at once;
wait_session(session_id) until it is no longer running; get_diff(session_id) to review;
apply_diff(session_id, confirm=true) to write the changes, or discard_diff(session_id).
search_context finds anything recorded before."""

AGENT_INSTRUCTIONS = """Hydra, seen from inside a sandbox. spawn_agent(working_dir="/workspace",
custom_prompt=TASK) starts a child on your workspace with a policy no wider than yours;
wait_session, tail_logs, summarize_session and get_diff follow it; search_context and log_context use
the shared record. You see only your own session and the sessions below it. Applying or discarding a
diff is the operator's decision: those tools do not exist here."""


def _add_components(mcp: FastMCP, *, for_agents: bool) -> None:
    """Register the tools and resources agents may call (``for_agents``), or the others."""
    agent_tools, agent_resources = agent_components(Kind.TOOL), agent_components(Kind.RESOURCE)
    for spec in TOOLS:
        if (spec.name in agent_tools) == for_agents:
            mcp.tool(spec.fn, annotations=spec.annotations)
    for resource in RESOURCES:
        if (resource.uri in agent_resources) == for_agents:
            mcp.resource(resource.uri, mime_type="application/json")(resource.fn)


def build_agent_server(
    services: ServicesRef,
    *,
    auth: TokenVerifier | None,
    metrics: HydraMetrics | None,
    live: LiveUpdates | None = None,
) -> FastMCP:
    """The agents' server: only what the authority table lets agents call. Served on its own (agent
    tokens only) by the agents' endpoint, and mounted into the operator's server. With ``live``, it
    serves live updates too (of the agent's subtree only)."""
    quiet_refusals()
    mcp = FastMCP(
        name="hydra",
        instructions=AGENT_INSTRUCTIONS,
        version=__version__,
        auth=auth,
        mask_error_details=True,
        middleware=[HydraMiddleware(services, agent_side, metrics)],
    )
    _add_components(mcp, for_agents=True)
    if live is not None:
        _serve_live(mcp, live, services, agent_side)
    return mcp


def _serve_live(mcp: FastMCP, live: LiveUpdates, services: ServicesRef, principal_of: PrincipalOf) -> None:
    LiveHandlers(live, services, principal_of).register(mcp)


@dataclass(frozen=True)
class HydraServers:
    operator: FastMCP
    """What hosts connect to: everything, the agents' server mounted in it."""
    agents: FastMCP
    """What the endpoint inside sandboxes serves (the same instance that is mounted)."""
    live: LiveUpdates
    """The live-updates hub both serve."""


def build_server(
    settings: HydraSettings,
    *,
    services_factory: ServicesFactory | None = None,
    auth: TokenVerifier | None = None,
    metrics: HydraMetrics | None = None,
) -> FastMCP:
    """The operator's server (see :func:`build_servers`)."""
    return build_servers(settings, services_factory=services_factory, auth=auth, metrics=metrics).operator


def build_servers(
    settings: HydraSettings,
    *,
    services_factory: ServicesFactory | None = None,
    auth: TokenVerifier | None = None,
    metrics: HydraMetrics | None = None,
) -> HydraServers:
    """The operator's server, with the agents' server mounted in it. ``services_factory`` lets tests
    swap the sandbox and store; ``auth`` is the HTTP token verifier (none over stdio, where the host
    process is the operator); ``metrics`` lets tests read the server's registry (a new one otherwise)."""
    factory = services_factory or open_services
    server_metrics = metrics if metrics is not None else HydraMetrics()
    services = ServicesRef()
    live = LiveUpdates()
    follow_spawned(live)
    for_agents = build_agent_server(
        services, auth=AgentTokenVerifier(AgentTokens(settings.agent_tokens_dir)), metrics=server_metrics, live=live
    )

    @contextlib.asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        async with factory(settings) as opened:
            services.services = opened
            server_metrics.attach(opened)
            live.attach(opened.manager)
            endpoint = opened.agent_endpoint
            try:
                if endpoint is not None:
                    await endpoint.start(for_agents.http_app(path="/mcp"))
                yield {"services": opened}
            finally:
                if endpoint is not None:
                    await endpoint.stop()
                await live.detach()
                server_metrics.detach()
                services.services = None

    mcp = FastMCP(
        name="hydra",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        auth=auth,
        mask_error_details=True,
        middleware=[HydraMiddleware(services, operator_side(tokens_required=auth is not None), server_metrics)],
    )
    _add_components(mcp, for_agents=False)
    _serve_live(mcp, live, services, operator_side(tokens_required=auth is not None))
    mcp.mount(for_agents)
    register_prompts(mcp, settings)
    register_http_routes(mcp, server_metrics, verifier=auth, metrics_public=settings.metrics_public)
    return HydraServers(operator=mcp, agents=for_agents, live=live)


def http_app(settings: HydraSettings, token: str, **build: Any) -> Any:
    """The streamable-HTTP ASGI app: bearer token, Host/Origin checks (loopback plus
    ``settings.http_allowed_hosts``), MCP at ``/mcp``, ``/healthz`` and ``/metrics``."""
    server = build_server(settings, auth=HydraTokenVerifier(token), **build)
    return server.http_app(path="/mcp", host_origin_protection=True, allowed_hosts=settings.http_allowed_hosts or None)


def run(settings: HydraSettings, transport: Literal["stdio", "http"], token: str | None = None) -> None:
    """Run the server until interrupted. HTTP binds settings.http_host and requires the bearer token
    (for /metrics too, unless settings.metrics_public); /healthz is open."""
    if transport == "stdio":
        build_server(settings).run(transport="stdio", show_banner=False)
        return
    import uvicorn

    if not token:
        raise ConfigError("the http transport needs a token", hint="set HYDRA_HTTP_TOKEN")
    uvicorn.run(http_app(settings, token), host=settings.http_host, port=settings.http_port, log_level="warning")
