"""Who is calling: the operator (full access) or an agent inside a sandbox, whose token is valid only
for its own session and the sessions below it in the delegation tree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from hydra_sandbox.errors import PolicyViolation


class Caller(BaseModel):
    kind: Literal["operator", "agent"] = "operator"
    session_id: str | None = None


OPERATOR = Caller()


def in_subtree(root: str, session_id: str, parent_of: Callable[[str], str | None]) -> bool:
    """Whether ``session_id`` is ``root`` or below it (walks parents, bounded against cycles)."""
    current: str | None = session_id
    for _ in range(64):
        if current is None:
            return False
        if current == root:
            return True
        current = parent_of(current)
    return False


def authorize(caller: Caller, session_id: str, parent_of: Callable[[str], str | None]) -> None:
    if caller.kind == "operator":
        return
    if caller.session_id is None or not in_subtree(caller.session_id, session_id, parent_of):
        raise PolicyViolation(
            f"session {session_id}: not visible to agent session {caller.session_id}",
            hint="an agent's token is valid only for its own session and the sessions it spawned",
        )
