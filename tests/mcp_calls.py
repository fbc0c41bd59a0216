"""Helpers for tests that drive Hydra through a real MCP client: call a tool and insist it worked,
and poll with a deadline (never a bare sleep) until a condition holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastmcp import Client


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    """The structured result of a tool call that must succeed; the error text otherwise."""
    result = await client.call_tool(name, args, raise_on_error=False)
    text = " ".join(getattr(b, "text", "") for b in result.content)
    assert not result.is_error, f"{name}: {text}"
    assert result.structured_content is not None
    return result.structured_content


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 180) -> Any:
    """Poll ``check`` until it returns something truthy, failing with ``what`` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (value := await check()):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return value
