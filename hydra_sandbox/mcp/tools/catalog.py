"""What can be spawned: the agent profiles."""

from __future__ import annotations

from typing import Any

from fastmcp.dependencies import Depends

from hydra_sandbox.mcp.facade import Facade, bound_facade
from hydra_sandbox.mcp.tools.spec import READ_ONLY, ToolSpec


async def list_agents(hydra: Facade = Depends(bound_facade)) -> dict[str, Any]:
    """The agent profiles: id, title, description, goalset, checklist and default policy."""
    good, bad = await hydra.profiles()
    return {
        "profiles": [
            {
                "id": p.id,
                "title": p.title,
                "description": p.description,
                "goalset": p.goalset,
                "policy": p.policy,
                "read_only": p.read_only,
                "checklist": [{"id": i.id, "description": i.description} for i in p.checklist_template],
            }
            for p in good.values()
        ],
        "broken": {k: str(v) for k, v in bad.items()},
    }


TOOLS = (ToolSpec(list_agents, READ_ONLY),)
