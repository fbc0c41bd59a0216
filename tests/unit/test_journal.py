from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.journal import Journal


def test_counters_are_gapless_per_session_under_concurrent_appends(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    refs = [SessionRef(session_id=f"s{i}") for i in range(3)]

    def writer(ref: SessionRef) -> None:
        for n in range(100):
            journal.append(ref, EventDraft(type="note", text=f"{ref.session_id} {n}"))

    threads = [threading.Thread(target=writer, args=(ref,)) for ref in refs for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ref in refs:
        events = journal.events(ref.session_id)
        assert [e.counter for e in events] == list(range(300))
        assert events[5].id == f"{ref.session_id}:5"


def test_events_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.append_many(SessionRef(session_id="s"), [EventDraft(type="note", text=str(i)) for i in range(5)])
    journal.close()
    again = Journal(path)
    assert [e.text for e in again.events("s")] == ["0", "1", "2", "3", "4"]
    assert again.append(SessionRef(session_id="s"), EventDraft(type="note", text="5")).counter == 5


def test_recording_the_same_id_twice_is_idempotent(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    event = journal.append(SessionRef(session_id="s"), EventDraft(type="note", text="x"))
    other = Journal(tmp_path / "k.sqlite3")
    assert other.record(event) is True
    assert other.record(event) is False
    assert other.count() == 1


def test_since_and_limit_select_a_window(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.append_many(SessionRef(session_id="s"), [EventDraft(type="note", text=str(i)) for i in range(10)])
    assert [e.counter for e in journal.events("s", since=4, limit=3)] == [4, 5, 6]
    assert journal.last_counter("s") == 9 and journal.last_counter("nope") is None


def test_read_after_walks_the_journal_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    for sid in ("a", "b", "a"):
        journal.append(SessionRef(session_id=sid), EventDraft(type="note", text=sid))
    rows = journal.read_after(0, 10)
    assert [e.id for _, e in rows] == ["a:0", "b:0", "a:1"]
    assert journal.read_after(rows[1][0], 10)[0][1].id == "a:1"


def test_sessions_are_saved_and_queried(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.save_session("s1", status="running", profile_id="default", parent_session_id=None, data={"x": 1})
    journal.save_session("s2", status="completed", profile_id="code_reviewer", parent_session_id="s1", data={})
    journal.save_session("s1", status="completed", profile_id="default", parent_session_id=None, data={"x": 2})
    assert journal.load_session("s1") == {"x": 2}
    assert len(journal.query_sessions(status="completed")) == 2
    assert journal.query_sessions(parent_session_id="s1") == [{}]


def test_prune_deletes_only_old_events(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    old = datetime.now(UTC) - timedelta(days=40)
    journal.append(SessionRef(session_id="s"), EventDraft(type="note", text="old", timestamp=old))
    journal.append(SessionRef(session_id="s"), EventDraft(type="note", text="new"))
    assert journal.delete_before(datetime.now(UTC) - timedelta(days=30)) == ["s:0"]
    assert [e.text for e in journal.events("s")] == ["new"]
    assert isinstance(journal.events("s")[0], Event)
