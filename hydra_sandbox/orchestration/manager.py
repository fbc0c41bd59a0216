"""AgentManager: the one entry point to sessions, composed of spawn resolution
(:mod:`.spawning`), the registry (:mod:`.registry`), scheduling (:mod:`.scheduler`), runs and
lifecycle (:mod:`.runs`) and approval (:mod:`.approval`).

Every public method takes the caller's :data:`~hydra_sandbox.authority.Principal` (no default) and
asks :func:`~hydra_sandbox.authority.authorize` before touching a session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from hydra_sandbox.authority import Action, Agent, Principal, authorize, namespace
from hydra_sandbox.codex_events import note_draft
from hydra_sandbox.errors import ConfigError, HydraError
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.lifecycle import ACTIVE, SessionRecord, SessionStatus
from hydra_sandbox.limits import MAX_NOTE_CHARS, MAX_PAGE_BYTES, check_chars, check_tags
from hydra_sandbox.orchestration.approval import Approval
from hydra_sandbox.orchestration.observers import SessionChange, SessionObserver
from hydra_sandbox.orchestration.registry import SessionRegistry
from hydra_sandbox.orchestration.runs import SessionRuns
from hydra_sandbox.orchestration.scheduler import Scheduler
from hydra_sandbox.orchestration.spawning import (
    SpawnRequest,
    SpawnResult,
    checked_working_dir,
    for_agent,
    resolve_spawn,
)
from hydra_sandbox.policy import Policy, PolicyCatalog
from hydra_sandbox.profiles import Profile, ProfileCatalog
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox import PlacingSandbox, Sandbox
from hydra_sandbox.session_ids import HOST_SESSION, check_session_id, new_session_id

if TYPE_CHECKING:
    from pathlib import Path

    from hydra_sandbox.applying import ApplyResult
    from hydra_sandbox.diffing import DiffPreview

__all__ = ["HOST_SESSION", "AgentManager", "new_session_id"]

log = logging.getLogger(__name__)


class AgentManager:
    def __init__(
        self,
        *,
        sandbox: Sandbox,
        recorder: Recorder,
        profiles: ProfileCatalog,
        policies: PolicyCatalog,
        default_model: str,
        max_concurrent: int,
        known_secrets: list[str] | None = None,
        on_transition: Callable[[SessionRecord], None] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.recorder = recorder
        self.journal = recorder.journal
        self.profiles = profiles
        self.policies = policies
        self.default_model = default_model
        self.sessions = SessionRegistry(self.journal)
        self.runs = SessionRuns(
            sandbox=sandbox,
            recorder=recorder,
            registry=self.sessions,
            secrets=list(known_secrets or []),
            on_transition=on_transition,
        )
        self.approval = Approval(self.runs, self.sessions)
        self.scheduler = Scheduler(max_concurrent, self.runs.run_queued, self.runs.fail_crashed)
        self._spawn_lock = asyncio.Lock()

    @property
    def running(self) -> int:
        """Runs in progress now (never above the concurrency cap, re-attached runs aside)."""
        return self.runs.running

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load sessions, recover from a restart, start the workers."""
        records = await self.sessions.load()
        live = await self.sandbox.live_sessions()
        unanswered = await self.sandbox.unanswered_hosts() if isinstance(self.sandbox, PlacingSandbox) else set()
        for record in records:
            if record.status not in ACTIVE:
                continue
            if record.profile is None:
                record.profile = await self._legacy_profile(record)
            await self.runs.track(record)
            if record.status == SessionStatus.QUEUED:
                self.scheduler.submit(record.session_id)
            elif record.status == SessionStatus.RUNNING and (record.session_id in live or record.host in unanswered):
                self.scheduler.in_background(self.runs.follow(record), f"follow-{record.session_id}")
            else:
                await self.runs.transition(
                    record, SessionStatus.FAILED, reason="its container vanished while the server was down"
                )
        self.scheduler.start()

    async def _legacy_profile(self, record: SessionRecord) -> Profile | None:
        """A record written before profiles were stored on it: its profile as the files say now, once."""
        try:
            return await asyncio.to_thread(self.profiles.get, record.profile_id)
        except HydraError as exc:
            log.warning(
                "session %s: its profile does not load (%s); no checklist or apply rules", record.session_id, exc
            )
            return None

    def observe(self, observer: SessionObserver) -> Callable[[], None]:
        """Call ``observer`` when a session appears and on each of its transitions; returns the remover."""
        return self.runs.observers.add(observer)

    async def close(self) -> None:
        """Stop the workers. Running containers keep running and are re-attached at the next start."""
        await self.scheduler.close()

    # -- queries -----------------------------------------------------------------------------

    def get(self, session_id: str, principal: Principal) -> SessionRecord:
        """A session ``principal`` may read (an agent: one of its subtree)."""
        return self._session(session_id, principal, Action.READ)

    def _session(self, session_id: str, principal: Principal, action: Action) -> SessionRecord:
        authorize(principal, action)
        check_session_id(session_id, "session_id")
        record = self.sessions.get(session_id)
        authorize(principal, action, session_id=session_id, tree=self.sessions)
        return record

    def list_sessions(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        profile_id: str | None = None,
        parent_session_id: str | None = None,
        limit: int = 50,
    ) -> list[SessionRecord]:
        authorize(principal, Action.READ)
        return self.sessions.select(
            principal, status=status, profile_id=profile_id, parent_session_id=parent_session_id, limit=limit
        )

    def queue_length(self) -> int:
        return self.sessions.queue_length()

    def status_counts(self) -> dict[SessionStatus, int]:
        return self.sessions.status_counts()

    async def events(self, session_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """A session's recorded events (read in a worker thread). Authorize the session first."""
        return await asyncio.to_thread(self.journal.events, session_id, since, limit)

    async def events_page(self, session_id: str, since: int, limit: int) -> tuple[list[Event], bool]:
        """A bounded page of a session's events (see :meth:`Journal.page`) and whether more follow."""
        return await asyncio.to_thread(self.journal.page, session_id, since, limit, MAX_PAGE_BYTES)

    async def last_events(self, session_id: str, count: int) -> list[Event]:
        """A session's last ``count`` events, without reading the others."""

        def read() -> list[Event]:
            last = self.journal.last_counter(session_id)
            return [] if last is None else self.journal.events(session_id, max(0, last - count + 1), count)

        return await asyncio.to_thread(read)

    async def latest_event(self, session_id: str, type_: str) -> Event | None:
        return await asyncio.to_thread(self.journal.latest_event, session_id, type_)

    # -- spawn -------------------------------------------------------------------------------

    async def spawn(self, request: SpawnRequest, principal: Principal) -> SpawnResult:
        authorize(principal, Action.SPAWN)
        scope = namespace(principal)
        async with self._spawn_lock:
            existing = self.sessions.reused(scope, request.idempotency_key)
            if existing is not None:
                return SpawnResult(
                    session=existing.public(), events=await self.events(existing.session_id, limit=20), reused=True
                )
            if isinstance(principal, Agent):
                request = for_agent(request, principal, self.sessions, self._working_dir_of)
            record = await self._resolve(request, scope)
            self.sessions.add(record)
            if record.parent_session_id:
                await self.runs.persist(self.sessions.get(record.parent_session_id))
            await self.runs.persist(record)
        await self.runs.track(record)
        await self.runs.record(
            record,
            EventDraft(
                type="status",
                text=f"session queued: profile {record.profile_id}, policy {record.policy.name}",
                data={
                    "status": "queued",
                    "profile_id": record.profile_id,
                    "policy": record.policy.name,
                    "working_dir": str(record.working_dir),
                },
                related_sessions=[s for s in [record.parent_session_id] if s],
            ),
        )
        self.runs.observers.notify(SessionChange(record, created=True))
        self.scheduler.submit(record.session_id)
        return SpawnResult(session=record.public(), events=await self.events(record.session_id, limit=20))

    def _working_dir_of(self, session_id: str) -> Path:
        return self.sessions.get(session_id).working_dir

    async def _resolve(self, request: SpawnRequest, scope: str) -> SessionRecord:
        """Load what resolution needs (files, in worker threads), then resolve without I/O."""
        profile = await asyncio.to_thread(self.profiles.get, request.profile_id)
        working_dir = await asyncio.to_thread(checked_working_dir, request.working_dir)
        parent = self.sessions.get(request.parent_session_id) if request.parent_session_id else None
        base = (request.policy.base if request.policy else None) or profile.policy
        try:
            named: Policy | HydraError = await asyncio.to_thread(self.policies.get, base)
        except HydraError as exc:  # raised only if resolution needs it (a child may inherit instead)
            named = exc

        def named_policy(name: str) -> Policy:
            if isinstance(named, HydraError):
                raise named
            return named if name == base else self.policies.get(name)

        return resolve_spawn(
            request,
            session_id=new_session_id(),
            profile=profile,
            named_policy=named_policy,
            parent=parent,
            working_dir=working_dir,
            default_model=self.default_model,
            idempotency_scope=scope,
        )

    # -- control -----------------------------------------------------------------------------

    async def wait(
        self,
        session_id: str,
        timeout_s: float,
        principal: Principal,
        on_progress: Callable[[SessionRecord, int], Awaitable[None]] | None = None,
    ) -> SessionRecord:
        """Until the session leaves queued/starting/running, or ``timeout_s`` passes."""
        record = self.get(session_id, principal)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while record.status in ACTIVE:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self.recorder.wait_for_news(session_id, min(remaining, 5.0))
            if on_progress is not None:
                last = await asyncio.to_thread(self.journal.last_counter, session_id)
                await on_progress(record, (last or 0) + 1)
        return record

    async def terminate(self, session_id: str, reason: str, principal: Principal) -> SessionRecord:
        record = self._session(session_id, principal, Action.CONTROL)
        await self.runs.terminate(record, reason)
        return record

    async def resume(self, session_id: str, prompt: str, principal: Principal) -> SessionRecord:
        record = self._session(session_id, principal, Action.CONTROL)
        if record.status in ACTIVE:
            raise ConfigError(f"session {session_id} is {record.status}; wait for it before resuming")
        if not record.thread_id:
            raise ConfigError(f"session {session_id} has no Codex thread to resume (it never started)")
        await self.runs.transition(record, SessionStatus.QUEUED, reason="resumed")
        self.runs.cancel_event(session_id, fresh=True)
        self.scheduler.in_background(self.runs.run(record, prompt=prompt), f"resume-{session_id}")
        return record

    async def log_context(
        self, note: str, session_id: str | None, tags: list[str] | None, principal: Principal
    ) -> Event:
        """A note in the record: of the host (the operator naming no session), else of a session."""
        authorize(principal, Action.NOTE)
        check_chars("log_context.note", note, MAX_NOTE_CHARS)
        check_tags("log_context.tags", tags or [])
        draft = note_draft(note, tags or [])  # "Decision: ..." is recorded as a decision
        if session_id is None and isinstance(principal, Agent):
            session_id = principal.session_id
        if session_id is None:
            event = await self.recorder.record(SessionRef(session_id=HOST_SESSION), draft)
        else:
            record = self._session(session_id, principal, Action.NOTE)
            event = await self.runs.record(record, draft)
        if event is None:  # only a replayed agent event is ever dropped; a note never is
            raise HydraError(f"log_context: the note for session {session_id or HOST_SESSION} was not recorded")
        return event

    # -- diffs -------------------------------------------------------------------------------

    async def diff(self, session_id: str, principal: Principal) -> DiffPreview:
        return await self.approval.diff(self.get(session_id, principal))

    async def apply(
        self,
        session_id: str,
        confirm: bool,
        principal: Principal,
        *,
        digest: str | None = None,
        acknowledge_masked: bool = False,
    ) -> ApplyResult:
        record = self._session(session_id, principal, Action.APPLY)
        return await self.approval.apply(record, confirm, digest, acknowledge_masked)

    async def discard(self, session_id: str, principal: Principal) -> SessionRecord:
        record = self._session(session_id, principal, Action.DISCARD)
        return await self.approval.discard(record)
