"""The search index seam: :class:`ContextStore` and an in-memory fake for other modules' tests.

The journal is the source of truth; a ContextStore is a rebuildable index over it. Every method is
synchronous (the server calls them in worker threads). Writes are upserts by event id, so replaying
events never duplicates them. Events of type ``summary`` live in a separate summaries collection;
:meth:`ContextStore.semantic_search` searches both and merges the hits by distance.

``SearchHit.metadata`` has the same shape for every implementation: ``counter`` (int), ``timestamp``
(ISO 8601 string), ``tags``, ``related_files``, ``related_sessions`` (lists of str), ``data`` (dict)
and, when set, the session state: ``profile_id``, ``parent_session_id``, ``relationship``,
``root_session_id``, ``depth``, ``session_status``; summaries also carry ``checklist_done``,
``checklist_total`` and ``checklist_complete``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.errors import StoreError, UnindexableEventError
from hydra_sandbox.events import Event, as_utc
from hydra_sandbox.limits import index_problem

SUMMARY_TYPE = "summary"


class SearchFilters(BaseModel):
    """Restrictions on a search; every field that is set must match (tags: all of them)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = None
    profile_id: str | None = None
    event_type: str | None = None
    tags: list[str] = Field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    parent_session_id: str | None = None
    root_session_id: str | None = Field(default=None, description="Events of every session under this root.")
    session_ids: list[str] | None = Field(
        default=None, description="Events of these sessions only (a subtree, as the facade expands it)."
    )
    session_status: str | None = Field(default=None, description="The session's status as of the event.")
    depth: int | None = Field(default=None, ge=0)


class SearchHit(BaseModel):
    """One search result. ``distance`` is cosine distance: smaller is closer (0 for exact lookups)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    session_id: str
    type: str
    text: str
    distance: float
    metadata: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class ContextStore(Protocol):
    """A searchable index of events. Implementations: ChromaStore, InMemoryStore."""

    def record_events(self, events: Sequence[Event]) -> None:
        """Upsert events by id (summaries into the summaries collection). Raises UnindexableEventError,
        writing nothing, if one of them is over an index limit (:func:`hydra_sandbox.limits.index_problem`)."""

    def record_event(self, event: Event) -> None: ...

    def finalize_session(self, session_id: str, summary: Event) -> None:
        """Store a session's final summary event (type ``summary``) in the summaries collection."""

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]:
        """A session's indexed events (and summary), in counter order."""

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self) -> int:
        """Events plus summaries held."""

    def reset(self) -> None:
        """Drop everything (before a rebuild from the journal)."""


def hit_metadata(event: Event) -> dict[str, Any]:
    """The metadata dict a SearchHit carries for ``event`` (shared by every implementation)."""
    meta: dict[str, Any] = {
        "counter": event.counter,
        "timestamp": as_utc(event.timestamp).isoformat(),
        "tags": list(event.tags),
        "related_files": list(event.related_files),
        "related_sessions": list(event.related_sessions),
        "data": dict(event.data),
    }
    for key in STATE_KEYS:
        value = getattr(event, key)
        if value is not None:
            meta[key] = value
    meta.update(checklist_counts(event))
    return meta


STATE_KEYS = ("profile_id", "parent_session_id", "relationship", "root_session_id", "depth", "session_status")
"""The session state a document carries as plain metadata (absent when unset)."""


def checklist_counts(event: Event) -> dict[str, int | bool]:
    """On a summary: ``checklist_done``, ``checklist_total`` and ``checklist_complete``; else nothing."""
    checklist = event.data.get("checklist") if event.type == SUMMARY_TYPE else None
    items = checklist.get("items") if isinstance(checklist, dict) else None
    if not isinstance(items, list):
        return {}
    done = sum(1 for item in items if isinstance(item, dict) and item.get("done") is True)
    complete = bool(items) and done == len(items)
    return {"checklist_done": done, "checklist_total": len(items), "checklist_complete": complete}


def check_summary(session_id: str, summary: Event) -> None:
    if summary.type != SUMMARY_TYPE or summary.session_id != session_id:
        raise StoreError(
            f"finalize_session({session_id!r}) got event {summary.id} of type {summary.type!r} "
            f"for session {summary.session_id!r}",
            hint="pass the session's own event of type 'summary'",
        )


def check_indexable(events: Sequence[Event]) -> None:
    """Raise UnindexableEventError for the first event over an index limit (before any write)."""
    for event in events:
        problem = index_problem(event)
        if problem is not None:
            raise UnindexableEventError(event.id, problem)


def matches(event: Event, filters: SearchFilters | None) -> bool:
    """Whether ``event`` passes ``filters`` (the reference semantics every store follows)."""
    if filters is None:
        return True
    ts = as_utc(event.timestamp)
    return (
        (filters.session_id is None or event.session_id == filters.session_id)
        and (filters.profile_id is None or event.profile_id == filters.profile_id)
        and (filters.event_type is None or event.type == filters.event_type)
        and (filters.parent_session_id is None or event.parent_session_id == filters.parent_session_id)
        and (filters.root_session_id is None or event.root_session_id == filters.root_session_id)
        and (filters.session_ids is None or event.session_id in filters.session_ids)
        and (filters.session_status is None or event.session_status == filters.session_status)
        and (filters.depth is None or event.depth == filters.depth)
        and all(tag in event.tags for tag in filters.tags)
        and (filters.since is None or ts >= as_utc(filters.since))
        and (filters.until is None or ts <= as_utc(filters.until))
    )


_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


class InMemoryStore:
    """A fake ContextStore for unit tests: token-overlap scoring, same filters and hit shape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, Event] = {}
        self._summaries: dict[str, Event] = {}

    def _bucket(self, event: Event) -> dict[str, Event]:
        return self._summaries if event.type == SUMMARY_TYPE else self._events

    def record_events(self, events: Sequence[Event]) -> None:
        check_indexable(events)
        with self._lock:
            for event in events:
                # an id keeps one place even if its type changed between writes
                self._events.pop(event.id, None)
                self._summaries.pop(event.id, None)
                self._bucket(event)[event.id] = event

    def record_event(self, event: Event) -> None:
        self.record_events([event])

    def finalize_session(self, session_id: str, summary: Event) -> None:
        check_summary(session_id, summary)
        self.record_events([summary])

    @staticmethod
    def _hit(event: Event, distance: float) -> SearchHit:
        return SearchHit(
            id=event.id,
            session_id=event.session_id,
            type=event.type,
            text=event.text,
            distance=distance,
            metadata=hit_metadata(event),
        )

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]:
        with self._lock:
            found = [e for e in (*self._events.values(), *self._summaries.values()) if e.session_id == session_id]
        found.sort(key=lambda e: e.counter)
        return [self._hit(e, 0.0) for e in found[:limit]]

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]:
        wanted = _tokens(query)
        with self._lock:
            candidates = [e for e in (*self._events.values(), *self._summaries.values()) if matches(e, filters)]
        scored = []
        for event in candidates:
            have = _tokens(event.text)
            overlap = len(wanted & have) / max(1, len(wanted | have))
            scored.append((1.0 - overlap, event.id, event))
        scored.sort(key=lambda t: (t[0], t[1]))
        return [self._hit(e, d) for d, _, e in scored[:limit]]

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            for event_id in ids:
                self._events.pop(event_id, None)
                self._summaries.pop(event_id, None)

    def count(self) -> int:
        with self._lock:
            return len(self._events) + len(self._summaries)

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._summaries.clear()
