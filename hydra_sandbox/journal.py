"""The journal: Hydra's durable, append-only event log and session table (the source of truth).

One SQLite file in WAL mode with ``synchronous=FULL``: an event is acknowledged only after its
transaction has committed to disk. The search index is rebuilt from here at any time
(:mod:`hydra_sandbox.indexer`), so nothing is lost if the index is.

Thread safety: one connection guarded by one lock; counters are assigned inside an ``IMMEDIATE``
transaction, so they stay gapless even with several processes writing (SQLite serialises writers).

Every event row has a global sequence number (``seq``, an ``AUTOINCREMENT`` rowid that is never reused,
not even after :meth:`Journal.delete_before`); the indexer follows it with :meth:`Journal.read_after`
and keeps its cursor in the small ``meta`` table. The session table, the apply ledger and the
indexer's set-aside list live in the same file; their methods are in :mod:`hydra_sandbox.journal_tables`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.journal_tables import SessionTables, epoch
from hydra_sandbox.private_data import private_dir, private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    counter INTEGER NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (session_id, counter)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    parent_session_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_created ON sessions (created_at);
CREATE INDEX IF NOT EXISTS sessions_parent ON sessions (parent_session_id);
CREATE TABLE IF NOT EXISTS applied (
    root TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ts REAL NOT NULL,
    paths TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS applied_root ON applied (root, ts);
CREATE TABLE IF NOT EXISTS set_aside (
    event_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    ts REAL NOT NULL
);
"""



class _Pending:
    """Drafts waiting for a group commit, and what became of them."""

    __slots__ = ("done", "drafts", "error", "events", "ref")

    def __init__(self, ref: SessionRef, drafts: list[EventDraft]) -> None:
        self.ref = ref
        self.drafts = drafts
        self.events: list[Event] | None = None
        self.error: BaseException | None = None
        self.done = False


