"""A session's lifecycle and its runs: status transitions (each one an event, then persisted), running
and re-attaching through the :class:`~hydra_sandbox.sandbox.Sandbox` seam, finishing, cancelling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hydra_sandbox.errors import ConfigError, HydraError, WorkspaceError
from hydra_sandbox.events import Event, EventDraft, SessionRef, utcnow
from hydra_sandbox.lifecycle import ACTIVE, DiffState, SessionRecord, SessionStatus, check_transition
from hydra_sandbox.orchestration.observers import SessionChange, SessionObservers
from hydra_sandbox.orchestration.registry import SessionRegistry
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox import PlacingSandbox, RunRequest, RunResult, Sandbox

MAX_CHANGE_SET = 200


def session_ref(record: SessionRecord, root_session_id: str | None = None) -> SessionRef:
    return SessionRef(
        session_id=record.session_id,
        profile_id=record.profile_id,
        parent_session_id=record.parent_session_id,
        relationship=record.relationship,
        root_session_id=root_session_id or record.session_id,
        depth=record.depth,
    )


class SessionRuns:
    """Moves sessions through their lifecycle and runs them. Event loop only."""

    def __init__(
        self,
        *,
        sandbox: Sandbox,
        recorder: Recorder,
        registry: SessionRegistry,
        secrets: list[str],
        on_transition: Callable[[SessionRecord], None] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.recorder = recorder
        self.registry = registry
        self._secrets = list(secrets)
        self._on_transition = on_transition
        self.observers = SessionObservers()
        """Told of every transition (and, by the manager, of every new session)."""
        self._cancel: dict[str, asyncio.Event] = {}
        self._status_locks: dict[str, asyncio.Lock] = {}
        self._start_order = asyncio.Lock()
        self.running = 0
        if isinstance(sandbox, PlacingSandbox):
            sandbox.add_placement_listener(self._placed)

    def _placed(self, session_id: str, host: str) -> None:
        """The sandbox says where the session's agent runs: kept on the record (written with its next
        transition, which follows at its first event or at the end of the run)."""
        record = self.registry.find(session_id)
        if record is not None:
            record.host = host

    # -- recording ---------------------------------------------------------------------------

    def ref(self, record: SessionRecord) -> SessionRef:
        """Who the session's events belong to, with its place in the delegation tree."""
        ancestors = self.registry.ancestors(record.session_id)
        return session_ref(record, ancestors[-1] if ancestors else record.session_id)

    async def record(self, record: SessionRecord, draft: EventDraft) -> Event | None:
        return await self.recorder.record(self.ref(record), draft)

    async def track(self, record: SessionRecord) -> None:
        """Follow the session's checklist and summary, from its stored profile."""
        await self.recorder.track(self.ref(record), record.profile)

    async def persist(self, record: SessionRecord) -> None:
        checklist = self.recorder.checklist(record.session_id)
        if checklist is not None:
            record.checklist = checklist.state().model_dump(mode="json")
        await self.registry.save(record)

    # -- transitions -------------------------------------------------------------------------

    def lock(self, session_id: str) -> asyncio.Lock:
        return self._status_locks.setdefault(session_id, asyncio.Lock())

    async def transition(self, record: SessionRecord, target: SessionStatus, reason: str | None = None) -> None:
        async with self.lock(record.session_id):
            await self.transition_locked(record, target, reason)

    async def transition_locked(self, record: SessionRecord, target: SessionStatus, reason: str | None = None) -> None:
        check_transition(record.session_id, record.status, target)
        previous = record.status
        if reason is not None:  # a run's reason may quote its output; it is stored and shown like an event
            reason = self.recorder.masker.mask(reason)
        text = f"status {previous} -> {target}" + (f": {reason}" if reason else "")
        # The event is recorded before the status changes, so whoever sees the new status also
        # finds its event (and, for a finished run, its final summary) in the journal.
        await self.record(
            record,
            EventDraft(type="status", text=text, data={"from": previous.value, "to": target.value, "reason": reason}),
        )
        record.status = target
        if reason is not None:
            record.reason = reason
        now = utcnow()
        if target == SessionStatus.STARTING:
            record.started_at = now
        if target not in ACTIVE:
            record.finished_at = now
        await self.persist(record)
        await self.recorder.notify(record.session_id)
        if self._on_transition:
            self._on_transition(record)
        self.observers.notify(SessionChange(record, created=False))

    async def fail_crashed(self, session_id: str, exc: Exception) -> None:
        """A run crashed on a bug: the session fails with the (masked, bounded) reason."""
        record = self.registry.find(session_id)
        if record is not None and record.status in ACTIVE:
            reason = self.recorder.masker.mask(f"internal error: {type(exc).__name__}: {exc}")[:500]
            await self.transition(record, SessionStatus.FAILED, reason=reason)

    # -- running -----------------------------------------------------------------------------

    def run_request(self, record: SessionRecord, prompt: str | None = None) -> RunRequest:
        return RunRequest(
            session_id=record.session_id,
            profile_id=record.profile_id,
            parent_session_id=record.parent_session_id,
            policy=record.policy,
            prompt=prompt or record.prompt,
            working_dir=record.working_dir,
            model=record.model,
            read_only=record.read_only,
            run_index=max(record.runs - 1, 0),
            resume_thread_id=record.thread_id if prompt else None,
            test_runners=record.profile.test_runners if record.profile else [],
            layer_sessions=self.registry.ancestors(record.session_id),
            secrets=self._secrets,
            host=record.host,
        )

    def cancel_event(self, session_id: str, *, fresh: bool = False) -> asyncio.Event:
        if fresh:
            self._cancel[session_id] = asyncio.Event()
        return self._cancel.setdefault(session_id, asyncio.Event())

    async def run_queued(self, session_id: str) -> None:
        """A worker's job: run the session if it is still queued."""
        record = self.registry.find(session_id)
        if record is not None and record.status == SessionStatus.QUEUED:
            await self.run(record)

    async def run(self, record: SessionRecord, prompt: str | None = None) -> None:
        cancel = self.cancel_event(record.session_id)
        # Runs start in the order workers took them from the queue: the start lock is fair, it is
        # asked for before any await, and the sandbox is called with no await after it is released.
        async with self._start_order, self.lock(record.session_id):
            if record.status != SessionStatus.QUEUED:
                return  # cancelled while it waited in the queue
            await self.transition_locked(record, SessionStatus.STARTING)
        record.runs += 1
        request = self.run_request(record, prompt)
        self.running += 1
        started = False

        async def sink(draft: EventDraft) -> object:
            nonlocal started
            if not started and record.status == SessionStatus.STARTING:
                started = True
                await self.transition(record, SessionStatus.RUNNING)
            if draft.data.get("thread_id") and not record.thread_id:
                record.thread_id = str(draft.data["thread_id"])
                await self.persist(record)
            return await self.record(
                record, draft.model_copy(update={"data": {**draft.data, "run": request.run_index}})
            )

        try:
            result = await self.sandbox.run(request, sink, cancel)
        except (WorkspaceError, ConfigError) as exc:  # e.g. no model key: the session fails with the reason
            result = RunResult(status="failed", reason=str(exc))
        finally:
            self.running -= 1
        await self._finish(record, result)

    async def follow(self, record: SessionRecord) -> None:
        """Re-attach to a run whose container outlived the server; events already recorded are skipped."""
        cancel = self.cancel_event(record.session_id)
        request = self.run_request(record)
        skip = self.recorder.last_seq(record.session_id, request.run_index) + 1

        async def sink(draft: EventDraft) -> object:
            return await self.record(
                record, draft.model_copy(update={"data": {**draft.data, "run": request.run_index}})
            )

        await self.record(
            record,
            EventDraft(
                type="status",
                text="server restarted; re-attached to the agent",
                data={"reattached": True, "skip": skip},
            ),
        )
        self.running += 1
        try:
            result = await self.sandbox.follow(request, sink, cancel, skip)
        finally:
            self.running -= 1
        await self._finish(record, result)

    async def _finish(self, record: SessionRecord, result: RunResult) -> None:
        if result.thread_id:
            record.thread_id = result.thread_id
        if record.status == SessionStatus.STARTING and result.status == "completed":
            await self.transition(record, SessionStatus.RUNNING)
        if result.status == "completed":
            target = SessionStatus.COMPLETED
            if result.has_changes and not record.read_only:
                target = SessionStatus.AWAITING_APPROVAL
                record.diff_state = DiffState.PENDING
        else:
            target = SessionStatus(result.status)
        await self.record_change_set(record)
        await self.recorder.finalize(self.ref(record), outcome=target.value)
        await self.transition(record, target, reason=result.reason)

    async def record_change_set(self, record: SessionRecord) -> None:
        """Record what the run changed, read from its workspace (the same change set the diff preview
        shows), as a ``diff`` event: summaries, the ``file_changed`` rule and the session view count
        files from it, not from what the agent said it wrote. No workspace: nothing is recorded."""
        try:
            preview = await self.sandbox.diff(record.session_id, record.policy)
        except HydraError:
            return
        files = sorted({f.path for f in preview.files})
        record.files_changed = files[:MAX_CHANGE_SET]
        shown = ", ".join(files[:10]) + (", …" if len(files) > 10 else "")
        await self.record(
            record,
            EventDraft(
                type="diff",
                text=f"change set: {len(files)} file(s) changed" + (f": {shown}" if files else ""),
                related_files=files[:MAX_CHANGE_SET],
                tags=["change-set"],
                data={
                    "change_set": True,
                    "files": files[:MAX_CHANGE_SET],
                    "files_total": len(files),
                    "refused": len(preview.refused),
                },
            ),
        )

    # -- control -----------------------------------------------------------------------------

    async def terminate(self, record: SessionRecord, reason: str) -> None:
        """Cancel a queued session now; ask a running one to stop (its run ends ``cancelled``)."""
        async with self.lock(record.session_id):
            if record.status == SessionStatus.QUEUED:
                await self.transition_locked(record, SessionStatus.CANCELLED, reason=reason)
            elif record.status in ACTIVE:
                await self.record(
                    record,
                    EventDraft(
                        type="status",
                        text=f"termination requested: {reason}",
                        data={"terminate": True, "reason": reason},
                    ),
                )
                record.reason = self.recorder.masker.mask(reason)
                self.cancel_event(record.session_id).set()
            else:
                raise ConfigError(
                    f"session {record.session_id} is already {record.status}",
                    hint="only queued, starting or running sessions can be terminated",
                )
