"""Hydra's MCP prompts: one per profile (named after it) and ``additional_agent``, which helps choose a
profile and policy. The profile list is read when the server is built; each prompt reads the catalog
again (in a worker thread) when it is rendered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastmcp import FastMCP

from hydra_sandbox.authority import PROFILE_PROMPT_TAG
from hydra_sandbox.profiles import ProfileCatalog, ProfileOverrides, apply_overrides, render_prompt
from hydra_sandbox.settings import HydraSettings


def _profile_prompt(catalog: ProfileCatalog, profile_id: str) -> Callable[..., Awaitable[str]]:
    async def prompt(task: str, extra_goals: str = "") -> str:
        goals = [g.strip() for g in extra_goals.split(";") if g.strip()]
        profile = await asyncio.to_thread(catalog.get, profile_id)
        return render_prompt(apply_overrides(profile, ProfileOverrides(goalset=goals)), task)

    return prompt


def additional_agent_prompt(catalog: ProfileCatalog) -> Callable[..., Awaitable[str]]:
    async def additional_agent(task: str, needs_network: str = "no", modifies_files: str = "yes") -> str:
        """Helps decide which profile and policy to give a new agent for a task."""
        profiles, _ = await asyncio.to_thread(catalog.load_all)
        lines = [f"- {p.id}: {p.title}. {p.description} (default policy: {p.policy})" for p in profiles.values()]
        return (
            "You are choosing an agent for this task:\n"
            f"{task}\n\nAvailable profiles:\n" + "\n".join(lines) + "\n\n"
            f"The task needs network beyond the model: {needs_network}. It modifies files: {modifies_files}.\n"
            "Rules: prefer the narrowest policy that can do the job; a review or analysis uses "
            "code_reviewer with the read_only policy; use network mode 'none' unless the model endpoint "
            "is needed, and 'allowlist' only with named domains; restrict directory.allow to the paths the "
            "task touches. Answer with the spawn_agent arguments (profile_id, policy, flags) and one "
            "sentence of justification."
        )

    return additional_agent


def register_prompts(mcp: FastMCP, settings: HydraSettings) -> None:
    catalog = ProfileCatalog(settings.profile_dirs)
    good, _bad = catalog.load_all()
    for profile in good.values():
        mcp.prompt(
            _profile_prompt(catalog, profile.id),
            name=profile.id,
            description=f"{profile.title}: {profile.description} Arguments: task; extra_goals (semicolon-separated).",
            tags={PROFILE_PROMPT_TAG},
        )
    mcp.prompt(additional_agent_prompt(catalog), name="additional_agent")
