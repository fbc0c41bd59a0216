"""Egress, backend-neutral: what a session's network policy allows (:func:`plan_egress`), and the seam
through which a backend places the gateways that enforce it (:class:`EgressPlacement`).

An agent never gets a route out. In every mode its container has a loopback interface and nothing else;
``model-only`` and ``allowlist`` give it exactly one way out, Hydra's model gateway
(:mod:`hydra_sandbox.model_gateway`), which serves the model API only and adds the model key itself
(in ``allowlist`` mode it also tunnels ``CONNECT`` to the policy's names through
:class:`~hydra_sandbox.egress_relay.ConnectRelay`). No key or token enters the sandbox
(:class:`GatewaySecrets` stay with the gateways). Where the gateways run is the backend's choice: the
local Docker backend serves them on Hydra's host behind Unix sockets bind-mounted into the container; a
remote backend would run them beside the agent. Both build them with
:func:`hydra_sandbox.sandbox.gateways.session_gateways`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.settings import load_settings

EGRESS_PORT = 18080
DEFAULT_MODEL_URL = "https://api.openai.com/v1"


class EgressPlan(BaseModel):
    """The rules of one session's egress, independent of where the gateway runs.

    ``relay="gateway"``: the agent reaches its model through the model gateway (plain HTTP inside the
    sandbox; the gateway adds the key and speaks TLS to an https model). In ``allowlist`` mode the same
    socket also tunnels ``CONNECT`` to ``allowed_domains`` (the policy's, never the model's own host)."""

    session_id: str
    mode: Literal["none", "model-only", "allowlist"]
    relay: Literal["none", "gateway"] = "none"
    model_url: str
    allowed_domains: list[str] = Field(default_factory=list)


class ActiveEgress(BaseModel):
    """What the agent container needs while the relays of a plan are served."""

    network_mode: str = "none"
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    model_base_url: str | None = None
    entrypoint: list[str] = Field(default_factory=list)
    ready: Callable[[], Awaitable[None]] | None = Field(default=None, exclude=True, repr=False)
    """Set when the gateways may still be starting as the agent starts (its entry waits for them): the
    run awaits it beside the agent, and it raises why the gateways do not serve. ``None``: they serve."""


class GatewaySecrets(BaseModel):
    """What only the gateways hold, never the sandbox: the model key and the agent's Hydra token."""

    model_config = ConfigDict(frozen=True)

    model_key: SecretStr | None = None
    mcp_token: SecretStr | None = None


@runtime_checkable
class EgressPlacement(Protocol):
    """Where a backend runs a session's gateways (the model gateway, the one to Hydra's agent MCP
    endpoint). Every backend builds them with :func:`hydra_sandbox.sandbox.gateways.session_gateways`."""

    reaches_hydra: bool
    """Whether its gateways can reach Hydra's agent MCP endpoint (a socket on Hydra's machine); when not,
    runs here may not delegate, and the orchestrator records why."""

    def serve(
        self,
        plan: EgressPlan,
        mcp_target: Path | None = None,
        *,
        secrets: GatewaySecrets | None = None,
        on_usage: UsageCallback | None = None,
    ) -> contextlib.AbstractAsyncContextManager[ActiveEgress]:
        """Serve the gateways for the duration of a run. A cancelled run (server shutdown) leaves what
        the still-running agent needs in place, so the next server can serve it again."""
        ...


def model_endpoint(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of the model URL; a :class:`ConfigError` when it is not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(
            f"HYDRA_MODEL_BASE_URL: {url!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8080/v1"
        )
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def runtime_dir(base: Path | None = None) -> Path:
    """Where Hydra's host-side sockets live: a short path (Unix socket paths are limited to 108 bytes),
    private to this user; only each session's own leaf directory is bind-mounted into its container.
    ``base`` defaults to the ``runtime_dir`` setting (``HYDRA_RUNTIME_DIR``)."""
    base = base or load_settings().runtime_dir
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.is_symlink() or base.stat().st_uid != os.getuid():
        raise ConfigError(f"{base} is not a directory owned by this user", hint="set HYDRA_RUNTIME_DIR")
    os.chmod(base, 0o700)
    return base


def plan_egress(network: NetworkPolicy, model_base_url: str | None, session_id: str) -> EgressPlan:
    """The egress rules of ``session_id`` under ``network``, for the model at ``model_base_url``."""
    model_url = model_base_url or DEFAULT_MODEL_URL
    model_endpoint(model_url)
    if network.mode == "none":
        return EgressPlan(session_id=session_id, mode="none", model_url=model_url)
    domains = list(network.allow_domains) if network.mode == "allowlist" else []
    return EgressPlan(
        session_id=session_id, mode=network.mode, relay="gateway", model_url=model_url, allowed_domains=domains
    )
