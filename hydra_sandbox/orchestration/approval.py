"""Review and approval of a finished session's changes: the diff, the apply rules of its (stored)
profile, the conflict ledger, and apply / discard.

Applies hold a lock on their working directory that also excludes every overlapping one (``/p`` and
``/p/sub``), so the second waits and then checks its conflicts against what the first wrote. The ledger
lives in the journal (:meth:`~hydra_sandbox.journal.Journal.record_applied`), so a restarted
server still refuses a diff whose files another session applied after it started.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hydra_sandbox.errors import ApplyConflictError, PolicyViolation, WorkspaceError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.lifecycle import ACTIVE, DiffState, SessionRecord, SessionStatus
from hydra_sandbox.orchestration.path_locks import PathLocks, overlaps, paths_under
from hydra_sandbox.orchestration.registry import SessionRegistry
from hydra_sandbox.orchestration.runs import SessionRuns

if TYPE_CHECKING:
    from hydra_sandbox.applying import ApplyResult
    from hydra_sandbox.diffing import DiffPreview

_REVIEWED = frozenset({SessionStatus.COMPLETED, SessionStatus.AWAITING_APPROVAL})


class Approval:
    """Diff, apply and discard for sessions that have finished. Event loop only."""

    def __init__(self, runs: SessionRuns, registry: SessionRegistry) -> None:
        self._runs = runs
        self._registry = registry
        self._sandbox = runs.sandbox
        self._journal = registry.journal
        self._apply_locks = PathLocks()

    async def diff(self, record: SessionRecord) -> DiffPreview:
        require_reviewable(record)
        return await self._sandbox.diff(record.session_id, record.policy)

    async def apply(
        self, record: SessionRecord, confirm: bool, digest: str | None = None, acknowledge_masked: bool = False
    ) -> ApplyResult:
        """Write the reviewed change set: ``digest`` (from get_diff) is required with ``confirm``, and
        apply refuses any other change set; files with masked spans need ``acknowledge_masked``."""
        require_reviewable(record)
        if record.read_only:
            raise PolicyViolation(
                f"session {record.session_id} uses read-only profile {record.profile_id!r}; it has nothing to apply"
            )
        if not confirm:
            return await self._sandbox.apply(record.session_id, record.policy, confirm=False)
        if not digest:
            raise WorkspaceError(
                f"apply_diff: digest: missing for session {record.session_id}; apply writes only a change set "
                "that was reviewed",
                hint="call get_diff, review it, and pass its digest with confirm=true",
            )
        self.check_rules(record)
        root = record.working_dir
        async with self._apply_locks.hold(root):  # /p and /p/sub wait for each other
            preview = await self._sandbox.diff(record.session_id, record.policy)
            mine = {f.path for f in preview.files} | {f.old_path for f in preview.files if f.old_path}
            await self._refuse_conflicts(record, mine)
            result = await self._sandbox.apply(
                record.session_id, record.policy, confirm=True, digest=digest, acknowledge_masked=acknowledge_masked
            )
            await asyncio.to_thread(
                self._journal.record_applied, str(root), record.session_id, datetime.now(UTC), sorted(mine)
            )
        record.diff_state = DiffState.APPLIED
        if record.status == SessionStatus.AWAITING_APPROVAL:
            await self._runs.transition(record, SessionStatus.COMPLETED, reason="diff applied")
        await self._runs.record(
            record,
            EventDraft(
                type="approval",
                text=f"diff applied: {len(mine)} file(s)",
                data={"applied": True, "files": sorted(mine)[:200]},
                related_files=sorted(mine)[:200],
            ),
        )
        await self._runs.persist(record)
        return result

    async def discard(self, record: SessionRecord) -> SessionRecord:
        require_reviewable(record)
        await self._sandbox.discard(record.session_id)
        record.diff_state = DiffState.DISCARDED
        if record.status == SessionStatus.AWAITING_APPROVAL:
            await self._runs.transition(record, SessionStatus.COMPLETED, reason="diff discarded")
        await self._runs.record(record, EventDraft(type="approval", text="diff discarded", data={"applied": False}))
        await self._runs.persist(record)
        return record

    async def _refuse_conflicts(self, record: SessionRecord, mine: set[str]) -> None:
        """Refuse when another session applied any of ``mine`` after this one started, under this working
        directory or an overlapping one (its paths are compared as host paths)."""
        started = record.started_at or record.created_at
        root = record.working_dir
        ledger = await asyncio.to_thread(self._journal.applied_anywhere_since, started)
        for _when, other_root, other, paths in ledger:
            if other == record.session_id or not overlaps(root, Path(other_root)):
                continue
            clash = mine & paths_under(root, Path(other_root), paths)
            if clash:
                where = "" if Path(other_root) == root else f" in {other_root}"
                raise ApplyConflictError(
                    f"session {record.session_id}: {len(clash)} file(s) were applied by session {other}{where} after "
                    f"this session started: {', '.join(sorted(clash)[:10])}",
                    hint="discard this diff, or resume the session so it works on the new files",
                )

    def check_rules(self, record: SessionRecord) -> None:
        """The apply rules of the profile as it was resolved at spawn (never re-read from its file)."""
        if record.profile is None:
            raise PolicyViolation(
                f"session {record.session_id}: its profile {record.profile_id!r} was not stored and no longer "
                "loads, so its apply rules cannot be checked",
                hint="restore the profile file, or discard this diff",
            )
        for rule in record.profile.apply_requires:
            if not any(
                self._child_passes(child_id, rule.profile_id, rule.checklist_item) for child_id in record.children
            ):
                item = f" with checklist item {rule.checklist_item!r} done" if rule.checklist_item else ""
                raise PolicyViolation(
                    f"apply refused by rule {rule.name!r}: session {record.session_id} needs a completed "
                    f"{rule.profile_id} child{item}",
                    hint=f"spawn_agent(profile_id={rule.profile_id!r}, parent_session_id="
                    f"{record.session_id!r}) and wait for it",
                )

    def _child_passes(self, child_id: str, profile_id: str, checklist_item: str | None) -> bool:
        child = self._registry.find(child_id)
        if child is None or child.profile_id != profile_id or child.status not in _REVIEWED:
            return False
        checklist = self._runs.recorder.checklist(child_id)
        return checklist_item is None or bool(checklist and checklist.is_done(checklist_item))


def require_reviewable(record: SessionRecord) -> None:
    if record.status in ACTIVE:
        raise WorkspaceError(
            f"session {record.session_id} is {record.status}; its diff is ready when it has finished",
            hint="call wait_session first",
        )
    if record.diff_state in {DiffState.APPLIED, DiffState.DISCARDED}:
        raise WorkspaceError(f"session {record.session_id}: its diff was already {record.diff_state}")
