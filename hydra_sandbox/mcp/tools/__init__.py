"""Hydra's MCP tools, grouped by concern. Each tool is a plain async function: its arguments are the
tool's arguments, and the :class:`~hydra_sandbox.mcp.facade.Facade` of the caller comes in as
``hydra`` (bound per request by the middleware; a test passes its own)."""

from __future__ import annotations

from hydra_sandbox.mcp.tools import catalog, context, review, sessions, spawning
from hydra_sandbox.mcp.tools.spec import ToolSpec

TOOLS: tuple[ToolSpec, ...] = (*spawning.TOOLS, *catalog.TOOLS, *sessions.TOOLS, *context.TOOLS, *review.TOOLS)
"""Every tool, in the order they are listed. Who may call each: :mod:`hydra_sandbox.authority`."""

__all__ = ["TOOLS", "ToolSpec"]
