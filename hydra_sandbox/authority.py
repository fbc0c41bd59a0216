"""Who may do what: the principals, the one table of every MCP tool, resource and prompt, and
:func:`authorize`, the one place that decides.

Two principals exist. The **operator** is the host process on stdio, or whoever holds the operator's
bearer token over HTTP. An **agent** is a run inside a sandbox, known by the per-run token that Hydra
gave it; it acts for its own session and may reach only that session's subtree (itself and the
sessions spawned below it).

Fail-closed: nothing here has a default principal; a component that is not in :data:`COMPONENTS` is
refused to everyone; an action not listed in :data:`ROLES` is refused; a session that cannot be
placed in the caller's subtree within :data:`MAX_DEPTH` steps (a cycle, a broken chain) is not
visible. The agent's MCP server is built from the rows that allow agents and from nothing else
(:func:`agent_components`), so a tool reaches agents only by being listed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.errors import AccessDenied, shown

MAX_DEPTH = 64
"""How many parents :func:`in_subtree` walks at most (delegation depth is far below this)."""


class Role(StrEnum):
    OPERATOR = "operator"
    AGENT = "agent"


class Operator(BaseModel):
    """The operator: the stdio host, or the holder of the HTTP bearer token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal[Role.OPERATOR] = Role.OPERATOR