class Journal(SessionTables):
    """SQLite-backed event journal and session table. Safe to share between threads."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._pending_lock = threading.Lock()
        self._pending: list[_Pending] = []
        try:
            private_dir(self.path.parent, tighten=False)  # a data home is tightened by whoever owns it
            private_file(self.path)
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._translate(exc, "open") from exc
        with self._guard("open"):
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"journal {self.path}: could not switch to WAL mode (got {mode!r})",
                    hint="put the data directory (HYDRA_DATA_HOME) on a local file system",
                )
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)

    # -- plumbing -----------------------------------------------------------------------------

    def _translate(self, exc: BaseException, action: str) -> StoreError:
        text = str(exc).lower()
        if "full" in text or getattr(exc, "errno", None) == 28:
            return StoreError(
                f"journal {self.path}: disk full while trying to {action} ({exc})",
                hint="free space on that file system or move HYDRA_DATA_HOME, then retry; "
                "`hydra prune` removes old events",
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return StoreError(
                f"journal {self.path}: the database file is corrupt ({exc})",
                hint="stop Hydra, move the file aside, and restore from a `hydra export` JSONL file "
                "with `hydra import`",
            )
        if "locked" in text or "busy" in text:
            return StoreError(
                f"journal {self.path}: the database stayed locked while trying to {action} ({exc})",
                hint="another process holds a long write transaction on it; stop it or retry",
            )
        return StoreError(
            f"journal {self.path}: failed to {action} ({exc})",
            hint="check that the file and its directory are readable and writable",
        )

    @contextmanager
    def _guard(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except StoreError:
                raise
            except (sqlite3.Error, OSError) as exc:
                raise self._translate(exc, action) from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error."""
        with self._guard(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events -------------------------------------------------------------------------------

    @staticmethod
    def _insert(conn: sqlite3.Connection, event: Event, *, ignore: bool = False) -> bool:
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        cur = conn.execute(
            f"{verb} INTO events (id, session_id, counter, type, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.session_id,
                event.counter,
                event.type,
                epoch(event.timestamp),
                event.model_dump_json(),
            ),
        )
        return cur.rowcount == 1

    @staticmethod
    def _next_counter(conn: sqlite3.Connection, session_id: str) -> int:
        row = conn.execute("SELECT MAX(counter) FROM events WHERE session_id = ?", (session_id,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def append(self, ref: SessionRef, draft: EventDraft) -> Event:
        """Give ``draft`` its session's next counter and commit it. Returns the recorded event."""
        return self.append_many(ref, [draft])[0]

    def append_many(self, ref: SessionRef, drafts: Sequence[EventDraft]) -> list[Event]:
        """Append several drafts of one session in one transaction (consecutive counters).

        Group commit: appends that arrive from other threads while a commit is running wait for it,
        then the next thread to get the connection commits all of them in one transaction (one fsync).
        Each call still returns only after its own events are durable.
        """
        if not drafts:
            return []
        mine = _Pending(ref, list(drafts))
        with self._pending_lock:
            self._pending.append(mine)
        with self._lock:
            if not mine.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit_pending(batch)
        if mine.error is not None:
            raise mine.error
        assert mine.events is not None
        return mine.events

    def _commit_pending(self, batch: list[_Pending]) -> None:
        sessions = ", ".join(sorted({p.ref.session_id for p in batch}))
        try:
            with self._write(f"append events of session {sessions}") as conn:
                next_counter: dict[str, int] = {}
                for pending in batch:
                    sid = pending.ref.session_id
                    start = next_counter.get(sid)
                    if start is None:
                        start = self._next_counter(conn, sid)
                    events = [Event.from_draft(d, pending.ref, start + i) for i, d in enumerate(pending.drafts)]
                    next_counter[sid] = start + len(events)
                    for event in events:
                        self._insert(conn, event)
                    pending.events = events
        except BaseException as exc:
            for pending in batch:
                pending.events, pending.error, pending.done = None, exc, True
            raise
        finally:
            for pending in batch:
                pending.done = True

    def record(self, event: Event) -> bool:
        """Insert an already numbered event (import); False when its id is already recorded."""
        with self._write(f"record event {event.id}") as conn:
            return self._insert(conn, event, ignore=True)

    def events(self, session_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one session with ``counter >= since``, in counter order."""
        with self._guard(f"read events of session {session_id}") as conn:
            rows = conn.execute(
                "SELECT body FROM events WHERE session_id = ? AND counter >= ? ORDER BY counter LIMIT ?",
                (session_id, since, -1 if limit is None else limit),
            ).fetchall()
        return [Event.model_validate_json(r[0]) for r in rows]

    def page(self, session_id: str, since: int, limit: int, max_bytes: int) -> tuple[list[Event], bool]:
        """At most ``limit`` events of a session from counter ``since`` on, ending early once their
        stored JSON passes ``max_bytes`` (one event at least); and whether more follow."""
        with self._guard(f"read events of session {session_id}") as conn:
            cursor = conn.execute(
                "SELECT body FROM events WHERE session_id = ? AND counter >= ? ORDER BY counter LIMIT ?",
                (session_id, since, limit + 1),
            )
            bodies: list[str] = []
            size = 0
            for (body,) in cursor:
                if len(bodies) == limit or (bodies and size + len(body) > max_bytes):
                    return [Event.model_validate_json(b) for b in bodies], True
                bodies.append(body)
                size += len(body)
        return [Event.model_validate_json(b) for b in bodies], False

    def events_of_type(self, session_id: str, event_type: str, limit: int = 1000) -> list[Event]:
        """The session's events of one type, in counter order (at most ``limit``)."""
        with self._guard(f"read {event_type} events of session {session_id}") as conn:
            rows = conn.execute(
                "SELECT body FROM events WHERE session_id = ? AND type = ? ORDER BY counter LIMIT ?",
                (session_id, event_type, limit),
            ).fetchall()
        return [Event.model_validate_json(r[0]) for r in rows]

    def latest_event(self, session_id: str, event_type: str, *, before: int | None = None) -> Event | None:
        """The session's last event of ``event_type`` (with ``counter < before`` when given); for
        ``status``, the last one that changed the status (it has ``data.to``)."""
        changed = " AND json_extract(body, '$.data.to') IS NOT NULL" if event_type == "status" else ""
        with self._guard(f"read the last {event_type} event of session {session_id}") as conn:
            row = conn.execute(
                "SELECT body FROM events WHERE session_id = ? AND type = ? AND counter < ?"
                + changed
                + " ORDER BY counter DESC LIMIT 1",
                (session_id, event_type, 2**62 if before is None else before),
            ).fetchone()
        return Event.model_validate_json(row[0]) if row else None

    def get(self, event_id: str) -> Event | None:
        with self._guard(f"read event {event_id}") as conn:
            row = conn.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
        return Event.model_validate_json(row[0]) if row else None

    def last_counter(self, session_id: str) -> int | None:
        with self._guard(f"read last counter of session {session_id}") as conn:
            row = conn.execute("SELECT MAX(counter) FROM events WHERE session_id = ?", (session_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def count(self) -> int:
        with self._guard("count events") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Event]]:
        """Events with a global sequence number above ``seq``, oldest first (the indexer's cursor)."""
        with self._guard("read events for indexing") as conn:
            rows = conn.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [(int(s), Event.model_validate_json(b)) for s, b in rows]

    def count_after(self, seq: int) -> int:
        with self._guard("count events for indexing") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (seq,)).fetchone()[0])

    def iter_all(self, batch_size: int = 1000) -> Iterator[Event]:
        """Every event in sequence order, read in batches (export)."""
        seq = 0
        while True:
            batch = self.read_after(seq, batch_size)
            if not batch:
                return
            for _, event in batch:
                yield event
            seq = batch[-1][0]

    def delete_before(self, ts: datetime) -> list[str]:
        """Delete events older than ``ts``; returns their ids so the index can drop them too."""
        cutoff = epoch(ts)
        with self._write("delete old events") as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM events WHERE ts < ? ORDER BY seq", (cutoff,))]
            conn.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
        return ids

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._guard(f"read meta {key}") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._write(f"write meta {key}") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
