"""The indexer: catches up, survives store outages without loss, indexes each event exactly once."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.indexer import CURSOR_KEY, INDEX_NICE, Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.store import InMemoryStore


class FlakyStore(InMemoryStore):
    """An InMemoryStore that fails while ``down`` is set and counts every write that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.writes: Counter[str] = Counter()
        self.failed_calls = 0

    def record_events(self, events: Sequence[Event]) -> None:
        if self.down.is_set():
            self.failed_calls += 1
            raise ConnectionError("index unavailable")
        self.writes.update(e.id for e in events)
        super().record_events(events)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite3")
    yield j
    j.close()


def wait_until(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def append(journal: Journal, n: int, session: str = "s") -> list[Event]:
    return journal.append_many(
        SessionRef(session_id=session), [EventDraft(type="note", text=f"e{i}") for i in range(n)]
    )


def test_catch_up_indexes_everything_in_batches_and_moves_the_cursor(journal: Journal) -> None:
    store = InMemoryStore()
    indexer = Indexer(journal, store, batch_size=7)
    append(journal, 30)
    assert indexer.lag() == 30
    assert indexer.catch_up(timeout_s=10) == 30
    assert store.count() == 30 and indexer.lag() == 0
    assert journal.get_meta(CURSOR_KEY) == str(journal.read_after(0, 100)[-1][0])
    assert indexer.catch_up(timeout_s=1) == 0


def test_cursor_survives_restart_so_nothing_is_reindexed(journal: Journal) -> None:
    store = FlakyStore()
    Indexer(journal, store).catch_up(5)
    append(journal, 3)
    Indexer(journal, store).catch_up(5)
    append(journal, 2, session="t")
    assert Indexer(journal, store).catch_up(5) == 2
    assert set(store.writes.values()) == {1}


def test_outage_loses_nothing_and_cursor_waits_for_success(journal: Journal) -> None:
    store = FlakyStore()
    store.down.set()
    indexer = Indexer(journal, store, batch_size=4, poll_interval_s=0.01, max_backoff_s=0.05, isolate_after=1)
    indexer.start()
    try:
        append(journal, 10)
        indexer.notify()
        wait_until(lambda: store.failed_calls >= 12)  # past isolate_after: one by one, all failing
        assert indexer.set_aside_count() == 0  # an outage sets nothing aside
        assert indexer.cursor() == 0 and indexer.lag() == 10
        assert indexer.failures >= 2 and isinstance(indexer.last_error, ConnectionError)
        store.down.clear()
        wait_until(lambda: indexer.lag() == 0)
    finally:
        indexer.stop()
    assert store.count() == 10
    assert sorted(store.writes) == sorted(e.id for e in journal.events("s"))


def test_replaying_a_batch_after_a_crash_still_indexes_each_event_once(journal: Journal) -> None:
    store = FlakyStore()
    events = append(journal, 5)
    store.record_events(events[:3])  # written, but the cursor was never saved (crash)
    Indexer(journal, store).catch_up(5)
    assert store.count() == 5
    assert [h.id for h in store.query_by_session("s")] == [e.id for e in events]


def test_catch_up_gives_up_at_its_deadline_with_a_store_error(journal: Journal) -> None:
    store = FlakyStore()
    store.down.set()
    append(journal, 2)
    indexer = Indexer(journal, store, max_backoff_s=0.01)
    with pytest.raises(StoreError, match="journal"):
        indexer.catch_up(timeout_s=0.2)
    assert indexer.cursor() == 0 and store.failed_calls >= 2


def test_background_thread_indexes_events_appended_while_it_runs(journal: Journal) -> None:
    store = InMemoryStore()
    indexer = Indexer(journal, store, poll_interval_s=0.01)
    indexer.start()
    try:
        for round_ in range(5):
            append(journal, 20, session=f"s{round_}")
            indexer.notify()
        wait_until(lambda: store.count() == 100)
    finally:
        indexer.stop()
    assert not indexer.running


class PriorityProbe(InMemoryStore):
    """Notes the nice value of the thread that writes to the index."""

    def __init__(self) -> None:
        super().__init__()
        self.nice: list[int] = []

    def record_events(self, events: Sequence[Event]) -> None:
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        super().record_events(events)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="threads have no nice value of their own here")
def test_the_background_thread_indexes_at_a_lower_cpu_priority_than_the_server(journal: Journal) -> None:
    """Embedding took the cores tool calls needed while agents ran; indexing is what may wait."""
    store = PriorityProbe()
    indexer = Indexer(journal, store, poll_interval_s=0.01)
    server_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    indexer.start()
    try:
        append(journal, 3)
        indexer.notify()
        wait_until(lambda: store.count() == 3)
    finally:
        indexer.stop()
    assert store.nice and all(n == min(server_nice + INDEX_NICE, 19) for n in store.nice)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == server_nice, "the caller was slowed"


def test_reindex_rebuilds_the_store_from_the_journal_with_progress(journal: Journal) -> None:
    store = InMemoryStore()
    append(journal, 25)
    stray = Event.from_draft(EventDraft(type="note", text="not in journal"), SessionRef(session_id="z"), 0)
    store.record_event(stray)
    progress: list[tuple[int, int]] = []
    assert Indexer(journal, store, batch_size=10).reindex(lambda done, total: progress.append((done, total))) == 25
    assert store.count() == 25 and not store.query_by_session("z")
    assert progress == [(0, 25), (10, 25), (20, 25), (25, 25)]
    assert Indexer(journal, store).lag() == 0


