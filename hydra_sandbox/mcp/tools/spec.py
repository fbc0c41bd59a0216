"""How a tool is declared: the function and its MCP annotations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


@dataclass(frozen=True)
class ToolSpec:
    fn: Callable[..., Awaitable[dict[str, Any]]]
    annotations: ToolAnnotations

    @property
    def name(self) -> str:
        return self.fn.__name__
