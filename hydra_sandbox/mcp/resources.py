"""Hydra's MCP resources: the catalogs, a session's timeline and checklist, and the server's status.
Refusals are errors like the tools' (turned into messages by the middleware)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastmcp.dependencies import Depends

from hydra_sandbox.limits import MAX_PAGE_EVENTS
from hydra_sandbox.mcp.facade import Facade, bound_facade


async def profiles_resource(hydra: Facade = Depends(bound_facade)) -> str:
    """Every agent profile."""
    good, _bad = await hydra.profiles()
    return json.dumps([p.model_dump(mode="json") for p in good.values()], indent=2)


async def policies_resource(hydra: Facade = Depends(bound_facade)) -> str:
    """Every directory, network and resource policy."""
    return json.dumps([p.model_dump(mode="json") for p in (await hydra.policies()).values()], indent=2)


async def session_resource(session_id: str, hydra: Facade = Depends(bound_facade)) -> str:
    """A session's metadata and the first page of its timeline (``tail_logs`` from ``timeline_next_since``
    reads the rest)."""
    record = hydra.session(session_id)
    page = await hydra.page(session_id, 0, MAX_PAGE_EVENTS)
    body = {
        "session": hydra.view(record),
        "timeline": page["events"],
        "timeline_next_since": page["next_since"],
        "timeline_more": page["more"],
    }
    return await asyncio.to_thread(json.dumps, body, indent=2)


async def checklist_resource(session_id: str, hydra: Facade = Depends(bound_facade)) -> str:
    """A session's checklist: items, done or not, and the event that proved each."""
    return json.dumps(hydra.checklist(session_id), indent=2)


async def tree_resource(session_id: str, hydra: Facade = Depends(bound_facade)) -> str:
    """A session and its delegation tree: each node's status, test verdicts, checklist and changed files."""
    return json.dumps(await hydra.tree(session_id), indent=2)


async def status_resource(hydra: Facade = Depends(bound_facade)) -> str:
    """Health: Docker, images, Codex version, store, queue, running sessions, disk."""
    return json.dumps(await hydra.status(), indent=2, default=str)


@dataclass(frozen=True)
class ResourceSpec:
    uri: str
    fn: Callable[..., Awaitable[str]]


RESOURCES = (
    ResourceSpec("hydra://profiles", profiles_resource),
    ResourceSpec("hydra://policies", policies_resource),
    ResourceSpec("hydra://sessions/{session_id}", session_resource),
    ResourceSpec("hydra://checklists/{session_id}", checklist_resource),
    ResourceSpec("hydra://sessions/{session_id}/tree", tree_resource),
    ResourceSpec("hydra://status", status_resource),
)
"""Every resource. Who may read each: :mod:`hydra_sandbox.authority`."""
