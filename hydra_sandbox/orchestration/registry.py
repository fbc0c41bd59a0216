"""The sessions Hydra knows: in memory for quick reads, persisted in the journal's sessions table.

It is also the delegation graph authority walks (:meth:`SessionRegistry.parent_of`), and the index of
idempotency keys, namespaced by principal (:func:`hydra_sandbox.authority.namespace`): the same key
sent by the operator and by an agent names two different sessions.
"""

from __future__ import annotations

import asyncio
import logging

from hydra_sandbox.authority import MAX_DEPTH, Principal, visible
from hydra_sandbox.errors import ConfigError, SessionNotFoundError, shown
from hydra_sandbox.journal import Journal
from hydra_sandbox.lifecycle import SessionRecord, SessionStatus
from hydra_sandbox.session_ids import is_session_id

log = logging.getLogger(__name__)

class SessionRegistry:
    """Session records by id. Safe to use from the event loop only; journal I/O runs in a thread."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._sessions: dict[str, SessionRecord] = {}
        self._keys: dict[tuple[str, str], str] = {}

    async def load(self) -> list[SessionRecord]:
        """Read every record from the journal (at start); returns them."""
        rows = await asyncio.to_thread(self.journal.query_sessions, None, None, None, 1_000_000)
        for data in rows:
            if not is_session_id(data.get("session_id")):  # written by an old import: never a path or a run
                log.warning("journal: session %r is not a Hydra session id; ignored", data.get("session_id"))
                continue
            self._index(SessionRecord.model_validate(data))
        return list(self._sessions.values())

    def _index(self, record: SessionRecord) -> None:
        self._sessions[record.session_id] = record
        if record.idempotency_key and record.idempotency_scope:
            self._keys[(record.idempotency_scope, record.idempotency_key)] = record.session_id

    def add(self, record: SessionRecord) -> None:
        """Register a new session (and its idempotency key); a child is added to its parent's children."""
        self._index(record)
        if record.parent_session_id:
            self.get(record.parent_session_id).children.append(record.session_id)

    async def save(self, record: SessionRecord) -> None:
        await asyncio.to_thread(
            self.journal.save_session,
            record.session_id,
            status=record.status.value,
            profile_id=record.profile_id,
            parent_session_id=record.parent_session_id,
            data=record.model_dump(mode="json"),
        )

    # -- reads -------------------------------------------------------------------------------

    def find(self, session_id: str) -> SessionRecord | None:
        return self._sessions.get(session_id)

    def get(self, session_id: str) -> SessionRecord:
        record = self._sessions.get(session_id)
        if record is None:
            raise SessionNotFoundError(
                f"session {shown(session_id)} not found", hint="list_sessions shows the sessions Hydra knows"
            )
        return record

    def parent_of(self, session_id: str) -> str | None:
        record = self._sessions.get(session_id)
        return record.parent_session_id if record else None

    def ancestors(self, session_id: str) -> list[str]:
        """The parents of a session, nearest first (bounded, cycle-safe)."""
        out: list[str] = []
        parent = self.parent_of(session_id)
        while parent is not None and parent not in out and parent != session_id and len(out) < MAX_DEPTH:
            out.append(parent)
            parent = self.parent_of(parent)
        return out

    def reused(self, scope: str, key: str | None) -> SessionRecord | None:
        """The session created earlier with this idempotency key by the same principal, if any."""
        if key is None:
            return None
        found = self._keys.get((scope, key))
        return self._sessions.get(found) if found else None

    def select(
        self,
        principal: Principal,
        *,
        status: str | None,
        profile_id: str | None,
        parent_session_id: str | None,
        limit: int,
    ) -> list[SessionRecord]:
        """Sessions ``principal`` may see, newest first, filtered."""
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
            if not visible(principal, record.session_id, self):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def all(self) -> list[SessionRecord]:
        return list(self._sessions.values())

    def queue_length(self) -> int:
        return sum(1 for r in self._sessions.values() if r.status == SessionStatus.QUEUED)

    def status_counts(self) -> dict[SessionStatus, int]:
        """How many sessions are in each status (every status present, zeros included).

        Safe to call from another thread (a metrics scrape): it snapshots the records in one step."""
        counts = dict.fromkeys(SessionStatus, 0)
        for record in list(self._sessions.values()):
            counts[record.status] += 1
        return counts
