"""Hydra in the test's own process: the real MCP server behind an in-memory MCP client, with real Docker
sandboxes running the real Codex CLI. The fastest way to test a workflow end to end."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from fastmcp import Client

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.settings import HydraSettings, load_settings
from hydra_sandbox.testing import _hydra
from hydra_sandbox.testing.sessions import AgentSession, spawn

SCRIPTED_MODEL_NAME = "scripted"
"""The model name agents are given: Codex does not know it, warns once, and talks to the endpoint anyway."""


class InProcessHydra:
    """``async with InProcessHydra(model_url=model.base_url) as hydra: await hydra.spawn(...)``

    ``settings`` are :class:`~hydra_sandbox.settings.HydraSettings` fields (``max_concurrent_agents=2``,
    ``profiles_dir=...``); the ``HYDRA_*`` environment applies as usual below them. Without ``data_home``
    a temporary one is used and removed afterwards. On exit every sandbox container, volume and network
    of this Hydra is removed, and only those. The agent image is built locally when missing."""

    def __init__(
        self,
        *,
        model_url: str | None = None,
        data_home: Path | None = None,
        client_timeout_s: float = 300,
        **settings: Any,
    ) -> None:
        self._model_url = model_url
        self._data_home = data_home
        self._client_timeout_s = client_timeout_s
        self._overrides = settings
        self._tmp: Path | None = None
        self._client: Client | None = None
        self._settings: HydraSettings | None = None

    @property
    def client(self) -> Client:
        """The connected MCP client (the operator's view: every tool)."""
        if self._client is None:
            raise RuntimeError("InProcessHydra is not started: use it as `async with InProcessHydra(...) as hydra`")
        return self._client

    @property
    def settings(self) -> HydraSettings:
        if self._settings is None:
            raise RuntimeError("InProcessHydra is not started: use it as `async with InProcessHydra(...) as hydra`")
        return self._settings

    async def spawn(
        self, working_dir: Path | str, task: str, *, profile: str = "default", **options: Any
    ) -> AgentSession:
        """:func:`hydra_sandbox.testing.spawn` on this Hydra's client."""
        return await spawn(self.client, working_dir, task, profile=profile, **options)

    async def __aenter__(self) -> InProcessHydra:
        if self._data_home is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="hydra-test-"))
            self._data_home = self._tmp / "data"
        overrides: dict[str, Any] = {"data_home": self._data_home, "model": SCRIPTED_MODEL_NAME, **self._overrides}
        if self._model_url is not None:
            overrides["model_base_url"] = self._model_url
        self._settings = load_settings(**overrides)
        try:
            await asyncio.to_thread(_hydra.ensure_agent_image, self._settings)
            client = Client(_hydra.build_server(self._settings), timeout=self._client_timeout_s)
            await client.__aenter__()
        except BaseException:
            await self._cleanup()
            raise
        self._client = client
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._client is not None:
                await self._client.__aexit__(exc_type, exc, tb)
        finally:
            self._client = None
            await self._cleanup()

    async def _cleanup(self) -> None:
        try:
            if self._data_home is not None:
                with contextlib.suppress(RuntimeUnavailableError):  # no daemon: nothing of ours can run
                    await _hydra.remove_sandboxes(self._data_home)
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
