"""The searchable record: notes in, semantic search out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastmcp.dependencies import Depends
from mcp.types import ToolAnnotations
from pydantic import Field

from hydra_sandbox.events import EVENT_TYPES
from hydra_sandbox.limits import MAX_NOTE_CHARS, MAX_QUERY_CHARS, MAX_TAG_CHARS, MAX_TAGS, check_tags
from hydra_sandbox.mcp.facade import Facade, bound_facade
from hydra_sandbox.mcp.tools.spec import READ_ONLY, ToolSpec
from hydra_sandbox.store import SearchFilters


async def log_context(
    note: Annotated[str, Field(min_length=1, max_length=MAX_NOTE_CHARS)],
    session_id: str | None = None,
    tags: Annotated[
        list[str] | None, Field(description=f"At most {MAX_TAGS} tags of 1 to {MAX_TAG_CHARS} characters.")
    ] = None,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Record a host's own note (a decision, a hint for later) into the searchable record."""
    event = await hydra.log_context(note, session_id, tags)
    return {"id": event.id, "session_id": event.session_id}


async def search_context(
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)],
    session_id: str | None = None,
    profile_id: str | None = None,
    event_type: Annotated[str | None, Field(description=f"One of: {', '.join(EVENT_TYPES)}")] = None,
    since: Annotated[datetime | None, Field(description="ISO 8601 time, e.g. 2026-11-18T00:00:00Z")] = None,
    until: Annotated[datetime | None, Field(description="ISO 8601 time; with since, a time range")] = None,
    parent_session_id: Annotated[str | None, Field(description="Only direct children of this session")] = None,
    root_session_id: Annotated[
        str | None, Field(description="Only sessions of the delegation tree under this top-level session")
    ] = None,
    subtree_of: Annotated[str | None, Field(description="Only this session and its descendants")] = None,
    session_status: Annotated[
        str | None, Field(description="Only sessions in this status (on summaries: the current status)")
    ] = None,
    depth: Annotated[int | None, Field(ge=0, description="Only sessions at this delegation depth (0: top)")] = None,
    limit: Annotated[int, Field(ge=1, le=100)] = 10,
    tags: Annotated[list[str] | None, Field(description="Only events carrying every one of these tags.")] = None,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Semantic search over everything recorded (commands, messages, diffs, tests, notes, summaries),
    optionally narrowed by the delegation graph (parent, root, subtree, depth), profile, session status,
    event type and time range."""
    check_tags("search_context.tags", tags or [])
    filters = SearchFilters(
        session_id=session_id,
        profile_id=profile_id,
        event_type=event_type,
        since=since,
        until=until,
        parent_session_id=parent_session_id,
        root_session_id=root_session_id,
        session_status=session_status,
        depth=depth,
        tags=tags or [],
    )
    return await hydra.search(query, filters, limit, subtree_of=subtree_of)


TOOLS = (
    ToolSpec(
        log_context,
        ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False),
    ),
    ToolSpec(search_context, READ_ONLY),
)
