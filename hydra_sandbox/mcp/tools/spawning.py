"""Starting agents."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp.dependencies import Depends
from mcp.types import ToolAnnotations
from pydantic import Field

from hydra_sandbox.mcp.facade import Facade, bound_facade
from hydra_sandbox.mcp.tools.spec import ToolSpec
from hydra_sandbox.orchestration.spawning import SpawnFlags, SpawnPolicy, SpawnRequest


async def spawn_agent(
    working_dir: Annotated[
        str,
        Field(
            description="Absolute path of the directory the agent works on. An agent inside a Hydra "
            "sandbox passes /workspace: its child works on the same directory."
        ),
    ],
    profile_id: Annotated[str, Field(description="Profile id from list_agents.")] = "default",
    custom_prompt: Annotated[str | None, Field(description="The task, in plain words.")] = None,
    goalset: Annotated[list[str] | None, Field(description="Extra goals appended to the profile's.")] = None,
    inputs: Annotated[dict[str, Any] | None, Field(description="Named values given to the agent.")] = None,
    flags: Annotated[
        SpawnFlags | None, Field(description="Per-run options: model, timeout_s, max_output_bytes, max_model_tokens.")
    ] = None,
    policy: Annotated[
        SpawnPolicy | None,
        Field(
            description="base policy name and/or narrowing of directory, network, resources, "
            "delegation. Can only narrow the profile's (or parent's) policy."
        ),
    ] = None,
    parent_session_id: Annotated[str | None, Field(description="Spawn as a child of this session.")] = None,
    relationship: Annotated[str | None, Field(description="e.g. 'review', 'subtask'.")] = None,
    idempotency_key: Annotated[str | None, Field(description="Same key again returns the existing session.")] = None,
    hydra: Facade = Depends(bound_facade),
) -> dict[str, Any]:
    """Start a Codex agent in a hardened sandbox on a copy-on-write view of working_dir.

    Returns at once with the session_id, its status and first events; the host directory is
    not changed until apply_diff(confirm=true). Use wait_session to follow it."""
    request = SpawnRequest(
        profile_id=profile_id,
        custom_prompt=custom_prompt,
        goalset=goalset,
        inputs=inputs,
        working_dir=working_dir,
        flags=flags,
        policy=policy,
        parent_session_id=parent_session_id,
        relationship=relationship,
        idempotency_key=idempotency_key,
    )
    return await hydra.spawn(request)


TOOLS = (
    ToolSpec(
        spawn_agent,
        ToolAnnotations(
            title="Spawn a sandboxed Codex agent",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    ),
)
