"""Following and steering sessions."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import Context
from fastmcp.dependencies import Depends
from mcp.types import ToolAnnotations
from pydantic import Field

from hydra_sandbox.limits import MAX_LIST_LIMIT, MAX_PAGE_EVENTS, MAX_PROMPT_CHARS
from hydra_sandbox.mcp.facade import Facade, bound_facade, event_dicts
from hydra_sandbox.mcp.tools.spec import READ_ONLY, ToolSpec


async def list_sessions(
    status: Annotated[
        str | None,
        Field(description="queued, starting, running, awaiting_approval, completed, failed, cancelled or timed_out"),
    ] = None,
    profile_id: str | None = None,
    parent_session_id: str | None = None,
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT)] = 50,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Sessions, newest first, filtered by status, profile or parent."""
    return hydra.sessions(status, profile_id, parent_session_id, limit)


async def wait_session(
    session_id: str,
    ctx: Context,
    timeout_s: Annotated[float, Field(ge=0, le=3600)] = 60,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Wait until the session leaves queued/starting/running, or timeout_s passes.

    Sends progress notifications (events so far, checklist state) while waiting."""

    async def report(events: int, message: str) -> None:
        await ctx.report_progress(events, None, message)

    record = await hydra.wait(session_id, timeout_s, report)
    return {
        "session_id": session_id,
        "status": record.status.value,
        "finished": not record.active,
        "session": hydra.view(record),
        "last_events": event_dicts(await hydra.last_events(session_id, 10)),
    }


async def tail_logs(
    session_id: str,
    since: Annotated[int, Field(ge=0, description="First event counter to return.")] = 0,
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_EVENTS)] = 100,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Masked events of a session from counter `since` on, for hosts that poll: one bounded page (at most
    `limit` events and about 1 MiB); `next_since` is the cursor for the next page, `more` says one is ready."""
    return {"session_id": session_id, **await hydra.page(session_id, since, limit)}


async def summarize_session(session_id: str, hydra: Facade = Depends(bound_facade)) -> dict[str, Any]:
    """Structured summary, narrative and checklist status of a session."""
    record = hydra.session(session_id)
    latest = await hydra.latest_summary(session_id)
    return {
        "session": hydra.view(record),
        "narrative": latest.text if latest else "no summary yet",
        "summary": latest.data if latest else {},
    }


async def terminate_session(session_id: str, reason: str, hydra: Facade = Depends(bound_facade)) -> dict[str, Any]:
    """Stop a queued or running session (SIGTERM, grace period, then kill)."""
    record = await hydra.terminate(session_id, reason)
    return {"session_id": session_id, "status": record.status.value}


async def resume_session(
    session_id: str,
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)],
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Continue a finished session's Codex thread with a new prompt, in a new run."""
    record = await hydra.resume(session_id, prompt)
    return {"session_id": session_id, "status": record.status.value}


TOOLS = (
    ToolSpec(list_sessions, READ_ONLY),
    ToolSpec(wait_session, READ_ONLY),
    ToolSpec(tail_logs, READ_ONLY),
    ToolSpec(summarize_session, READ_ONLY),
    ToolSpec(
        terminate_session,
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    ),
    ToolSpec(
        resume_session,
        ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True),
    ),
)