def test_summaries_reach_the_summaries_side_and_are_searchable(journal: Journal) -> None:
    store = InMemoryStore()
    ref = SessionRef(session_id="s")
    journal.append(ref, EventDraft(type="note", text="working"))
    journal.append(ref, EventDraft(type="summary", text="final summary of the work"))
    Indexer(journal, store).catch_up(5)
    hits = store.semantic_search("final summary")
    assert hits[0].id == "s:1" and hits[0].type == "summary"


def test_a_failure_that_repeats_is_logged_once_until_indexing_works_again(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing model or a Chroma outage fails every retry the same way: one warning, not one a retry."""
    store = FlakyStore()
    store.down.set()
    indexer = Indexer(journal, store, batch_size=4, poll_interval_s=0.01, max_backoff_s=0.01)

    def warnings() -> int:
        return sum(r.levelno == logging.WARNING and "indexing failed" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.DEBUG, logger="hydra_sandbox.indexer"):
        indexer.start()
        try:
            append(journal, 3)
            indexer.notify()
            wait_until(lambda: store.failed_calls >= 5)
            assert warnings() == 1
            store.down.clear()
            wait_until(lambda: indexer.lag() == 0)
            failed_before = store.failed_calls  # may be past 5: the outage went on while the test looked
            store.down.set()
            append(journal, 1, session="t")
            indexer.notify()
            wait_until(lambda: store.failed_calls >= failed_before + 2)  # the first one's warning is written
            assert warnings() == 2  # the same error after a success is news again
        finally:
            store.down.clear()
            indexer.stop()


class PoisonedStore(InMemoryStore):
    """An InMemoryStore that fails on every write holding one given event id (and only then)."""

    def __init__(self, poison: str) -> None:
        super().__init__()
        self.poison = poison
        self.failed_calls = 0

    def record_events(self, events: Sequence[Event]) -> None:
        if any(e.id == self.poison for e in events):
            self.failed_calls += 1
            raise RuntimeError("Error in compaction")
        super().record_events(events)


def flood_note(journal: Journal, session: str = "s") -> Event:
    """A note with 10,000 distinct tags (once, one such note broke embedded Chroma for good)."""
    draft = EventDraft(type="note", text="flood", tags=[f"t{i}" for i in range(10_000)])
    return journal.append(SessionRef(session_id=session), draft)


def test_an_event_over_an_index_limit_is_set_aside_at_once_with_its_reason(journal: Journal) -> None:
    append(journal, 3)
    flood = flood_note(journal)
    append(journal, 3, session="after")
    store = FlakyStore()
    indexer = Indexer(journal, store, batch_size=4)
    assert indexer.catch_up(timeout_s=5) == 7
    assert store.count() == 6 and flood.id not in store.writes and indexer.lag() == 0
    [entry] = journal.set_aside_events()
    assert entry["event_id"] == flood.id and "10000 tags" in entry["reason"]
    assert indexer.set_aside_count() == 1


def test_an_event_the_store_keeps_failing_on_is_set_aside_and_the_rest_goes_on(journal: Journal) -> None:
    events = append(journal, 6)
    store = PoisonedStore(events[2].id)
    indexer = Indexer(journal, store, batch_size=4, poll_interval_s=0.01, max_backoff_s=0.01, isolate_after=2)
    indexer.start()
    try:
        indexer.notify()
        wait_until(lambda: indexer.lag() == 0)
    finally:
        indexer.stop()
    assert store.count() == 5 and store.failed_calls == 2 + 2  # the batch twice, then the event alone twice
    [entry] = journal.set_aside_events()
    assert entry["event_id"] == events[2].id and "Error in compaction" in entry["reason"]


class OutageDuringThePass(InMemoryStore):
    """Fails the store calls whose numbers (from 1) are in ``down``: an outage that comes and goes."""

    def __init__(self, down: set[int]) -> None:
        super().__init__()
        self.down = down
        self.calls = 0

    def record_events(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.calls in self.down:
            raise ConnectionError("index unavailable")
        super().record_events(events)


def test_an_outage_that_begins_during_the_one_by_one_pass_sets_nothing_aside(journal: Journal) -> None:
    append(journal, 4)
    # the batch fails twice; alone, two events go in, then the outage is back for the other two, their
    # second try and the check that the store still takes what it took; after that it is over
    store = OutageDuringThePass(down={1, 2, 5, 6, 7, 8, 9})
    indexer = Indexer(journal, store, batch_size=4, poll_interval_s=0.01, max_backoff_s=0.01, isolate_after=2)
    indexer.start()
    try:
        indexer.notify()
        wait_until(lambda: indexer.lag() == 0)
    finally:
        indexer.stop()
    assert store.count() == 4
    assert journal.set_aside_events() == []


def test_reindex_sets_aside_what_the_index_refuses_and_rebuilds_the_rest(journal: Journal) -> None:
    append(journal, 4)
    flood = flood_note(journal)
    poisoned = append(journal, 1, session="p")[0]
    store = PoisonedStore(poisoned.id)
    assert Indexer(journal, store, batch_size=3).reindex() == 6
    assert store.count() == 4
    assert {e["event_id"] for e in journal.set_aside_events()} == {flood.id, poisoned.id}
    store.poison = "nothing"
    indexer = Indexer(journal, store)
    assert indexer.reindex() == 6 and store.count() == 5  # a reindex tries them all again
    assert [e["event_id"] for e in journal.set_aside_events()] == [flood.id]
