"""Egress, backend-neutral: what a session's network policy allows (:func:`plan_egress`), and the seam
through which a backend places the relays that enforce it (:class:`EgressPlacement`).

An agent never gets a route out. In every mode its container has a loopback interface and nothing else;
``model-only`` and ``allowlist`` give it exactly one way out, a relay of Hydra's
(:mod:`hydra_sandbox.egress_relay`) that applies the plan's rules. Where that relay runs is the
backend's choice: the local Docker backend serves it on Hydra's host behind a Unix socket bind-mounted
into the container; a remote backend would run it in a gateway beside the agent.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.settings import load_settings

EGRESS_PORT = 18080
DEFAULT_MODEL_URL = "https://api.openai.com/v1"


class EgressPlan(BaseModel):
    """The rules of one session's egress, independent of where the relay runs."""

    session_id: str
    mode: Literal["none", "model-only", "allowlist"]
    relay: Literal["none", "forward", "connect"] = "none"
    model_url: str
    forward_to: tuple[str, int] | None = None
    allowed_domains: list[str] = Field(default_factory=list)


class ActiveEgress(BaseModel):
    """What the agent container needs while the relays of a plan are served."""

    network_mode: str = "none"
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    model_base_url: str | None = None
    entrypoint: list[str] = Field(default_factory=list)


@runtime_checkable
class EgressPlacement(Protocol):
    """Where a backend runs a session's relays (and the relay to Hydra's agent MCP endpoint)."""

    def serve(
        self, plan: EgressPlan, mcp_target: Path | None = None
    ) -> contextlib.AbstractAsyncContextManager[ActiveEgress]:
        """Serve the relays for the duration of a run. A cancelled run (server shutdown) leaves what
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
    scheme, host, port = model_endpoint(model_url)
    if network.mode == "none":
        return EgressPlan(session_id=session_id, mode="none", model_url=model_url)
    if network.mode == "model-only" and scheme == "http":
        return EgressPlan(
            session_id=session_id, mode="model-only", relay="forward", model_url=model_url, forward_to=(host, port)
        )
    domains = [host] if network.mode == "model-only" else [host, *network.allow_domains]
    return EgressPlan(
        session_id=session_id, mode=network.mode, relay="connect", model_url=model_url, allowed_domains=domains
    )
