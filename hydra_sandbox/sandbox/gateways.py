"""The gateways of one session, built in one place for every backend.

A backend's :class:`~hydra_sandbox.sandbox.egress.EgressPlacement` decides *where* they run (the local
Docker backend: in Hydra's process, behind Unix sockets bind-mounted into the agent's container; a remote
backend: in a sidecar beside the agent); :func:`session_gateways` decides *what* runs, and
:func:`agent_wiring` what the agent is told about it. Nothing here reads a secret from the sandbox or puts
one into it:

* ``egress.sock``: the model gateway (:class:`~hydra_sandbox.model_gateway.ModelGateway`). Codex talks
  plain HTTP to ``http://127.0.0.1:EGRESS_PORT/<model base path>`` with a provider that needs no key; the
  gateway adds the key and speaks TLS (certificates checked) to an https model. In ``allowlist`` mode the
  same socket tunnels ``CONNECT`` to the policy's names (never to the model's host) for other clients,
  which reach it as their ``HTTPS_PROXY``.
* ``hydra-mcp.sock`` (when the run may delegate): a gateway to Hydra's agent MCP endpoint that adds the
  run's bearer token on the host side, so the container never holds ``HYDRA_AGENT_TOKEN``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from hydra_sandbox.agent_endpoint import MCP_PORT, MCP_SOCKET_NAME
from hydra_sandbox.egress_relay import ConnectRelay, SocketService
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.gateway_config import mcp_gateway_config, model_gateway_config
from hydra_sandbox.model_gateway import ModelGateway, UsageCallback
from hydra_sandbox.sandbox.egress import EGRESS_PORT, EgressPlan, GatewaySecrets

__all__ = ["ENTRYPOINT", "SOCKET_NAME", "AgentWiring", "agent_wiring", "session_gateways"]

SOCKET_NAME = "egress.sock"
ENTRYPOINT = ["hydra-agent-entry"]
"""The agent image's entry: starts the relays the agent's environment names, then runs the command."""
LOOPBACK = "127.0.0.1,localhost"


class AgentWiring(BaseModel):
    """What the agent's container is told: environment (sockets, proxy) and its Codex model URL."""

    env: dict[str, str] = Field(default_factory=dict)
    model_base_url: str | None = None


def gateway_model_url(model_url: str) -> str:
    """The URL the agent's Codex uses: the container's loopback relay, with the model's base path."""
    parts = urlsplit(model_url)
    return urlunsplit(("http", f"127.0.0.1:{EGRESS_PORT}", parts.path.rstrip("/"), "", ""))


def agent_wiring(plan: EgressPlan, socket_dir: str, *, delegate: bool) -> AgentWiring:
    """The environment of an agent whose gateways are served in ``socket_dir`` (a path inside its
    container). It names sockets and ports only: never a key nor a token."""
    env: dict[str, str] = {}
    base_url = None
    if plan.relay == "gateway":
        env |= {"HYDRA_EGRESS_SOCKET": f"{socket_dir}/{SOCKET_NAME}", "HYDRA_EGRESS_PORT": str(EGRESS_PORT)}
        base_url = gateway_model_url(plan.model_url)
    if plan.mode == "allowlist":
        proxy = f"http://127.0.0.1:{EGRESS_PORT}"
        env |= {k: proxy for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
        # Codex's model URL and Hydra's MCP relay are on the container's loopback: never proxied.
        env |= {"NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}
    if delegate:
        env |= {"HYDRA_MCP_SOCKET": f"{socket_dir}/{MCP_SOCKET_NAME}", "HYDRA_MCP_PORT": str(MCP_PORT)}
    return AgentWiring(env=env, model_base_url=base_url)


def session_gateways(
    plan: EgressPlan,
    socket_dir: Path,
    secrets: GatewaySecrets,
    *,
    mcp_target: Path | None = None,
    on_usage: UsageCallback | None = None,
    ca_file: Path | None = None,
) -> list[SocketService]:
    """The services that serve ``plan`` (and, given ``mcp_target``, the agent MCP endpoint) in
    ``socket_dir``; enter each (``async with``) for the duration of a run."""
    services: list[SocketService] = []
    if plan.relay == "gateway":
        socket = socket_dir / SOCKET_NAME
        tunnel = None
        if plan.mode == "allowlist" and plan.allowed_domains:
            tunnel = ConnectRelay(socket, allowed_domains=plan.allowed_domains, allowed_ports={443}, trusted=set())
        config = model_gateway_config(plan.model_url, secrets.model_key, listen_port=EGRESS_PORT, ca_file=ca_file)
        services.append(ModelGateway(socket, config, on_usage, tunnel=tunnel))
    if mcp_target is not None:
        if secrets.mcp_token is None:
            raise ConfigError(
                f"session {plan.session_id}: the agent MCP gateway needs the run's token",
                hint="issue one with AgentTokens.issue and pass it in GatewaySecrets.mcp_token",
            )
        config = mcp_gateway_config(mcp_target, secrets.mcp_token, listen_port=MCP_PORT)
        services.append(ModelGateway(socket_dir / MCP_SOCKET_NAME, config))
    return services
