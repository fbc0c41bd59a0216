"""Spawn resolution, pure: a request, the caller, the profile and the parent become a session record.

Nothing here reads a file, the clock or the journal (the caller loads the profile and named policies,
checks the working directory with :func:`checked_working_dir`, and picks the session id). The resolved
profile (goals, checklist, apply rules, test runners) goes onto the record and is never read again
from its file: editing a profile changes new sessions only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hydra_sandbox.authority import Action, Agent, SessionTree, authorize
from hydra_sandbox.errors import AccessDenied, ConfigError, PolicyViolation, shown
from hydra_sandbox.events import Event
from hydra_sandbox.lifecycle import SessionRecord, SessionStatus
from hydra_sandbox.limits import MAX_GOAL_CHARS, MAX_GOALS, MAX_PROMPT_CHARS, check_structure
from hydra_sandbox.policy import Policy, PolicyRequest, child_of, narrow
from hydra_sandbox.profiles import Profile, ProfileOverrides, apply_overrides, render_prompt

AGENT_WORKSPACE = "/workspace"
"""How an agent names its own workspace when it spawns a child."""


class SpawnFlags(BaseModel):
    """Per-run options a caller may set. Anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=128)
    timeout_s: int | None = Field(default=None, ge=1, le=86400, description="Narrows the policy's timeout.")
    max_output_bytes: int | None = Field(default=None, ge=1024)
    max_model_tokens: int | None = Field(default=None, ge=1, le=10**12, description="Narrows the model token budget.")


class SpawnPolicy(PolicyRequest):
    """A base policy by name (default: the profile's) narrowed by the other fields."""

    base: str | None = None


class SpawnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile_id: str = "default"
    custom_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    goalset: list[Annotated[str, Field(max_length=MAX_GOAL_CHARS)]] | None = Field(default=None, max_length=MAX_GOALS)
    inputs: dict[str, Any] | None = None
    working_dir: str
    flags: SpawnFlags | None = None
    policy: SpawnPolicy | None = None
    parent_session_id: str | None = None
    relationship: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("inputs")
    @classmethod
    def _bounded_inputs(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_structure("inputs", value)
        return value


class SpawnResult(BaseModel):
    session: dict[str, Any]
    events: list[Event]
    reused: bool = False


def for_agent(
    request: SpawnRequest, agent: Agent, tree: SessionTree, working_dir_of: Callable[[str], Path]
) -> SpawnRequest:
    """An agent spawns below a session of its subtree (by default its own) and names its workspace
    ``/workspace``: that path stands for the parent's working directory on the host."""
    parent_id = request.parent_session_id or agent.session_id
    try:
        authorize(agent, Action.SPAWN, session_id=parent_id, tree=tree)
    except AccessDenied as exc:  # say which argument was wrong
        raise AccessDenied(f"parent_session_id: {exc.message}", hint=exc.hint) from exc
    update: dict[str, Any] = {"parent_session_id": parent_id}
    if request.working_dir.rstrip("/") in {AGENT_WORKSPACE, ".", ""}:
        update["working_dir"] = str(working_dir_of(parent_id))
    return request.model_copy(update=update)


def resolve_spawn(
    request: SpawnRequest,
    *,
    session_id: str,
    profile: Profile,
    named_policy: Callable[[str], Policy],
    parent: SessionRecord | None,
    working_dir: Path,
    default_model: str,
    idempotency_scope: str,
) -> SessionRecord:
    """The record of a new session. ``working_dir`` is the checked, resolved directory;
    ``named_policy`` looks a policy up by name (a :class:`PolicyCatalog`'s ``get``)."""
    resolved = apply_overrides(
        profile,
        ProfileOverrides(goalset=request.goalset or [], model=request.flags.model if request.flags else None),
    )
    if parent is not None:
        _check_parent(parent, working_dir)
    return SessionRecord(
        session_id=session_id,
        profile_id=resolved.id,
        profile=resolved,
        policy=_resolve_policy(resolved, request, parent, named_policy),
        task=request.custom_prompt,
        prompt=render_prompt(resolved, request.custom_prompt, request.inputs),
        working_dir=working_dir,
        model=resolved.model or default_model,
        parent_session_id=parent.session_id if parent else None,
        relationship=request.relationship or ("child" if parent else None),
        depth=parent.depth + 1 if parent else 0,
        idempotency_key=request.idempotency_key,
        idempotency_scope=idempotency_scope if request.idempotency_key else None,
        read_only=resolved.read_only,
        flags=request.flags.model_dump(exclude_none=True) if request.flags else {},
    )


def _check_parent(parent: SessionRecord, working_dir: Path) -> None:
    if parent.status in {SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.TIMED_OUT}:
        raise PolicyViolation(f"parent_session_id: session {parent.session_id} is {parent.status}; it cannot delegate")
    if len(parent.children) >= parent.policy.delegation.max_children:
        raise PolicyViolation(
            f"delegation.max_children: session {parent.session_id} already has "
            f"{len(parent.children)} children, its policy allows {parent.policy.delegation.max_children}",
        )
    if working_dir != parent.working_dir:
        raise PolicyViolation(
            f"working_dir: a child works on its parent's workspace {parent.working_dir}, not {shown(str(working_dir))}",
            hint="narrow what the child sees with policy.directory instead",
        )


def _resolve_policy(
    profile: Profile, request: SpawnRequest, parent: SessionRecord | None, named_policy: Callable[[str], Policy]
) -> Policy:
    wanted = request.policy or SpawnPolicy()
    base_name = wanted.base or profile.policy
    if parent is None:
        base = named_policy(base_name)
    else:
        base = child_of(parent.policy)
        if wanted.base or profile.policy != parent.policy.name:
            named = named_policy(base_name)
            base = narrow(
                base,
                PolicyRequest(
                    directory=named.directory.model_copy(update={"inherited_allow": []}),
                    network=named.network,
                    resources=_clamp(named.resources.model_dump(), base.resources.model_dump()),
                ),
                name=named.name,
            )
    resources: dict[str, float | int] = dict(profile.limits)
    if request.flags and request.flags.timeout_s is not None:
        resources["timeout_s"] = request.flags.timeout_s
    if request.flags and request.flags.max_output_bytes is not None:
        resources["max_output_bytes"] = request.flags.max_output_bytes
    if request.flags and request.flags.max_model_tokens is not None:
        resources["max_model_tokens"] = request.flags.max_model_tokens
    if wanted.resources:
        resources.update(wanted.resources)
    narrowing = PolicyRequest(
        directory=wanted.directory,
        network=wanted.network,
        resources=resources or None,
        delegation=wanted.delegation,
    )
    return narrow(base, narrowing)


def _clamp(wanted: dict[str, Any], limit: dict[str, Any]) -> dict[str, float | int]:
    """A named policy's numbers, capped at what the parent allows (a child never gets more)."""
    return {
        k: v if limit[k] is None else min(v, limit[k])
        for k, v in wanted.items()
        if isinstance(v, int | float) and k in limit
    }


def checked_working_dir(given: str) -> Path:
    """The resolved absolute directory a caller named (this one touches the file system: call it in a
    worker thread). A path the OS refuses (``~nosuchuser``, a name too long, a NUL byte) is a
    :class:`ConfigError` naming working_dir, like any other bad path."""
    try:
        path = Path(given).expanduser()
        if not path.is_absolute():
            raise ConfigError(
                f"working_dir: {shown(given)} is not an absolute path",
                hint="pass the absolute path of the directory the agent should work on",
            )
        if not path.is_dir():
            raise ConfigError(f"working_dir: {shown(str(path))} is not a directory")
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"working_dir: {shown(given)} cannot be used: {reason}",
            hint="pass the absolute path of an existing directory",
        ) from None
