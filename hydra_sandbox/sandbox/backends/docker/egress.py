"""Egress plans: how an agent container reaches the network, by policy mode.

The container always runs with ``network_mode="none"``: it has a loopback interface and nothing else.
``none`` leaves it so. ``model-only`` and ``allowlist`` bind-mount one directory holding a Unix socket
served by Hydra (see :mod:`hydra_sandbox.egress_relay`); inside the container ``hydra-agent-entry``
starts socat on ``127.0.0.1:EGRESS_PORT`` relaying to that socket, and Codex is pointed at it. There is
no IP route out of the container, so a process that ignores the proxy variables reaches nothing.
The same directory may hold a second socket leading to Hydra's agent MCP endpoint (see
:mod:`hydra_sandbox.agent_endpoint`), whatever the network mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from hydra_sandbox.agent_endpoint import MCP_PORT, MCP_SOCKET_NAME
from hydra_sandbox.egress_relay import ConnectRelay, ForwardRelay, UnixForwardRelay
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.settings import load_settings

EGRESS_PORT = 18080
SOCKET_DIR_IN_CONTAINER = "/run/hydra"
SOCKET_NAME = "egress.sock"
DEFAULT_MODEL_URL = "https://api.openai.com/v1"


class EgressPlan(BaseModel):
    mode: Literal["none", "model-only", "allowlist"]
    socket_dir: Path | None = None
    relay: Literal["none", "forward", "connect"] = "none"
    model_url: str
    forward_to: tuple[str, int] | None = None
    allowed_domains: list[str] = Field(default_factory=list)


class ActiveEgress(BaseModel):
    network_mode: str = "none"
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    model_base_url: str | None = None
    entrypoint: list[str] = Field(default_factory=list)


def _endpoint(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"HYDRA_MODEL_BASE_URL: {url!r} is not an http(s) URL")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def runtime_dir(base: Path | None = None) -> Path:
    """Where relay sockets live: a short path (Unix socket paths are limited to 108 bytes), private to
    this user; only each session's own leaf directory is bind-mounted into its container. ``base``
    defaults to the ``runtime_dir`` setting (``HYDRA_RUNTIME_DIR``)."""
    base = base or load_settings().runtime_dir
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.is_symlink() or base.stat().st_uid != os.getuid():
        raise ConfigError(f"{base} is not a directory owned by this user", hint="set HYDRA_RUNTIME_DIR")
    os.chmod(base, 0o700)
    return base


def plan_egress(network: NetworkPolicy, model_base_url: str | None, session_id: str) -> EgressPlan:
    model_url = model_base_url or DEFAULT_MODEL_URL
    scheme, host, port = _endpoint(model_url)
    socket_dir = runtime_dir() / session_id
    if network.mode == "none":
        return EgressPlan(mode="none", socket_dir=socket_dir, model_url=model_url)
    if network.mode == "model-only" and scheme == "http":
        return EgressPlan(
            mode="model-only", socket_dir=socket_dir, relay="forward", model_url=model_url, forward_to=(host, port)
        )
    domains = [host] if network.mode == "model-only" else [host, *network.allow_domains]
    return EgressPlan(
        mode=network.mode, socket_dir=socket_dir, relay="connect", model_url=model_url, allowed_domains=domains
    )


@contextlib.asynccontextmanager
async def egress(plan: EgressPlan, mcp_target: Path | None = None) -> AsyncIterator[ActiveEgress]:
    """Serve the plan's relay (and, given ``mcp_target``, a relay to Hydra's agent MCP endpoint) for
    the duration of a run, then remove the socket directory (kept when the server shuts down mid-run,
    for the agent it is mounted in)."""
    model_base_url = None if plan.model_url == DEFAULT_MODEL_URL else plan.model_url
    if plan.socket_dir is None or (plan.relay == "none" and mcp_target is None):
        yield ActiveEgress(model_base_url=model_base_url)
        return
    plan.socket_dir.mkdir(parents=True, exist_ok=True)
    plan.socket_dir.chmod(0o755)
    mounts = [Mount(type="bind", source=str(plan.socket_dir), target=SOCKET_DIR_IN_CONTAINER, read_only=True)]
    env: dict[str, str] = {}
    detached = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            if plan.relay != "none":
                env |= {
                    "HYDRA_EGRESS_SOCKET": f"{SOCKET_DIR_IN_CONTAINER}/{SOCKET_NAME}",
                    "HYDRA_EGRESS_PORT": str(EGRESS_PORT),
                }
            if plan.relay == "forward":
                assert plan.forward_to is not None
                parts = urlsplit(plan.model_url)
                model_base_url = urlunsplit(("http", f"127.0.0.1:{EGRESS_PORT}", parts.path, parts.query, ""))
                await stack.enter_async_context(ForwardRelay(plan.socket_dir / SOCKET_NAME, *plan.forward_to))
            elif plan.relay == "connect":
                _scheme, host, port = _endpoint(plan.model_url)
                proxy = f"http://127.0.0.1:{EGRESS_PORT}"
                # Only Hydra's own relays listen on the container's loopback, so it needs no proxy.
                local = "127.0.0.1,localhost" if mcp_target is not None else ""
                env |= {k: proxy for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
                env |= {"NO_PROXY": local, "no_proxy": local}
                await stack.enter_async_context(
                    ConnectRelay(
                        plan.socket_dir / SOCKET_NAME,
                        allowed_domains=plan.allowed_domains,
                        allowed_ports={443},
                        trusted={(host, port)},
                    )
                )
            if mcp_target is not None:
                env |= {
                    "HYDRA_MCP_SOCKET": f"{SOCKET_DIR_IN_CONTAINER}/{MCP_SOCKET_NAME}",
                    "HYDRA_MCP_PORT": str(MCP_PORT),
                }
                await stack.enter_async_context(UnixForwardRelay(plan.socket_dir / MCP_SOCKET_NAME, mcp_target))
            yield ActiveEgress(env=env, mounts=mounts, model_base_url=model_base_url, entrypoint=["hydra-agent-entry"])
    except asyncio.CancelledError:
        # Server shutdown: the agent keeps running with this directory bind-mounted, so it stays; the
        # next server serves new sockets in the same directory, which the container then sees.
        detached = True
        raise
    finally:
        if not detached:
            shutil.rmtree(plan.socket_dir, ignore_errors=True)
