"""The indexer: copies journal events into the ContextStore, in the background, losing nothing.

It follows the journal's global sequence (:meth:`Journal.read_after`) from a cursor kept in the
journal's ``meta`` table. For each batch it upserts the events into the store by id and only then
advances the cursor. If the store fails (Chroma down, disk full), it retries the same batch with
exponential backoff (tenacity) until it succeeds or the indexer is stopped; the journal is untouched, so
nothing is lost, and because writes are upserts by id a batch written twice is still indexed once.

One bad event must not stop the rest (an outage must not lose any), so an event is **set aside** (noted
in the journal's ``set_aside`` table with its reason, shown in ``hydra://status`` and the metrics,
tried again by ``hydra reindex``) when:

- it is over an index limit (:func:`hydra_sandbox.limits.index_problem`, or the store raised
  :class:`~hydra_sandbox.errors.UnindexableEventError` for it): at once, no retry;
- a batch failed ``isolate_after`` times in a row and, written one event at a time, the store took
  other events of it but failed on this one. If it takes none, that is an outage: nothing is set aside
  and the batch is retried.

The background thread runs at a lower CPU priority (:data:`INDEX_NICE`): embedding is the server's
largest CPU cost while agents run, and on a small machine it took the cores tool calls needed. Falling
behind costs nothing but search freshness: the cursor catches up from the journal.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from hydra_sandbox.errors import StoreError, UnindexableEventError
from hydra_sandbox.events import Event
from hydra_sandbox.index_state import SessionStateIndex
from hydra_sandbox.journal import Journal
from hydra_sandbox.limits import index_problem
from hydra_sandbox.store import ContextStore

log = logging.getLogger(__name__)

CURSOR_KEY = "indexer.cursor"
INDEX_NICE = 10
"""How much nicer than the server the indexing thread runs (Linux sets nice per thread; threads it
starts, such as the embedding runtime's, inherit it)."""
ProgressCallback = Callable[[int, int], None]


def lower_priority(increment: int) -> None:
    """Make the calling thread ``increment`` nicer; where threads have no nice of their own (not Linux)
    or the call is refused, it runs as it is."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + increment, 19))
    except (OSError, AttributeError) as exc:
        log.debug("indexer: priority unchanged (%s)", exc)


class Indexer:
    """Background journal → index copier. Thread-safe; :meth:`notify` after appends for low latency."""

    def __init__(
        self,
        journal: Journal,
        store: ContextStore,
        batch_size: int = 256,
        *,
        poll_interval_s: float = 0.5,
        max_backoff_s: float = 5.0,
        isolate_after: int = 3,
    ) -> None:
        self.journal = journal
        self.store = store
        self._state = SessionStateIndex(journal)
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.isolate_after = isolate_after
        self._work = threading.Lock()  # one batch at a time, whoever runs it
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.last_error: BaseException | None = None

    # -- cursor ---------------------------------------------------------------------------------

    def cursor(self) -> int:
        value = self.journal.get_meta(CURSOR_KEY)
        return int(value) if value else 0

    def lag(self) -> int:
        """Journal events not yet in the index."""
        return self.journal.count_after(self.cursor())

    def set_aside_count(self) -> int:
        """Journal events the index would not take (see the module docstring)."""
        return self.journal.count_set_aside()

    # -- one batch ------------------------------------------------------------------------------

    def _note_failure(self, state: RetryCallState) -> None:
        """Log a failure once: the same error again (a missing model, a Chroma outage) goes to debug."""
        self.failures += 1
        error = state.outcome.exception() if state.outcome else None
        repeated = self.last_error is not None and str(error) == str(self.last_error)
        self.last_error = error
        level = logging.DEBUG if repeated else logging.WARNING
        log.log(level, "indexing failed (attempt %d), retrying: %s", state.attempt_number, error)

    def _index_batch(self, deadline: float | None) -> int:
        """Index the next batch; returns how many events it held (0: caught up)."""
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._work.acquire(timeout=wait):
            raise TimeoutError("another thread held the indexer past the deadline")
        try:
            return self._index_batch_locked(deadline)
        finally:
            self._work.release()

    def _index_batch_locked(self, deadline: float | None) -> int:
        cursor = self.cursor()
        batch = self.journal.read_after(cursor, self.batch_size)
        if not batch:
            return 0
        events = self._state.documents([event for _, event in batch])

        def stopped(state: RetryCallState) -> bool:
            if deadline is None:  # the background thread: retry until stop()
                return self._stopping.is_set()
            return time.monotonic() >= deadline

        def sleep(seconds: float) -> None:
            if deadline is None:
                self._stopping.wait(seconds)  # stop() ends the backoff at once
            else:
                time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.05, max=self.max_backoff_s),
            stop=stopped,
            sleep=sleep,
            before_sleep=self._note_failure,
            reraise=True,
        )
        seqs = {event.id: seq for seq, event in batch}
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > self.isolate_after:
                self._write_one_by_one(events, seqs)
            else:
                self._write(events, seqs)

        retrying(attempt)
        self.last_error = None  # a later failure is news again
        self.journal.set_meta(CURSOR_KEY, str(batch[-1][0]))
        return len(events)

    # -- writing, setting aside -----------------------------------------------------------------

    def _set_aside(self, event_id: str, seq: int, reason: str) -> None:
        log.warning("indexer: event %s set aside: %s", event_id, reason)
        self.journal.set_aside(event_id, seq, reason)

    def _write(self, events: list[Event], seqs: dict[str, int]) -> None:
        """Write ``events``; those over an index limit are set aside and the rest written."""
        pending = []
        for event in events:
            problem = index_problem(event)
            if problem is None:
                pending.append(event)
            else:
                self._set_aside(event.id, seqs[event.id], problem)
        while pending:
            try:
                self.store.record_events(pending)
                return
            except UnindexableEventError as exc:
                self._set_aside(exc.event_id, seqs.get(exc.event_id, 0), exc.reason)
                left = [e for e in pending if e.id != exc.event_id]
                if len(left) == len(pending):  # the store named an event it was not given
                    raise
                pending = left

    def _write_one_by_one(self, events: list[Event], seqs: dict[str, int]) -> None:
        """After repeated failures: the events the store fails on alone, while it takes others, are set
        aside. If it takes none, the last error is raised (an outage: retry the batch later).

        An outage can begin or end during the pass, so an event is set aside only when it fails a
        second time alone and the store still takes an event it took in this pass (writes are upserts:
        writing it again changes nothing)."""
        failed = self._each(events, seqs)
        if not failed:
            return
        if len(failed) == len(events):
            raise failed[-1][1]
        taken = [event for event in events if event.id not in {e.id for e, _ in failed}]
        failed = self._each([event for event, _ in failed], seqs)
        if not failed:
            return
        try:
            self._write([taken[-1]], seqs)
        except Exception as exc:  # the store no longer takes anything: an outage, not these events
            raise failed[-1][1] from exc
        for event, error in failed:
            reason = f"the index failed on it alone while taking other events: {type(error).__name__}: {error}"
            self._set_aside(event.id, seqs[event.id], reason)

    def _each(self, events: list[Event], seqs: dict[str, int]) -> list[tuple[Event, BaseException]]:
        failed: list[tuple[Event, BaseException]] = []
        for event in events:
            try:
                self._write([event], seqs)
            except Exception as exc:  # any store failure; sorted out by the caller
                failed.append((event, exc))
        return failed

    # -- foreground -----------------------------------------------------------------------------

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Index everything journaled so far, in the caller's thread; returns how many it indexed.

        Raises StoreError if the store is still failing, or events remain, when ``timeout_s`` passes.
        """
        deadline = time.monotonic() + timeout_s
        done = 0
        while True:
            try:
                n = self._index_batch(deadline)
            except Exception as exc:
                raise StoreError(
                    f"index did not catch up with journal {self.journal.path} within {timeout_s} s "
                    f"({type(exc).__name__}: {exc})",
                    hint="the events are safe in the journal; fix the index (is Chroma running?) and retry",
                ) from exc
            done += n
            if n == 0:
                return done
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"index still {self.lag()} events behind journal {self.journal.path} after {timeout_s} s",
                    hint="retry with a longer timeout; indexing continues in the background",
                )

    def reindex(self, progress: ProgressCallback | None = None) -> int:
        """Empty the store and rebuild it from the whole journal; returns the journal events gone
        through (:meth:`set_aside_count` of them were set aside). The set-aside list starts afresh."""
        with self._work:
            total = self.journal.count()
            self.store.reset()
            self.journal.set_meta(CURSOR_KEY, "0")
            self.journal.clear_set_aside()
            done, seq = 0, 0
            self._state = SessionStateIndex(self.journal)  # statuses are derived again from the start
            if progress:
                progress(0, total)
            while True:
                batch = self.journal.read_after(seq, self.batch_size)
                if not batch:
                    break
                events = self._state.documents([event for _, event in batch])
                seqs = {event.id: s for s, event in batch}
                try:
                    self._write(events, seqs)
                except Exception:  # one event may be the cause: find it, set it aside, go on
                    self._write_one_by_one(events, seqs)
                seq = batch[-1][0]
                self.journal.set_meta(CURSOR_KEY, str(seq))
                done += len(batch)
                if progress:
                    progress(done, max(total, done))
            return done

    # -- background -----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake the background thread (call after journal appends)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="hydra-indexer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background thread; a batch being retried is left for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        lower_priority(INDEX_NICE)
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                n = self._index_batch(None)
            except Exception as exc:  # only when stopping mid-retry, or the journal itself failed
                if self._stopping.is_set():
                    return
                self.last_error = exc
                log.error("indexer: %s", exc)
                self._stopping.wait(self.max_backoff_s)
                continue
            if n == 0:
                self._wake.wait(self.poll_interval_s)
