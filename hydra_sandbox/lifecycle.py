"""Session lifecycle: the states, the transitions allowed between them, and a session's record.

``queued → starting → running → awaiting_approval → completed``, or ``failed``, ``cancelled``,
``timed_out``. ``awaiting_approval`` means the run ended with changes that nobody has applied or
discarded yet. A finished session may be resumed, which queues a new run of the same session.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.errors import InvalidTransitionError
from hydra_sandbox.events import utcnow
from hydra_sandbox.policy import Policy
from hydra_sandbox.profiles import Profile


class SessionStatus(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


ACTIVE = frozenset({SessionStatus.QUEUED, SessionStatus.STARTING, SessionStatus.RUNNING})
FINISHED = frozenset({SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.TIMED_OUT})

_S = SessionStatus
TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    _S.QUEUED: frozenset({_S.STARTING, _S.CANCELLED, _S.FAILED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED, _S.TIMED_OUT}),
    _S.RUNNING: frozenset({_S.AWAITING_APPROVAL, _S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.TIMED_OUT}),
    _S.AWAITING_APPROVAL: frozenset({_S.COMPLETED, _S.QUEUED}),
    _S.COMPLETED: frozenset({_S.QUEUED}),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.CANCELLED: frozenset({_S.QUEUED}),
    _S.TIMED_OUT: frozenset({_S.QUEUED}),
}


def check_transition(session_id: str, current: SessionStatus, target: SessionStatus) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        raise InvalidTransitionError(
            f"session {session_id}: cannot go from {current} to {target}",
            hint=f"from {current} the session may go to: {allowed}",
        )


class DiffState(StrEnum):
    NONE = "none"
    PENDING = "pending"
    APPLIED = "applied"
    DISCARDED = "discarded"


class SessionRecord(BaseModel):
    """What Hydra remembers about one session; persisted in the journal's sessions table."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    status: SessionStatus = SessionStatus.QUEUED
    profile_id: str
    profile: Profile | None = Field(
        default=None,
        description="The profile as resolved at spawn (goals, checklist, apply rules, test runners); "
        "never re-read from its file. None only on records written before it was stored.",
    )
    policy: Policy
    task: str | None = None
    prompt: str
    working_dir: Path
    model: str
    parent_session_id: str | None = None
    relationship: str | None = None
    depth: int = 0
    idempotency_key: str | None = None
    idempotency_scope: str | None = Field(
        default=None, description="Whose key it is (authority.namespace): keys of one principal never match another's."
    )
    read_only: bool = False
    flags: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    thread_id: str | None = None
    container_id: str | None = None
    host: str | None = Field(
        default=None,
        description="The engine the agent runs (or last ran) on: an engine URL without credentials, or "
        "'local'. None until a container started (and on records written before it was kept).",
    )
    runs: int = 0
    diff_state: DiffState = DiffState.NONE
    children: list[str] = Field(default_factory=list)
    checklist: dict[str, Any] = Field(default_factory=dict)
    files_changed: list[str] = Field(
        default_factory=list, description="The session's change set (what the diff preview shows) after its last run."
    )

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def public(self) -> dict[str, Any]:
        """The fields a host sees in tool results (no prompt body, which may be long)."""
        return self.model_dump(
            mode="json",
            include={
                "session_id",
                "status",
                "profile_id",
                "task",
                "working_dir",
                "model",
                "parent_session_id",
                "relationship",
                "depth",
                "read_only",
                "created_at",
                "started_at",
                "finished_at",
                "reason",
                "thread_id",
                "host",
                "runs",
                "diff_state",
                "children",
                "files_changed",
            },
        )
