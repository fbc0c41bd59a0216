"""AgentManager: queue, lifecycle, delegation graph, idempotency, apply gating and restart recovery.

It owns the session records (persisted in the journal's sessions table) and delegates the work to
a :class:`~hydra_sandbox.sandbox.Sandbox` (running, diffing, applying) and a
:class:`~hydra_sandbox.recorder.Recorder` (events, checklists, summaries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.access import OPERATOR, Caller, authorize
from hydra_sandbox.errors import (
    ApplyConflictError,
    ConfigError,
    PolicyViolation,
    SessionNotFoundError,
    WorkspaceError,
    shown,
)
from hydra_sandbox.events import Event, EventDraft, SessionRef, utcnow
from hydra_sandbox.lifecycle import (
    ACTIVE,
    DiffState,
    SessionRecord,
    SessionStatus,
    check_transition,
)
from hydra_sandbox.policy import Policy, PolicyCatalog, PolicyRequest, child_of, narrow
from hydra_sandbox.profiles import Profile, ProfileCatalog, ProfileOverrides, apply_overrides, render_prompt
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox import RunRequest, RunResult, Sandbox

log = logging.getLogger(__name__)

AGENT_WORKSPACE = "/workspace"
"""How an agent names its own workspace when it spawns a child."""
HOST_SESSION = "host"
"""Pseudo-session that holds notes a host logs without naming a session."""


class SpawnFlags(BaseModel):
    """Per-run options a caller may set. Anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=128)
    timeout_s: int | None = Field(default=None, ge=1, le=86400, description="Narrows the policy's timeout.")
    max_output_bytes: int | None = Field(default=None, ge=1024)


class SpawnPolicy(PolicyRequest):
    """A base policy by name (default: the profile's) narrowed by the other fields."""

    base: str | None = None


class SpawnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile_id: str = "default"
    custom_prompt: str | None = Field(default=None, max_length=100_000)
    goalset: list[str] | None = None
    inputs: dict[str, Any] | None = None
    working_dir: str
    flags: SpawnFlags | None = None
    policy: SpawnPolicy | None = None
    parent_session_id: str | None = None
    relationship: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class SpawnResult(BaseModel):
    session: dict[str, Any]
    events: list[Event]
    reused: bool = False


