"""The services as one caller sees them: every tool and resource calls a :class:`Facade` bound to the
request's principal (by :mod:`.middleware`), so no tool can act with rights it was not given.

Results are plain JSON-ready dicts (masked at recording time); blocking reads run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from hydra_sandbox import __version__
from hydra_sandbox.authority import Action, Agent, Principal, authorize, visible
from hydra_sandbox.errors import ConfigError, HydraError, shown
from hydra_sandbox.events import EVENT_TYPES, Event
from hydra_sandbox.lifecycle import SessionRecord, SessionStatus
from hydra_sandbox.maintenance import disk_usage
from hydra_sandbox.orchestration.manager import HOST_SESSION
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.policy import Policy
from hydra_sandbox.profiles import Profile
from hydra_sandbox.services import Services
from hydra_sandbox.session_tree import MAX_NODES, build_tree
from hydra_sandbox.store import SearchFilters

_bound: ContextVar[Facade | None] = ContextVar("hydra_facade", default=None)


def bound_facade() -> Facade:
    """The facade of the request being served. Fail-closed: outside a request bound by Hydra's
    middleware there is none, and the call is refused."""
    facade = _bound.get()
    if facade is None:
        raise HydraError("no caller is bound to this request", hint="tools run only behind Hydra's middleware")
    return facade


@contextlib.contextmanager
def binding(facade: Facade) -> Iterator[None]:
    token = _bound.set(facade)
    try:
        yield
    finally:
        _bound.reset(token)


def event_dicts(events: list[Event]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


class Facade:
    """The services, for one principal."""

    def __init__(self, services: Services, principal: Principal) -> None:
        self.services = services
        self.principal = principal
        self._manager = services.manager

    # -- catalogs ----------------------------------------------------------------------------

    async def profiles(self) -> tuple[dict[str, Profile], dict[str, ConfigError]]:
        authorize(self.principal, Action.CATALOG)
        return await asyncio.to_thread(self.services.profiles.load_all)

    async def policies(self) -> dict[str, Policy]:
        authorize(self.principal, Action.CATALOG)
        good, _bad = await asyncio.to_thread(self.services.policies.load_all)
        return good

    # -- sessions ----------------------------------------------------------------------------

    async def spawn(self, request: SpawnRequest) -> dict[str, Any]:
        result = await self._manager.spawn(request, self.principal)
        return {
            "session_id": result.session["session_id"],
            "status": result.session["status"],
            "reused": result.reused,
            "session": result.session,
            "events": event_dicts(result.events),
        }

    def session(self, session_id: str) -> SessionRecord:
        return self._manager.get(session_id, self.principal)

    def sessions(
        self, status: str | None, profile_id: str | None, parent_session_id: str | None, limit: int
    ) -> dict[str, Any]:
        records = self._manager.list_sessions(
            self.principal, status=status, profile_id=profile_id, parent_session_id=parent_session_id, limit=limit
        )
        return {"sessions": [r.public() for r in records], "queue_length": self._manager.queue_length()}

    def view(self, record: SessionRecord) -> dict[str, Any]:
        """A session's public fields and its checklist."""
        view = record.public()
        checklist = self._manager.recorder.checklist(record.session_id)
        if checklist is not None:
            view["checklist"] = checklist.state().model_dump(mode="json")
        return view

    def checklist(self, session_id: str) -> dict[str, Any]:
        self.session(session_id)
        checklist = self._manager.recorder.checklist(session_id)
        return checklist.state().model_dump(mode="json") if checklist else {}

    def subtree(self, session_id: str) -> list[str]:
        """The session and its descendants (breadth first, at most the tree's size limit)."""
        out, queue = [self.session(session_id).session_id], [session_id]
        while queue and len(out) < MAX_NODES:
            record = self._manager.sessions.find(queue.pop(0))
            for child in record.children if record else []:
                if child not in out:
                    out.append(child)
                    queue.append(child)
        return out[:MAX_NODES]

    async def tree(self, session_id: str) -> dict[str, Any]:
        self.session(session_id)
        sessions = self._manager.sessions

        def load(sid: str) -> dict[str, Any] | None:
            record = sessions.find(sid)
            if record is None:
                return None
            view = record.model_dump(mode="json", exclude={"profile", "policy", "prompt"})
            checklist = self._manager.recorder.checklist(sid)
            if checklist is not None:
                view["checklist"] = checklist.state().model_dump(mode="json")
            return view

        node = await asyncio.to_thread(build_tree, session_id, load, self.services.journal)
        return node.model_dump(mode="json") if node else {}

    async def events(self, session_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        self.session(session_id)
        return await self._manager.events(session_id, since=since, limit=limit)

    async def page(self, session_id: str, since: int, limit: int) -> dict[str, Any]:
        """A bounded page of events: ``events``, ``next_since`` (the cursor) and ``more``."""
        self.session(session_id)
        events, more = await self._manager.events_page(session_id, since, limit)
        next_since = events[-1].counter + 1 if events else since
        dicts = await asyncio.to_thread(event_dicts, events)  # up to 1 MiB of JSON: off the event loop
        return {"events": dicts, "next_since": next_since, "more": more}

    async def last_events(self, session_id: str, count: int) -> list[Event]:
        self.session(session_id)
        return await self._manager.last_events(session_id, count)

    async def latest_summary(self, session_id: str) -> Event | None:
        self.session(session_id)
        return await self._manager.latest_event(session_id, "summary")

    async def wait(
        self, session_id: str, timeout_s: float, report: Callable[[int, str], Awaitable[None]] | None
    ) -> SessionRecord:
        async def progress(record: SessionRecord, count: int) -> None:
            if report is None:
                return
            checklist = self._manager.recorder.checklist(record.session_id)
            done = checklist.state().done_count if checklist else 0
            total = len(checklist.state().items) if checklist else 0
            await report(count, f"{record.status}: {count} events, checklist {done}/{total}")

        return await self._manager.wait(session_id, timeout_s, self.principal, progress)

    async def terminate(self, session_id: str, reason: str) -> SessionRecord:
        return await self._manager.terminate(session_id, reason, self.principal)

    async def resume(self, session_id: str, prompt: str) -> SessionRecord:
        return await self._manager.resume(session_id, prompt, self.principal)

    # -- the record --------------------------------------------------------------------------

    async def log_context(self, note: str, session_id: str | None, tags: list[str] | None) -> Event:
        return await self._manager.log_context(note, session_id, tags, self.principal)

    async def search(
        self, query: str, filters: SearchFilters, limit: int, subtree_of: str | None = None
    ) -> dict[str, Any]:
        """Semantic search; an agent gets hits from its own subtree only. ``subtree_of`` narrows to a
        session and its descendants (expanded here into ``filters.session_ids``)."""
        authorize(self.principal, Action.SEARCH)
        if subtree_of is not None:
            filters = filters.model_copy(update={"session_ids": self.subtree(subtree_of)})
        if filters.event_type is not None and filters.event_type not in EVENT_TYPES:
            raise HydraError(
                f"event_type: {shown(filters.event_type)} is not an event type",
                hint="valid: " + ", ".join(EVENT_TYPES),
            )
        if filters.session_id is not None and filters.session_id != HOST_SESSION:
            self.session(filters.session_id)
        for named in (filters.root_session_id, filters.parent_session_id):
            if named is not None:
                self.session(named)
        if filters.session_status is not None and filters.session_status not in {s.value for s in SessionStatus}:
            raise HydraError(
                f"session_status: {shown(filters.session_status)} is not a session status",
                hint="valid: " + ", ".join(s.value for s in SessionStatus),
            )
        hits = await asyncio.to_thread(self.services.store.semantic_search, query, filters, limit)
        if isinstance(self.principal, Agent):
            tree = self._manager.sessions
            hits = [h for h in hits if h.session_id != HOST_SESSION and visible(self.principal, h.session_id, tree)]
        lag = await asyncio.to_thread(self.services.indexer.lag)
        return {"hits": [h.model_dump(mode="json") for h in hits], "index_lag": lag}

    # -- review ------------------------------------------------------------------------------

    async def diff(self, session_id: str) -> dict[str, Any]:
        preview = await self._manager.diff(session_id, self.principal)
        return preview.model_dump(mode="json")  # type: ignore[no-any-return]

    async def apply(
        self, session_id: str, confirm: bool, digest: str | None = None, acknowledge_masked: bool = False
    ) -> dict[str, Any]:
        result = await self._manager.apply(
            session_id, confirm, self.principal, digest=digest, acknowledge_masked=acknowledge_masked
        )
        return result.model_dump(mode="json")  # type: ignore[no-any-return]

    async def discard(self, session_id: str) -> SessionRecord:
        return await self._manager.discard(session_id, self.principal)

    # -- the server --------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Health: runtime, store, journal, disk, queue (the operator's view)."""
        authorize(self.principal, Action.STATUS)
        services = self.services
        try:
            store_count: int | str = await asyncio.to_thread(services.store.count)
        except Exception as exc:  # the store's health is what this reports
            store_count = f"unavailable: {type(exc).__name__}"
        return {
            "version": __version__,
            "runtime": await services.sandbox.status(),
            "store": {
                "documents": store_count,
                "index_lag": await asyncio.to_thread(services.indexer.lag),
                "set_aside": await asyncio.to_thread(services.indexer.set_aside_count),
                "set_aside_latest": await asyncio.to_thread(services.journal.set_aside_events, 5),
            },
            "journal": {"events": await asyncio.to_thread(services.journal.count)},
            "disk": (await asyncio.to_thread(disk_usage, services.settings)).model_dump(mode="json"),
            "queue_length": self._manager.queue_length(),
            "running_sessions": self._manager.running,
        }
