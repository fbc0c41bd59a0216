"""Reviewing a finished session's changes, and applying or discarding them (the operator's decision)."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp.dependencies import Depends
from mcp.types import ToolAnnotations
from pydantic import Field

from hydra_sandbox.mcp.facade import Facade, bound_facade
from hydra_sandbox.mcp.tools.spec import READ_ONLY, ToolSpec


async def get_diff(session_id: str, hydra: Facade = Depends(bound_facade)) -> dict[str, Any]:
    """Preview of a finished session's changes against the host files apply would replace: unified
    diff, per-file status and sizes, stats, refused writes, files whose lines masking hid, and the
    digest of the change set that apply_diff needs."""
    return await hydra.diff(session_id)


async def apply_diff(
    session_id: str,
    confirm: Annotated[bool, Field(description="Must be true to write anything to the host.")] = False,
    digest: Annotated[
        str | None,
        Field(description="The digest get_diff returned; required with confirm=true.", max_length=80),
    ] = None,
    acknowledge_masked: Annotated[
        bool, Field(description="Apply files whose lines masking hid from the preview (see masked_files).")
    ] = False,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Write a session's allowed changes to its working_dir. Does nothing unless confirm is true.

    Refuses a change set other than the one of `digest` (from get_diff), files with masked lines
    unless acknowledge_masked is true, target files changed on the host since the session started,
    or an unmet profile rule (e.g. a passing code review)."""
    return await hydra.apply(session_id, confirm, digest, acknowledge_masked)


async def discard_diff(session_id: str, hydra: Facade = Depends(bound_facade)) -> dict[str, Any]:
    """Throw a finished session's changes away; the host directory is not touched."""
    record = await hydra.discard(session_id)
    return {"session_id": session_id, "status": record.status.value, "diff_state": record.diff_state.value}


TOOLS = (
    ToolSpec(get_diff, READ_ONLY),
    ToolSpec(
        apply_diff,
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False),
    ),
    ToolSpec(
        discard_diff,
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    ),
)