def new_session_id() -> str:
    return "s-" + secrets.token_hex(6)


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
        self.max_concurrent = max_concurrent
        self._secrets = list(known_secrets or [])
        self._on_transition = on_transition
        self._sessions: dict[str, SessionRecord] = {}
        self._idempotency: dict[str, str] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._followers: set[asyncio.Task[None]] = set()
        self._cancel: dict[str, asyncio.Event] = {}
        self._spawn_lock = asyncio.Lock()
        self._apply_locks: dict[Path, asyncio.Lock] = {}
        self._status_locks: dict[str, asyncio.Lock] = {}
        self._applied: dict[Path, list[tuple[datetime, str, set[str]]]] = {}
        self.running = 0

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load sessions, recover from a restart, start the workers."""
        for data in await asyncio.to_thread(self.journal.query_sessions, None, None, None, 100_000):
            record = SessionRecord.model_validate(data)
            self._sessions[record.session_id] = record
            if record.idempotency_key:
                self._idempotency[record.idempotency_key] = record.session_id
        live = await self.sandbox.live_sessions()
        for record in list(self._sessions.values()):
            if record.status not in ACTIVE:
                continue
            self._track(record)
            if record.status == SessionStatus.QUEUED:
                self._queue.put_nowait(record.session_id)
            elif record.session_id in live and record.status == SessionStatus.RUNNING:
                task = asyncio.create_task(self._follow(record), name=f"follow-{record.session_id}")
                self._followers.add(task)
                task.add_done_callback(self._followers.discard)
            else:
                await self._transition(
                    record, SessionStatus.FAILED, reason="its container vanished while the server was down"
                )
        self._workers = [
            asyncio.create_task(self._worker(), name=f"hydra-worker-{i}") for i in range(self.max_concurrent)
        ]

    async def close(self) -> None:
        """Stop the workers. Running containers keep running and are re-attached at the next start."""
        for task in [*self._workers, *self._followers]:
            task.cancel()
        for task in [*self._workers, *self._followers]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()

    # -- queries -----------------------------------------------------------------------------

    def get(self, session_id: str, caller: Caller = OPERATOR) -> SessionRecord:
        record = self._sessions.get(session_id)
        if record is None:
            raise SessionNotFoundError(
                f"session {shown(session_id)} not found", hint="list_sessions shows the sessions Hydra knows"
            )
        authorize(caller, session_id, self._parent_of)
        return record

    def _parent_of(self, session_id: str) -> str | None:
        record = self._sessions.get(session_id)
        return record.parent_session_id if record else None

    def list_sessions(
        self,
        status: str | None = None,
        profile_id: str | None = None,
        parent_session_id: str | None = None,
        limit: int = 50,
        caller: Caller = OPERATOR,
    ) -> list[SessionRecord]:
        if status is not None and status not in {s.value for s in SessionStatus}:
            raise ConfigError(
                f"status: {shown(status)} is not a session status",
                hint="valid: " + ", ".join(s.value for s in SessionStatus),
            )
        out = []
        for record in sorted(self._sessions.values(), key=lambda r: r.created_at, reverse=True):
            if status and record.status != status:
                continue
            if profile_id and record.profile_id != profile_id:
                continue
            if parent_session_id and record.parent_session_id != parent_session_id:
                continue
            if caller.kind == "agent":
                try:
                    authorize(caller, record.session_id, self._parent_of)
                except PolicyViolation:
                    continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def queue_length(self) -> int:
        return sum(1 for r in self._sessions.values() if r.status == SessionStatus.QUEUED)

    def status_counts(self) -> dict[SessionStatus, int]:
        """How many sessions are in each status (every status present, zeros included).

        Safe to call from another thread (a metrics scrape): it snapshots the records in one step."""
        counts = dict.fromkeys(SessionStatus, 0)
        for record in list(self._sessions.values()):
            counts[record.status] += 1
        return counts

    def events(self, session_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        return self.journal.events(session_id, since=since, limit=limit)

    # -- spawn -------------------------------------------------------------------------------

    async def spawn(self, request: SpawnRequest, caller: Caller = OPERATOR) -> SpawnResult:
        async with self._spawn_lock:
            if request.idempotency_key and request.idempotency_key in self._idempotency:
                existing = self._sessions[self._idempotency[request.idempotency_key]]
                authorize(caller, existing.session_id, self._parent_of)
                return SpawnResult(
                    session=existing.public(), events=self.events(existing.session_id, limit=20), reused=True
                )
            if caller.kind == "agent":
                request = self._agent_request(request, caller)
            record = self._build_record(request)
            self._sessions[record.session_id] = record
            if record.parent_session_id:
                parent = self._sessions[record.parent_session_id]
                parent.children.append(record.session_id)
                await self._persist(parent)
            if record.idempotency_key:
                self._idempotency[record.idempotency_key] = record.session_id
            await self._persist(record)
        self._track(record)
        await self._record(
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
        self._queue.put_nowait(record.session_id)
        return SpawnResult(session=record.public(), events=self.events(record.session_id, limit=20))

    def _agent_request(self, request: SpawnRequest, caller: Caller) -> SpawnRequest:
        """An agent spawns below itself (by default its own session) and sees its workspace as
        ``/workspace``: that path stands for the parent's working directory on the host."""
        parent_id = request.parent_session_id or caller.session_id
        if parent_id is None:
            raise PolicyViolation("parent_session_id: an agent may only spawn children of its own sessions")
        try:
            authorize(caller, parent_id, self._parent_of)
        except PolicyViolation as exc:  # say which argument was wrong
            raise PolicyViolation(f"parent_session_id: {exc.message}", hint=exc.hint) from exc
        update: dict[str, Any] = {"parent_session_id": parent_id}
        if request.working_dir.rstrip("/") in {AGENT_WORKSPACE, ".", ""}:
            update["working_dir"] = str(self.get(parent_id).working_dir)
        return request.model_copy(update=update)

    def _build_record(self, request: SpawnRequest) -> SessionRecord:
        profile = apply_overrides(
            self.profiles.get(request.profile_id),
            ProfileOverrides(goalset=request.goalset or [], model=request.flags.model if request.flags else None),
        )
        working_dir = _working_dir(request.working_dir)
        depth = 0
        parent: SessionRecord | None = None
        if request.parent_session_id is not None:
            parent = self.get(request.parent_session_id)
            if parent.status in {SessionStatus.FAILED, SessionStatus.CANCELLED, SessionStatus.TIMED_OUT}:
                raise PolicyViolation(
                    f"parent_session_id: session {parent.session_id} is {parent.status}; it cannot delegate",
                )
            if len(parent.children) >= parent.policy.delegation.max_children:
                raise PolicyViolation(
                    f"delegation.max_children: session {parent.session_id} already has "
                    f"{len(parent.children)} children, its policy allows {parent.policy.delegation.max_children}",
                )
            if working_dir.resolve() != parent.working_dir.resolve():
                raise PolicyViolation(
                    f"working_dir: a child works on its parent's workspace {parent.working_dir}, "
                    f"not {shown(str(working_dir))}",
                    hint="narrow what the child sees with policy.directory instead",
                )
            depth = parent.depth + 1
        policy = self._resolve_policy(profile, request, parent)
        session_id = new_session_id()
        return SessionRecord(
            session_id=session_id,
            profile_id=profile.id,
            policy=policy,
            task=request.custom_prompt,
            prompt=render_prompt(profile, request.custom_prompt, request.inputs),
            working_dir=working_dir.resolve(),
            model=profile.model or self.default_model,
            parent_session_id=request.parent_session_id,
            relationship=request.relationship or ("child" if parent else None),
            depth=depth,
            idempotency_key=request.idempotency_key,
            read_only=profile.read_only,
            flags=request.flags.model_dump(exclude_none=True) if request.flags else {},
        )

    def _resolve_policy(self, profile: Profile, request: SpawnRequest, parent: SessionRecord | None) -> Policy:
        wanted = request.policy or SpawnPolicy()
        base_name = wanted.base or profile.policy
        if parent is None:
            base = self.policies.get(base_name)
        else:
            base = child_of(parent.policy)
            if wanted.base or profile.policy != parent.policy.name:
                named = self.policies.get(base_name)
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
        if wanted.resources:
            resources.update(wanted.resources)
        narrowing = PolicyRequest(
            directory=wanted.directory,
            network=wanted.network,
            resources=resources or None,
            delegation=wanted.delegation,
        )
        return narrow(base, narrowing)

    # -- running -----------------------------------------------------------------------------

    def _track(self, record: SessionRecord) -> None:
        self.recorder.track(self._ref(record), self.profiles.get(record.profile_id))

    @staticmethod
    def _ref(record: SessionRecord) -> SessionRef:
        return SessionRef(
            session_id=record.session_id,
            profile_id=record.profile_id,
            parent_session_id=record.parent_session_id,
            relationship=record.relationship,
        )

    async def _record(self, record: SessionRecord, draft: EventDraft) -> Event | None:
        return await self.recorder.record(self._ref(record), draft)

    async def _persist(self, record: SessionRecord) -> None:
        checklist = self.recorder.checklist(record.session_id)
        if checklist is not None:
            record.checklist = checklist.state().model_dump(mode="json")
        await asyncio.to_thread(
            self.journal.save_session,
            record.session_id,
            status=record.status.value,
            profile_id=record.profile_id,
            parent_session_id=record.parent_session_id,
            data=record.model_dump(mode="json"),
        )

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._status_locks.setdefault(session_id, asyncio.Lock())

    async def _transition(self, record: SessionRecord, target: SessionStatus, reason: str | None = None) -> None:
        async with self._lock(record.session_id):
            await self._transition_locked(record, target, reason)

    async def _transition_locked(self, record: SessionRecord, target: SessionStatus, reason: str | None = None) -> None:
        check_transition(record.session_id, record.status, target)
        previous = record.status
        if reason is not None:  # a run's reason may quote its output; it is stored and shown like an event
            reason = self.recorder.masker.mask(reason)
        text = f"status {previous} -> {target}" + (f": {reason}" if reason else "")
        # The event is recorded before the status changes, so whoever sees the new status also
        # finds its event (and, for a finished run, its final summary) in the journal.
        await self._record(
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
        await self._persist(record)
        await self.recorder.notify(record.session_id)
        if self._on_transition:
            self._on_transition(record)

    async def _worker(self) -> None:
        while True:
            session_id = await self._queue.get()
            try:
                record = self._sessions.get(session_id)
                if record is None or record.status != SessionStatus.QUEUED:
                    continue
                await self._run(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the worker; the session is failed with the reason
                log.exception("session %s crashed", session_id)
                record = self._sessions.get(session_id)
                if record is not None and record.status in ACTIVE:
                    reason = self.recorder.masker.mask(f"internal error: {type(exc).__name__}: {exc}")[:500]
                    await self._transition(record, SessionStatus.FAILED, reason=reason)
            finally:
                self._queue.task_done()

    def _run_request(self, record: SessionRecord, prompt: str | None = None) -> RunRequest:
        profile = self.profiles.get(record.profile_id)
        layers: list[str] = []
        parent = record.parent_session_id
        while parent is not None:
            layers.append(parent)
            parent = self._parent_of(parent)
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
            test_runners=profile.test_runners,
            layer_sessions=layers,
            secrets=self._secrets,
        )

    async def _run(self, record: SessionRecord, prompt: str | None = None) -> None:
        cancel = self._cancel.setdefault(record.session_id, asyncio.Event())
        async with self._lock(record.session_id):
            if record.status != SessionStatus.QUEUED:
                return  # cancelled while it waited in the queue
            await self._transition_locked(record, SessionStatus.STARTING)
        record.runs += 1
        request = self._run_request(record, prompt)
        self.running += 1
        started = False

        async def sink(draft: EventDraft) -> object:
            nonlocal started
            if not started and record.status == SessionStatus.STARTING:
                started = True
                await self._transition(record, SessionStatus.RUNNING)
            if draft.data.get("thread_id") and not record.thread_id:
                record.thread_id = str(draft.data["thread_id"])
                await self._persist(record)
            return await self._record(
                record, draft.model_copy(update={"data": {**draft.data, "run": request.run_index}})
            )

        try:
            result = await self.sandbox.run(request, sink, cancel)
        except WorkspaceError as exc:
            result = RunResult(status="failed", reason=str(exc))
        finally:
            self.running -= 1
        await self._finish(record, result)

    async def _follow(self, record: SessionRecord) -> None:
        cancel = self._cancel.setdefault(record.session_id, asyncio.Event())
        request = self._run_request(record)
        skip = self.recorder.last_seq(record.session_id, request.run_index) + 1

        async def sink(draft: EventDraft) -> object:
            return await self._record(
                record, draft.model_copy(update={"data": {**draft.data, "run": request.run_index}})
            )

        await self._record(
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
            await self._transition(record, SessionStatus.RUNNING)
        if result.status == "completed":
            target = SessionStatus.COMPLETED
            if result.has_changes and not record.read_only:
                target = SessionStatus.AWAITING_APPROVAL
                record.diff_state = DiffState.PENDING
        else:
            target = SessionStatus(result.status)
        await self.recorder.finalize(self._ref(record), outcome=target.value)
        await self._transition(record, target, reason=result.reason)

    # -- control -----------------------------------------------------------------------------

    async def wait(
        self,
        session_id: str,
        timeout_s: float,
        on_progress: Callable[[SessionRecord, int], Awaitable[None]] | None = None,
        caller: Caller = OPERATOR,
    ) -> SessionRecord:
        record = self.get(session_id, caller)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while record.status in ACTIVE:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self.recorder.wait_for_news(session_id, min(remaining, 5.0))
            if on_progress is not None:
                await on_progress(record, (self.journal.last_counter(session_id) or 0) + 1)
        return record

    async def terminate(self, session_id: str, reason: str, caller: Caller = OPERATOR) -> SessionRecord:
        record = self.get(session_id, caller)
        async with self._lock(session_id):
            if record.status == SessionStatus.QUEUED:
                await self._transition_locked(record, SessionStatus.CANCELLED, reason=reason)
            elif record.status in ACTIVE:
                await self._record(
                    record,
                    EventDraft(
                        type="status",
                        text=f"termination requested: {reason}",
                        data={"terminate": True, "reason": reason},
                    ),
                )
                record.reason = self.recorder.masker.mask(reason)
                self._cancel.setdefault(session_id, asyncio.Event()).set()
            else:
                raise ConfigError(
                    f"session {session_id} is already {record.status}",
                    hint="only queued, starting or running sessions can be terminated",
                )
        return record

    async def resume(self, session_id: str, prompt: str, caller: Caller = OPERATOR) -> SessionRecord:
        record = self.get(session_id, caller)
        if record.status in ACTIVE:
            raise ConfigError(f"session {session_id} is {record.status}; wait for it before resuming")
        if not record.thread_id:
            raise ConfigError(f"session {session_id} has no Codex thread to resume (it never started)")
        await self._transition(record, SessionStatus.QUEUED, reason="resumed")
        self._cancel[session_id] = asyncio.Event()
        task = asyncio.create_task(self._resume(record, prompt))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)
        return record

    async def _resume(self, record: SessionRecord, prompt: str) -> None:
        await self._run(record, prompt=prompt)

    async def log_context(
        self, note: str, session_id: str | None, tags: list[str] | None, caller: Caller = OPERATOR
    ) -> Event:
        draft = EventDraft(type="note", text=note, tags=tags or [])
        if session_id is None:
            if caller.kind == "agent":
                session_id = caller.session_id
            else:
                ref = SessionRef(session_id=HOST_SESSION)
                event = await self.recorder.record(ref, draft)
                assert event is not None
                return event
        record = self.get(session_id or "", caller)
        event = await self._record(record, draft)
        assert event is not None
        return event

    # -- diffs -------------------------------------------------------------------------------

    async def diff(self, session_id: str, caller: Caller = OPERATOR) -> Any:
        record = self.get(session_id, caller)
        self._require_reviewable(record)
        return await self.sandbox.diff(session_id, record.policy)

    def _require_reviewable(self, record: SessionRecord) -> None:
        if record.status in ACTIVE:
            raise WorkspaceError(
                f"session {record.session_id} is {record.status}; its diff is ready when it has finished",
                hint="call wait_session first",
            )
        if record.diff_state in {DiffState.APPLIED, DiffState.DISCARDED}:
            raise WorkspaceError(f"session {record.session_id}: its diff was already {record.diff_state}")

    def _check_rules(self, record: SessionRecord) -> None:
        profile = self.profiles.get(record.profile_id)
        for rule in profile.apply_requires:
            ok = False
            for child_id in record.children:
                child = self._sessions.get(child_id)
                if child is None or child.profile_id != rule.profile_id:
                    continue
                if child.status not in {SessionStatus.COMPLETED, SessionStatus.AWAITING_APPROVAL}:
                    continue
                checklist = self.recorder.checklist(child_id)
                if rule.checklist_item is None or (checklist and checklist.is_done(rule.checklist_item)):
                    ok = True
            if not ok:
                item = f" with checklist item {rule.checklist_item!r} done" if rule.checklist_item else ""
                raise PolicyViolation(
                    f"apply refused by rule {rule.name!r}: session {record.session_id} needs a completed "
                    f"{rule.profile_id} child{item}",
                    hint=f"spawn_agent(profile_id={rule.profile_id!r}, parent_session_id="
                    f"{record.session_id!r}) and wait for it",
                )

    async def apply(self, session_id: str, confirm: bool, caller: Caller = OPERATOR) -> Any:
        record = self.get(session_id, caller)
        self._require_reviewable(record)
        if record.read_only:
            raise PolicyViolation(
                f"session {session_id} uses read-only profile {record.profile_id!r}; it has nothing to apply"
            )
        if not confirm:
            return await self.sandbox.apply(session_id, record.policy, confirm=False)
        self._check_rules(record)
        root = record.working_dir
        lock = self._apply_locks.setdefault(root, asyncio.Lock())
        async with lock:
            preview = await self.sandbox.diff(session_id, record.policy)
            mine = {f.path for f in preview.files} | {f.old_path for f in preview.files if f.old_path}
            started = record.started_at or record.created_at
            for when, other, paths in self._applied.get(root, []):
                clash = mine & paths
                if other != session_id and when >= started and clash:
                    raise ApplyConflictError(
                        f"session {session_id}: {len(clash)} file(s) were applied by session {other} after "
                        f"this session started: {', '.join(sorted(clash)[:10])}",
                        hint="discard this diff, or resume the session so it works on the new files",
                    )
            result = await self.sandbox.apply(session_id, record.policy, confirm=True)
            self._applied.setdefault(root, []).append((datetime.now(UTC), session_id, mine))
        record.diff_state = DiffState.APPLIED
        if record.status == SessionStatus.AWAITING_APPROVAL:
            await self._transition(record, SessionStatus.COMPLETED, reason="diff applied")
        await self._record(
            record,
            EventDraft(
                type="approval",
                text=f"diff applied: {len(mine)} file(s)",
                data={"applied": True, "files": sorted(mine)[:200]},
                related_files=sorted(mine)[:200],
            ),
        )
        await self._persist(record)
        return result

    async def discard(self, session_id: str, caller: Caller = OPERATOR) -> SessionRecord:
        record = self.get(session_id, caller)
        self._require_reviewable(record)
        await self.sandbox.discard(session_id)
        record.diff_state = DiffState.DISCARDED
        if record.status == SessionStatus.AWAITING_APPROVAL:
            await self._transition(record, SessionStatus.COMPLETED, reason="diff discarded")
        await self._record(record, EventDraft(type="approval", text="diff discarded", data={"applied": False}))
        await self._persist(record)
        return record


def _working_dir(given: str) -> Path:
    """The absolute directory a caller named; a path the OS refuses (``~nosuchuser``, a name too long,
    a NUL byte) is a :class:`ConfigError` naming working_dir, like any other bad path."""
    try:
        path = Path(given).expanduser()
        if not path.is_absolute():
            raise ConfigError(
                f"working_dir: {shown(given)} is not an absolute path",
                hint="pass the absolute path of the directory the agent should work on",
            )
        if not path.is_dir():
            raise ConfigError(f"working_dir: {shown(str(path))} is not a directory")
        return path
    except (OSError, RuntimeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"working_dir: {shown(given)} cannot be used: {reason}",
            hint="pass the absolute path of an existing directory",
        ) from None


def _clamp(wanted: dict[str, Any], limit: dict[str, Any]) -> dict[str, float | int]:
    """A named policy's numbers, capped at what the parent allows (a child never gets more)."""
    return {k: min(v, limit[k]) for k, v in wanted.items() if isinstance(v, int | float) and k in limit}
