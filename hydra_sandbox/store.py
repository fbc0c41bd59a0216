"""The event store seam: what search needs, as a Protocol, with an in-memory implementation.

``chroma_store.ChromaStore`` is the real one (embedded or a Chroma server). All methods are
blocking; async code calls them in worker threads. Summary events go to a separate summaries
collection; ``semantic_search`` searches both.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from hydra_sandbox.events import Event


class SearchFilters(BaseModel):
    session_id: str | None = None
    profile_id: str | None = None
    event_type: str | None = None
    tags: list[str] = Field(default_factory=list, description="Every tag must be present.")
    since: datetime | None = None
    until: datetime | None = None
    parent_session_id: str | None = None


class SearchHit(BaseModel):
    id: str
    session_id: str
    type: str
    text: str
    distance: float = Field(description="Smaller is closer.")
    metadata: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class ContextStore(Protocol):
    def record_events(self, events: Sequence[Event]) -> None:
        """Upsert by id: recording the same event twice stores it once."""
        ...

    def record_event(self, event: Event) -> None: ...

    def finalize_session(self, session_id: str, summary: Event) -> None: ...

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]: ...

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self) -> int: ...

    def reset(self) -> None: ...


def matches_filters(event: Event, filters: SearchFilters | None) -> bool:
    if filters is None:
        return True
    checks = [
        filters.session_id is None or event.session_id == filters.session_id,
        filters.profile_id is None or event.profile_id == filters.profile_id,
        filters.event_type is None or event.type == filters.event_type,
        filters.parent_session_id is None or event.parent_session_id == filters.parent_session_id,
        all(t in event.tags for t in filters.tags),
        filters.since is None or event.timestamp >= filters.since,
        filters.until is None or event.timestamp <= filters.until,
    ]
    return all(checks)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def hit_from_event(event: Event, distance: float) -> SearchHit:
    return SearchHit(
        id=event.id,
        session_id=event.session_id,
        type=event.type,
        text=event.text,
        distance=distance,
        metadata={
            "counter": event.counter,
            "profile_id": event.profile_id,
            "timestamp": event.timestamp.isoformat(),
            "tags": event.tags,
        },
    )


class InMemoryStore:
    """A ContextStore for tests: word-overlap scoring instead of embeddings, same contract."""

    def __init__(self) -> None:
        self._events: dict[str, Event] = {}
        self._lock = threading.Lock()
        self.fail_next: int = 0  # tests set it to simulate an outage of that many calls

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("simulated store outage")

    def record_events(self, events: Sequence[Event]) -> None:
        with self._lock:
            self._maybe_fail()
            for event in events:
                self._events[event.id] = event

    def record_event(self, event: Event) -> None:
        self.record_events([event])

    def finalize_session(self, session_id: str, summary: Event) -> None:
        self.record_events([summary])

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]:
        with self._lock:
            found = sorted((e for e in self._events.values() if e.session_id == session_id), key=lambda e: e.counter)
        return [hit_from_event(e, 0.0) for e in found[:limit]]

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]:
        wanted = _words(query)
        with self._lock:
            self._maybe_fail()
            scored = []
            for event in self._events.values():
                if not matches_filters(event, filters):
                    continue
                overlap = len(wanted & _words(event.text))
                scored.append((1.0 - overlap / max(len(wanted), 1), event))  # like a vector store: nearest k
        scored.sort(key=lambda pair: (pair[0], pair[1].id))
        return [hit_from_event(e, d) for d, e in scored[:limit]]

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            for event_id in ids:
                self._events.pop(event_id, None)

    def count(self) -> int:
        with self._lock:
            return len(self._events)

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
