"""The journal: a durable, append-only SQLite log of every event (WAL, ``synchronous=FULL``).

It is the source of truth: an event is acknowledged only after its transaction has committed. The
search index is derived from it and can always be rebuilt (``hydra reindex``). Counters are per
session, from 0, with no gaps, also under concurrent appends from several threads. Session records
live in the same file so that one backup holds everything.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import Event, EventDraft, SessionRef

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    counter INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (session_id, counter)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    parent_session_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_parent ON sessions (parent_session_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _now() -> str:
    from hydra_sandbox.events import utcnow

    return utcnow().isoformat()


class Journal:
    """Thread-safe; every method is blocking (call it from a worker thread in async code)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise self._error("open", exc) from None
        self._lock = threading.RLock()
        self._next: dict[str, int] = {}

    def _error(self, action: str, exc: Exception) -> StoreError:
        text = str(exc)
        if "full" in text.lower():
            hint = f"free disk space on the volume holding {self.path.parent} and retry; nothing was lost"
        elif "malformed" in text.lower() or "not a database" in text.lower():
            hint = f"restore {self.path} from a backup or `hydra import` an export"
        else:
            hint = f"check that {self.path} is writable"
        return StoreError(f"journal {self.path}: cannot {action}: {text}", hint=hint)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- events ------------------------------------------------------------------------------

    def _next_counter(self, session_id: str) -> int:
        if session_id not in self._next:
            row = self._db.execute("SELECT MAX(counter) FROM events WHERE session_id = ?", (session_id,)).fetchone()
            self._next[session_id] = 0 if row[0] is None else row[0] + 1
        return self._next[session_id]

    def append(self, ref: SessionRef, draft: EventDraft) -> Event:
        return self.append_many(ref, [draft])[0]

    def append_many(self, ref: SessionRef, drafts: Sequence[EventDraft]) -> list[Event]:
        """Append events in one transaction; returned only after it has committed."""
        with self._lock:
            start = self._next_counter(ref.session_id)
            events = [Event.from_draft(d, ref, start + i) for i, d in enumerate(drafts)]
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO events (id, session_id, counter, type, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (e.id, e.session_id, e.counter, e.type, e.timestamp.isoformat(), e.model_dump_json())
                        for e in events
                    ],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._next.pop(ref.session_id, None)
                raise self._error("append", exc) from None
            self._next[ref.session_id] = start + len(events)
            return events

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def record(self, event: Event) -> bool:
        """Store an event as it is (import); ``False`` when its id is already there."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO events (id, session_id, counter, type, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event.id,
                        event.session_id,
                        event.counter,
                        event.type,
                        event.timestamp.isoformat(),
                        event.model_dump_json(),
                    ),
                )
            except sqlite3.Error as exc:
                raise self._error("record", exc) from None
            self._next.pop(event.session_id, None)
            return cursor.rowcount == 1

    def events(self, session_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events WHERE session_id = ? AND counter >= ? ORDER BY counter LIMIT ?",
                (session_id, since, -1 if limit is None else limit),
            ).fetchall()
        return [Event.model_validate_json(r[0]) for r in rows]

    def last_counter(self, session_id: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(counter) FROM events WHERE session_id = ?", (session_id,)).fetchone()
        return row[0]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def max_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Event]]:
        """Events in journal order after global position ``seq`` (for the indexer)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [(r[0], Event.model_validate_json(r[1])) for r in rows]

    def search_text(self, needle: str, limit: int = 20) -> list[Event]:
        """Plain substring search (for the CLI when the semantic index is not available)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events WHERE body LIKE ? ESCAPE '\\' ORDER BY seq DESC LIMIT ?",
                ("%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%", limit),
            ).fetchall()
        return [Event.model_validate_json(r[0]) for r in rows]

    def delete_before(self, cutoff: datetime) -> list[str]:
        """Delete events older than ``cutoff`` (prune); returns their ids."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM events WHERE ts < ?", (cutoff.isoformat(),))]
            try:
                self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff.isoformat(),))
            except sqlite3.Error as exc:
                raise self._error("prune", exc) from None
            return ids

    # -- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            except sqlite3.Error as exc:
                raise self._error("write meta", exc) from None

    # -- sessions ----------------------------------------------------------------------------

    def save_session(
        self,
        session_id: str,
        *,
        status: str,
        profile_id: str,
        parent_session_id: str | None,
        data: dict[str, Any],
    ) -> None:
        now = _now()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO sessions (session_id, status, profile_id, parent_session_id, created_at, "
                    "updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET "
                    "status = excluded.status, profile_id = excluded.profile_id, "
                    "parent_session_id = excluded.parent_session_id, updated_at = excluded.updated_at, "
                    "data = excluded.data",
                    (
                        session_id,
                        status,
                        profile_id,
                        parent_session_id,
                        now,
                        now,
                        json.dumps(data, default=str),
                    ),
                )
            except sqlite3.Error as exc:
                raise self._error("save session", exc) from None

    def load_session(self, session_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def query_sessions(
        self,
        status: str | None = None,
        profile_id: str | None = None,
        parent_session_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
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
        with self._lock:
            rows = self._db.execute(
                f"SELECT data FROM sessions {where} ORDER BY created_at DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]
