"""Event models: what Hydra records about every session.

A parser or the manager produces :class:`EventDraft`s; the journal turns each into an
:class:`Event` by giving it the next counter of its session, so ids are ``f"{session_id}:{counter}"``
with counters from 0 and no gaps. All text in an event is masked before it gets here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

EventType = Literal[
    "command",
    "diff",
    "test",
    "decision",
    "approval",
    "message",
    "error",
    "status",
    "note",
    "checklist",
    "summary",
    "output",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime) -> datetime:
    """``ts`` with a time zone: a naive timestamp (as old journals and callers give) is read as UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class EventDraft(BaseModel):
    """An event before the journal has given it a counter."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    text: str = Field(description="Masked, human-readable text; what search embeds.")
    data: dict[str, Any] = Field(default_factory=dict, description="Type-specific structured payload.")
    tags: list[str] = Field(default_factory=list)
    related_files: list[str] = Field(default_factory=list)
    related_sessions: list[str] = Field(default_factory=list)
    timestamp: datetime = Field(default_factory=utcnow)
    _text_masked: bool = PrivateAttr(default=False)

    def mark_text_masked(self) -> None:
        """Say that ``text`` was masked line by line by the output pipeline, so the recorder does not mask
        the joined text again. A private attribute: no caller can set it through a tool or a file."""
        self._text_masked = True

    @property
    def text_masked(self) -> bool:
        return self._text_masked


class SessionRef(BaseModel):
    """Who an event belongs to: filled in by whoever records it."""

    model_config = ConfigDict(extra="forbid")

    session_id: str
    profile_id: str | None = None
    parent_session_id: str | None = None
    relationship: str | None = None
    root_session_id: str | None = Field(default=None, description="The top of the session's delegation tree.")
    depth: int | None = Field(default=None, ge=0, description="0 for a session the host spawned.")


class Event(EventDraft):
    """A recorded event."""

    id: str
    session_id: str
    counter: int = Field(ge=0)
    profile_id: str | None = None
    parent_session_id: str | None = None
    relationship: str | None = None
    root_session_id: str | None = None
    depth: int | None = None
    session_status: str | None = Field(
        default=None,
        description="Set by the indexer on the copy it indexes, never journaled: the session's status as of "
        "this event; on summaries, kept current by each later status change.",
    )

    @classmethod
    def from_draft(cls, draft: EventDraft, ref: SessionRef, counter: int) -> Event:
        return cls(
            **draft.model_dump(),
            **ref.model_dump(),
            id=event_id(ref.session_id, counter),
            counter=counter,
        )


def event_id(session_id: str, counter: int) -> str:
    return f"{session_id}:{counter}"
