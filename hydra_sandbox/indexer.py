"""Fills the search index from the journal, in batches, in a background thread.

The journal is the source of truth; the indexer keeps a cursor (the journal position of the last
event it indexed, saved in the journal's meta table) and upserts by event id, so a crash, a restart
or an outage of Chroma loses nothing and indexes nothing twice: when the store is back, the indexer
catches up from its cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hydra_sandbox.journal import Journal
from hydra_sandbox.store import ContextStore

log = logging.getLogger(__name__)
CURSOR_KEY = "indexer.cursor"


class Indexer:
    def __init__(
        self,
        journal: Journal,
        store: ContextStore,
        *,
        batch_size: int = 256,
        interval_s: float = 0.1,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.journal = journal
        self.store = store
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self._cursor = int(journal.get_meta(CURSOR_KEY, "0") or 0)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.indexed = 0

    @property
    def cursor(self) -> int:
        return self._cursor

    def lag(self) -> int:
        """Events in the journal that are not yet searchable."""
        return max(self.journal.max_seq() - self._cursor, 0)

    def step(self) -> int:
        """Index one batch; returns how many events it indexed (0 when caught up). Raises on a store error."""
        with self._lock:
            rows = self.journal.read_after(self._cursor, self.batch_size)
            if not rows:
                return 0
            events = [event for _seq, event in rows]
            self.store.record_events(events)
            self._cursor = rows[-1][0]
            self.journal.set_meta(CURSOR_KEY, str(self._cursor))
            self.indexed += len(events)
            return len(events)

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Index until caught up (or ``timeout_s``); store errors propagate."""
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            n = self.step()
            total += n
            if n == 0:
                break
        return total

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the index from the journal: reset the store, then index everything."""
        with self._lock:
            self.store.reset()
            self._cursor = 0
            self.journal.set_meta(CURSOR_KEY, "0")
        total = self.journal.max_seq()
        done = 0
        while True:
            n = self.step()
            if n == 0:
                return done
            done += n
            if progress:
                progress(done, total)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hydra-indexer", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        backoff = self.interval_s
        while not self._stop.is_set():
            try:
                n = self.step()
                self.last_error = None
                backoff = self.interval_s
            except Exception as exc:  # the store is down: keep the cursor, retry with backoff
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("search index unavailable, will retry in %.1fs: %s", backoff, self.last_error)
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if n == 0:
                self._wake.wait(self.interval_s)
                self._wake.clear()
