"""The MCP endpoint agents reach from inside their sandbox, so an agent can delegate in turn.

An agent container has no network. When its policy allows children (``delegation.max_depth > 0``),
Hydra bind-mounts a per-session Unix socket into it (next to the egress socket) and gives Codex an
``[mcp_servers.hydra]`` entry pointing at ``127.0.0.1:MCP_PORT``, which ``hydra-agent-entry`` relays
to that socket. A gateway on that socket (:func:`hydra_sandbox.sandbox.gateways.session_gateways`)
adds the run's token and forwards to :class:`AgentEndpoint`: Hydra's own MCP server over streamable
HTTP on a private Unix socket, sharing the running server's services, and accepting only agent
tokens. The token never enters the container.

Each run gets a fresh random token (:class:`AgentTokens`; a re-attach after a restart issues another),
``hydra_at_`` and 43 URL-safe base64 characters: the masking rule ``hydra-agent-token`` masks any token
of that form wherever it might be printed, so tokens are not added to the masker one by one (each
addition recompiles its known-value database, which grew with every run). Only its SHA-256 is stored,
as a file named after the hash that holds the session id. A token is valid for its own session and the
sessions below it, and is revoked when the session stops running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Generator
from pathlib import Path
from typing import Any

from hydra_sandbox.errors import ConfigError

log = logging.getLogger(__name__)

MCP_PORT = 18081
MCP_SOCKET_NAME = "hydra-mcp.sock"
TOKEN_PREFIX = "hydra_at_"
"""How every agent token starts; the built-in masking rule ``hydra-agent-token`` matches the form."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AgentTokens:
    """Per-run bearer tokens for agents, stored by hash under ``<data_home>/agent-tokens``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def issue(self, session_id: str) -> str:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        path = self.directory / _digest(token)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(session_id)
        return token

    def session_for(self, token: str) -> str | None:
        """The session a token was issued to, or ``None`` for an unknown or revoked token."""
        if not token or len(token) > 512:
            return None
        try:
            return (self.directory / _digest(token)).read_text().strip() or None
        except OSError:
            return None

    def revoke(self, session_id: str) -> int:
        """Forget every token of ``session_id``; returns how many there were."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if path.read_text().strip() == session_id:
                    path.unlink()
                    removed += 1
        return removed


def endpoint_socket(runtime_dir: Path, data_home: Path) -> Path:
    """The endpoint's socket: one per data home, in the short per-user runtime directory."""
    tag = hashlib.sha256(str(data_home.resolve()).encode()).hexdigest()[:12]
    return runtime_dir / f"{MCP_SOCKET_NAME}.{tag}"


class _QuietServer:
    """uvicorn on a Unix socket inside the running event loop, leaving signal handling to the host
    process (uvicorn would otherwise take over SIGINT/SIGTERM)."""

    def __init__(self, app: Any, socket_path: Path) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        config = uvicorn.Config(app, uds=str(socket_path), log_level="warning", lifespan="on", access_log=False)
        self.server = Server(config)

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self.server.started)


class AgentEndpoint:
    """Serves an ASGI app (Hydra's MCP server for agents) on :attr:`socket_path` while running."""

    def __init__(self, socket_path: Path, tokens: AgentTokens) -> None:
        self.socket_path = socket_path
        self.tokens = tokens
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.started and self.socket_path.exists()

    async def start(self, app: Any, timeout_s: float = 30.0) -> None:
        if len(str(self.socket_path)) > 100:
            raise ConfigError(f"{self.socket_path}: too long for a Unix socket path", hint="set HYDRA_RUNTIME_DIR")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = _QuietServer(app, self.socket_path)
        self._task = asyncio.create_task(self._server.serve(), name="hydra-agent-endpoint")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.serving:
            if self._task.done():
                self._task.result()
                raise ConfigError(f"the agent MCP endpoint on {self.socket_path} stopped at start")
            if loop.time() > deadline:
                raise ConfigError(f"the agent MCP endpoint on {self.socket_path} did not start in {timeout_s:.0f} s")
            await asyncio.sleep(0.02)
        os.chmod(self.socket_path, 0o600)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        except Exception:  # shutting down; uvicorn logged the error
            log.debug("agent endpoint stopped with an error", exc_info=True)
        self._server = None
        self._task = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
