"""The journal's session table and apply ledger (the :class:`~hydra_sandbox.journal.Journal` holds
them in the same SQLite file, under the same lock; its schema creates both tables).

- ``sessions``: one row per session record, its data as JSON, its columns queryable.
- ``applied``: which session wrote which paths under which working directory, and when, so that
  ``apply_diff`` refuses a diff whose files another session applied after it started, across restarts.
- ``set_aside``: events the indexer could not put into the search index, with the reason (a dead-letter
  list: they stay in the journal, ``hydra reindex`` tries them again).
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import as_utc

_SESSION_COLUMNS = ("session_id", "status", "profile_id", "parent_session_id", "created_at", "updated_at")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def epoch(ts: datetime) -> float:
    return as_utc(ts).timestamp()


class SessionTables(ABC):
    """Mixed into :class:`~hydra_sandbox.journal.Journal`, which provides the connection guards."""

    path: Path

    @abstractmethod
    def _guard(self, action: str) -> AbstractContextManager[sqlite3.Connection]:
        """A connection for reading, errors turned into StoreError naming ``action``."""

    @abstractmethod
    def _write(self, action: str) -> AbstractContextManager[sqlite3.Connection]:
        """A connection in a write transaction, errors turned into StoreError naming ``action``."""

    # -- the apply ledger ---------------------------------------------------------------------

    def record_applied(self, root: str, session_id: str, when: datetime, paths: Sequence[str]) -> None:
        """Remember that ``session_id`` wrote ``paths`` under ``root`` at ``when`` (conflict checks)."""
        with self._write(f"record the apply of session {session_id}") as conn:
            conn.execute(
                "INSERT INTO applied (root, session_id, ts, paths) VALUES (?, ?, ?, ?)",
                (root, session_id, epoch(when), json.dumps(sorted(paths))),
            )

    def applied_since(self, root: str, since: datetime) -> list[tuple[datetime, str, set[str]]]:
        """Applies under ``root`` at or after ``since``: (when, session id, paths written), oldest first."""
        with self._guard(f"read the apply ledger of {root}") as conn:
            rows = conn.execute(
                "SELECT ts, session_id, paths FROM applied WHERE root = ? AND ts >= ? ORDER BY ts",
                (root, epoch(since)),
            ).fetchall()
        return [(datetime.fromtimestamp(ts, UTC), sid, set(json.loads(paths))) for ts, sid, paths in rows]

    def applied_anywhere_since(self, since: datetime) -> list[tuple[datetime, str, str, set[str]]]:
        """Every apply at or after ``since``: (when, root, session id, paths written), oldest first."""
        with self._guard("read the apply ledger") as conn:
            rows = conn.execute(
                "SELECT ts, root, session_id, paths FROM applied WHERE ts >= ? ORDER BY ts", (epoch(since),)
            ).fetchall()
        return [(datetime.fromtimestamp(ts, UTC), root, sid, set(json.loads(paths))) for ts, root, sid, paths in rows]

    # -- events the index would not take -------------------------------------------------------

    def set_aside(self, event_id: str, seq: int, reason: str) -> None:
        """Note that the indexer skipped event ``event_id`` (journal sequence ``seq``) and why."""
        with self._write(f"set aside event {event_id}") as conn:
            conn.execute(
                "INSERT INTO set_aside (event_id, seq, reason, ts) VALUES (?, ?, ?, ?) ON CONFLICT(event_id)"
                " DO UPDATE SET seq = excluded.seq, reason = excluded.reason, ts = excluded.ts",
                (event_id, seq, reason[:2000], datetime.now(UTC).timestamp()),
            )

    def set_aside_events(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest events set aside: event id, journal sequence, reason, when."""
        with self._guard("read the set-aside events") as conn:
            rows = conn.execute(
                "SELECT event_id, seq, reason, ts FROM set_aside ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [
            {"event_id": e, "seq": q, "reason": r, "at": datetime.fromtimestamp(t, UTC).isoformat()}
            for e, q, r, t in rows
        ]

    def count_set_aside(self) -> int:
        with self._guard("count the set-aside events") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0])

    def clear_set_aside(self) -> None:
        """Forget every set-aside event (before a reindex tries them all again)."""
        with self._write("clear the set-aside events") as conn:
            conn.execute("DELETE FROM set_aside")

    # -- sessions -----------------------------------------------------------------------------

    def save_session(
        self,
        session_id: str,
        *,
        status: str,
        profile_id: str,
        parent_session_id: str | None,
        data: dict[str, Any],
    ) -> None:
        """Insert or update a session record; ``created_at`` is kept, ``updated_at`` set to now."""
        now = datetime.now(UTC).timestamp()
        try:
            payload = json.dumps(data, default=_json_default, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"journal {self.path}: session {session_id} data is not JSON serialisable ({exc})",
                hint="store only plain data (str, numbers, lists, dicts, datetimes) in session records",
            ) from exc
        with self._write(f"save session {session_id}") as conn:
            conn.execute(
                "INSERT INTO sessions (session_id, status, profile_id, parent_session_id, created_at,"
                " updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET"
                " status = excluded.status, profile_id = excluded.profile_id,"
                " parent_session_id = excluded.parent_session_id, updated_at = excluded.updated_at,"
                " data = excluded.data",
                (session_id, status, profile_id, parent_session_id, now, now, payload),
            )

    @staticmethod
    def _session_row(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(row[6])
        values = dict(zip(_SESSION_COLUMNS, row[:6], strict=True))
        values["created_at"] = datetime.fromtimestamp(values["created_at"], UTC)
        values["updated_at"] = datetime.fromtimestamp(values["updated_at"], UTC)
        record.update(values)
        return record

    def load_session(self, session_id: str) -> dict[str, Any] | None:
        """The session's data merged with its columns (columns win), or None."""
        with self._guard(f"load session {session_id}") as conn:
            row = conn.execute(
                f"SELECT {', '.join(_SESSION_COLUMNS)}, data FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return None if row is None else self._session_row(row)

    def query_sessions(
        self,
        status: str | None = None,
        profile_id: str | None = None,
        parent_session_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Session records matching every given filter, newest first."""
        clauses, params = [], []
        for column, value in (
            ("status", status),
            ("profile_id", profile_id),
            ("parent_session_id", parent_session_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._guard("query sessions") as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_SESSION_COLUMNS)}, data FROM sessions {where}"
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [self._session_row(r) for r in rows]

    def import_session(self, record: dict[str, Any]) -> bool:
        """Insert an exported session record as it was (timestamps kept); False if the id exists."""
        data = {k: v for k, v in record.items() if k not in _SESSION_COLUMNS}
        try:
            payload = json.dumps(data, default=_json_default, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"journal {self.path}: session {record.get('session_id')} data is not JSON serialisable ({exc})",
                hint="store only plain data in session records",
            ) from exc
        with self._write(f"import session {record['session_id']}") as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO sessions (session_id, status, profile_id, parent_session_id,"
                " created_at, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record["session_id"],
                    record["status"],
                    record["profile_id"],
                    record.get("parent_session_id"),
                    epoch(record["created_at"]),
                    epoch(record["updated_at"]),
                    payload,
                ),
            )
            return cur.rowcount == 1

    def all_sessions(self) -> list[dict[str, Any]]:
        """Every session record, oldest first (export)."""
        with self._guard("read sessions") as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_SESSION_COLUMNS)}, data FROM sessions ORDER BY created_at, rowid"
            ).fetchall()
        return [self._session_row(r) for r in rows]
