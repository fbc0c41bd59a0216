"""The journal: gapless counters, idempotent import, durability, sessions, clear errors."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.journal import Journal


def draft(text: str = "ran tests", **kw: object) -> EventDraft:
    return EventDraft(type="command", text=text, **kw)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite3")
    yield j
    j.close()


def test_counters_start_at_zero_and_ids_follow_session_and_counter(journal: Journal) -> None:
    ref = SessionRef(session_id="s1", profile_id="dev")
    first, second = journal.append(ref, draft("a")), journal.append(ref, draft("b"))
    other = journal.append(SessionRef(session_id="s2"), draft("c"))
    assert (first.id, first.counter, first.profile_id) == ("s1:0", 0, "dev")
    assert (second.id, other.id) == ("s1:1", "s2:0")
    assert journal.last_counter("s1") == 1 and journal.last_counter("nobody") is None


def test_concurrent_appends_from_threads_give_gapless_unique_counters(journal: Journal) -> None:
    ref = SessionRef(session_id="busy")
    threads_n, per_thread = 8, 40
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        barrier.wait()
        try:
            for i in range(per_thread):
                if i % 4 == 0:
                    journal.append_many(ref, [draft(f"{n}-{i}-a"), draft(f"{n}-{i}-b")])
                else:
                    journal.append(ref, draft(f"{n}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counters = [e.counter for e in journal.events("busy")]
    expected = threads_n * (per_thread + per_thread // 4)
    assert counters == list(range(expected))


def test_group_commit_keeps_each_sessions_counters_gapless_across_sessions(journal: Journal) -> None:
    sessions, per_thread = ["a", "b", "c"], 30
    barrier = threading.Barrier(9)
    results: dict[int, list[Event]] = {}

    def worker(n: int) -> None:
        ref = SessionRef(session_id=sessions[n % 3])
        barrier.wait()
        results[n] = [journal.append(ref, draft(f"{n}-{i}")) for i in range(per_thread)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, session in enumerate(sessions):
        stored = journal.events(session)
        assert [e.counter for e in stored] == list(range(3 * per_thread))
        returned = sorted((e for n in range(index, 9, 3) for e in results[n]), key=lambda e: e.counter)
        assert returned == stored  # every caller got back exactly the events that were committed for it


def test_append_many_gives_consecutive_counters_in_one_transaction(journal: Journal) -> None:
    ref = SessionRef(session_id="s")
    journal.append(ref, draft())
    events = journal.append_many(ref, [draft(str(i)) for i in range(5)])
    assert [e.counter for e in events] == [1, 2, 3, 4, 5]
    assert journal.append_many(ref, []) == []


def test_events_are_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        written = j.append_many(SessionRef(session_id="s"), [draft("one", tags=["x"]), draft("two")])
        j.set_meta("indexer.cursor", "2")
    with Journal(path) as j:
        assert j.events("s") == written
        assert j.get_meta("indexer.cursor") == "2"
        assert j.append(SessionRef(session_id="s"), draft()).counter == 2


def test_record_is_idempotent_by_id(journal: Journal) -> None:
    event = Event.from_draft(draft("imported"), SessionRef(session_id="old"), 7)
    assert journal.record(event) is True
    assert journal.record(event) is False
    assert journal.count() == 1 and journal.events("old") == [event]


def test_events_since_and_limit_filter_by_counter(journal: Journal) -> None:
    ref = SessionRef(session_id="s")
    journal.append_many(ref, [draft(str(i)) for i in range(10)])
    assert [e.counter for e in journal.events("s", since=4, limit=3)] == [4, 5, 6]


def test_read_after_follows_the_global_sequence_and_never_reuses_it(journal: Journal) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    journal.append(SessionRef(session_id="a"), draft("old", timestamp=old))
    journal.append(SessionRef(session_id="b"), draft("new"))
    seqs = [s for s, _ in journal.read_after(0, 10)]
    assert len(seqs) == 2 and seqs[0] < seqs[1]
    assert journal.delete_before(datetime.now(UTC) - timedelta(days=1)) == ["a:0"]
    journal.append(SessionRef(session_id="c"), draft("newer"))
    later = journal.read_after(seqs[1], 10)
    assert [e.id for _, e in later] == ["c:0"] and later[0][0] > seqs[1]
    assert journal.count_after(0) == 2


def test_sessions_upsert_keeps_created_at_and_queries_newest_first(journal: Journal) -> None:
    journal.save_session("s1", status="queued", profile_id="dev", parent_session_id=None, data={"prompt": "p"})
    first = journal.load_session("s1")
    assert first is not None
    journal.save_session("s2", status="running", profile_id="dev", parent_session_id="s1", data={})
    journal.save_session("s1", status="completed", profile_id="dev", parent_session_id=None, data={"x": 1})
    again = journal.load_session("s1")
    assert again is not None
    assert again["status"] == "completed" and again["x"] == 1 and "prompt" not in again
    assert again["created_at"] == first["created_at"] and again["updated_at"] >= first["updated_at"]
    assert [s["session_id"] for s in journal.query_sessions()] == ["s2", "s1"]
    assert [s["session_id"] for s in journal.query_sessions(parent_session_id="s1")] == ["s2"]
    assert [s["session_id"] for s in journal.query_sessions(status="completed", profile_id="dev")] == ["s1"]
    assert journal.load_session("missing") is None


def test_unserialisable_session_data_is_a_store_error_naming_the_session(journal: Journal) -> None:
    with pytest.raises(StoreError, match="session s9"):
        journal.save_session("s9", status="q", profile_id="p", parent_session_id=None, data={"x": object()})


def test_corrupt_journal_file_is_a_store_error_naming_path_and_remedy(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError) as info:
        Journal(path)
    assert str(path) in str(info.value) and "corrupt" in str(info.value) and "hydra import" in str(info.value)


def test_disk_full_is_translated_into_a_store_error_with_a_remedy(journal: Journal) -> None:
    err = journal._translate(sqlite3.OperationalError("database or disk is full"), "append events")
    assert "disk full" in str(err) and str(journal.path) in str(err) and "free space" in str(err)


def test_disk_full_during_append_rolls_back_and_keeps_counters_gapless(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    ref = SessionRef(session_id="s")
    j.append(ref, draft("fits"))
    page_count = j._conn.execute("PRAGMA page_count").fetchone()[0]
    j._conn.execute(f"PRAGMA max_page_count={page_count}")
    with pytest.raises(StoreError, match="disk full"):
        j.append_many(ref, [draft("x" * 20000) for _ in range(20)])
    j._conn.execute("PRAGMA max_page_count=1073741823")
    assert j.append(ref, draft("after")).counter == 1
    j.close()