class Agent(BaseModel):
    """An agent inside a sandbox, acting for its own session (and the sessions below it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal[Role.AGENT] = Role.AGENT
    session_id: str = Field(min_length=1, max_length=200)


Principal: TypeAlias = Operator | Agent
OPERATOR = Operator()


class Action(StrEnum):
    """What a component does, as far as authority is concerned."""

    SPAWN = "spawn"
    CATALOG = "catalog"
    READ = "read"
    CONTROL = "control"
    NOTE = "note"
    SEARCH = "search"
    APPLY = "apply"
    DISCARD = "discard"
    STATUS = "status"
    PROMPT = "prompt"


_BOTH = frozenset({Role.OPERATOR, Role.AGENT})
_OPERATOR_ONLY = frozenset({Role.OPERATOR})

ROLES: dict[Action, frozenset[Role]] = {
    Action.SPAWN: _BOTH,
    Action.CATALOG: _BOTH,
    Action.READ: _BOTH,
    Action.CONTROL: _BOTH,
    Action.NOTE: _BOTH,
    Action.SEARCH: _BOTH,
    Action.APPLY: _OPERATOR_ONLY,
    Action.DISCARD: _OPERATOR_ONLY,
    Action.STATUS: _OPERATOR_ONLY,
    Action.PROMPT: _OPERATOR_ONLY,
}
"""Who may perform each action. An action missing here is refused to everyone."""

_DOES: dict[Action, str] = {
    Action.APPLY: "write a session's diff to the host",
    Action.DISCARD: "throw a session's diff away",
    Action.STATUS: "read the server's status",
    Action.PROMPT: "use the operator's prompts",
}


class Kind(StrEnum):
    TOOL = "tool"
    RESOURCE = "resource"
    PROMPT = "prompt"


@dataclass(frozen=True)
class Component:
    """One row of the table: a tool, a resource (or resource template) or a prompt."""

    kind: Kind
    key: str
    """The tool or prompt name, or the resource URI (template); :data:`PROFILE_PROMPTS` for the
    prompts made from profiles."""
    action: Action
    agent_scope: str
    """What an agent reaches through it (``-`` where agents may not call it)."""

    @property
    def roles(self) -> frozenset[Role]:
        return ROLES.get(self.action, frozenset())


PROFILE_PROMPTS = "{profile_id}"
"""The key of the prompts made from profiles (one per profile, named after it)."""
PROFILE_PROMPT_TAG = "profile"
"""The tag those prompts carry, so that :func:`component_key` finds their row."""

_SUBTREE = "sessions of its subtree only"
_T, _R, _P = Kind.TOOL, Kind.RESOURCE, Kind.PROMPT
COMPONENTS: tuple[Component, ...] = (
    Component(_T, "spawn_agent", Action.SPAWN, "children below a session of its subtree (default: itself)"),
    Component(_T, "list_agents", Action.CATALOG, "every profile"),
    Component(_T, "list_sessions", Action.READ, "lists its subtree only"),
    Component(_T, "wait_session", Action.READ, _SUBTREE),
    Component(_T, "tail_logs", Action.READ, _SUBTREE),
    Component(_T, "summarize_session", Action.READ, _SUBTREE),
    Component(_T, "terminate_session", Action.CONTROL, _SUBTREE),
    Component(_T, "resume_session", Action.CONTROL, _SUBTREE),
    Component(_T, "log_context", Action.NOTE, "its own session, or one of its subtree; never the host's notes"),
    Component(_T, "search_context", Action.SEARCH, "hits from its subtree only"),
    Component(_T, "get_diff", Action.READ, _SUBTREE),
    Component(_T, "apply_diff", Action.APPLY, "-"),
    Component(_T, "discard_diff", Action.DISCARD, "-"),
    Component(_R, "hydra://profiles", Action.CATALOG, "every profile"),
    Component(_R, "hydra://policies", Action.CATALOG, "every policy"),
    Component(_R, "hydra://sessions/{session_id}", Action.READ, _SUBTREE),
    Component(_R, "hydra://checklists/{session_id}", Action.READ, _SUBTREE),
    Component(_R, "hydra://sessions/{session_id}/tree", Action.READ, _SUBTREE),
    Component(_R, "hydra://status", Action.STATUS, "-"),
    Component(_P, "additional_agent", Action.PROMPT, "-"),
    Component(_P, PROFILE_PROMPTS, Action.PROMPT, "-"),
)
"""THE table: every tool, resource and prompt either server registers, and what it does."""

_BY_KEY = {(c.kind, c.key): c for c in COMPONENTS}


def _template(uri: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^}]+\}", uri)
    return re.compile("[^/]+".join(re.escape(p) for p in parts))


_RESOURCE_PATTERNS = [(_template(c.key), c) for c in COMPONENTS if c.kind == Kind.RESOURCE and "{" in c.key]


def component(kind: Kind, key: str) -> Component | None:
    """The row of a registered component, by its key (see :func:`component_key`)."""
    return _BY_KEY.get((kind, key))


def component_key(kind: Kind, name: str, tags: frozenset[str] | set[str] = frozenset()) -> str:
    """The table key of a registered component: its name, or URI template; profile prompts share one."""
    if kind == Kind.PROMPT and PROFILE_PROMPT_TAG in tags:
        return PROFILE_PROMPTS
    return name


def resource_for(uri: str) -> Component | None:
    """The row of a resource URI as read (``hydra://sessions/s-1`` finds ``hydra://sessions/{session_id}``)."""
    found = _BY_KEY.get((Kind.RESOURCE, uri))
    if found is not None:
        return found
    for pattern, row in _RESOURCE_PATTERNS:
        if pattern.fullmatch(uri):
            return row
    return None


def agent_components(kind: Kind) -> frozenset[str]:
    """The keys of the components of ``kind`` that agents may call: what the agent server holds."""
    return frozenset(c.key for c in COMPONENTS if c.kind == kind and Role.AGENT in c.roles)


def describe(principal: Principal) -> str:
    return "the operator" if isinstance(principal, Operator) else f"agent session {principal.session_id}"


def namespace(principal: Principal) -> str:
    """Where the principal's idempotency keys live: the operator's, or one agent session's own."""
    return "operator" if isinstance(principal, Operator) else f"agent:{principal.session_id}"


class SessionTree(Protocol):
    """The delegation graph, as far as authority needs it."""

    def parent_of(self, session_id: str) -> str | None: ...


def in_subtree(root: str, session_id: str, tree: SessionTree) -> bool:
    """Whether ``session_id`` is ``root`` or below it. A cycle or a chain deeper than
    :data:`MAX_DEPTH` answers ``False``: what cannot be placed is not visible."""
    current: str | None = session_id
    seen: set[str] = set()
    while current is not None and current not in seen and len(seen) <= MAX_DEPTH:
        if current == root:
            return True
        seen.add(current)
        current = tree.parent_of(current)
    return False


def authorize(
    principal: Principal, action: Action, *, session_id: str | None = None, tree: SessionTree | None = None
) -> None:
    """Refuse (:class:`AccessDenied`) unless ``principal`` may perform ``action``, on ``session_id``
    when one is named (an agent: only in its subtree, which needs the ``tree``)."""
    if principal.role not in ROLES.get(action, frozenset()):
        raise AccessDenied(
            f"{describe(principal)} may not {_DOES.get(action, action.value)}",
            hint="only the operator can; ask the operator (an agent's diff is applied or discarded by a person)",
        )
    if session_id is None or isinstance(principal, Operator):
        return
    if tree is None or not in_subtree(principal.session_id, session_id, tree):
        raise AccessDenied(
            f"session {shown(session_id)}: not visible to agent session {principal.session_id}",
            hint="an agent's token is valid only for its own session and the sessions it spawned",
        )


def visible(principal: Principal, session_id: str, tree: SessionTree) -> bool:
    """Whether ``principal`` may see ``session_id`` (for filtering lists and search hits)."""
    return isinstance(principal, Operator) or in_subtree(principal.session_id, session_id, tree)


def authorize_component(principal: Principal, kind: Kind, key: str, shown_as: str) -> Component:
    """Refuse a call to a component the table does not list, or one ``principal`` may not call.

    ``shown_as`` names the component in the refusal (the tool name, the URI read)."""
    row = component(kind, key)
    if row is None:
        raise AccessDenied(
            f"{kind.value} {shown(shown_as)}: not in Hydra's authority table, so nobody may call it",
            hint="add a row to hydra_sandbox.authority.COMPONENTS",
        )
    try:
        authorize(principal, row.action)
    except AccessDenied as exc:
        raise AccessDenied(f"{shown_as}: {exc.message}", hint=exc.hint) from None
    return row
