"""Export, import, prune and disk usage."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.indexer import Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.maintenance import disk_usage, export_jsonl, import_jsonl, prune
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.settings import HydraSettings, load_settings
from hydra_sandbox.store import InMemoryStore


def catalogs() -> dict[str, Any]:
    settings = load_settings()
    return {"policies": PolicyCatalog(settings.policy_dirs), "profiles": ProfileCatalog(settings.profile_dirs)}


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite3")
    yield j
    j.close()


S1, S2 = "s-000000000001", "s-000000000002"
DEFAULT = {"name": "default"}


def fill(journal: Journal) -> None:
    journal.save_session(S1, status="completed", profile_id="dev", parent_session_id=None, data={"policy": DEFAULT})
    journal.save_session(S2, status="failed", profile_id="dev", parent_session_id=S1, data={"policy": DEFAULT})
    old = datetime.now(UTC) - timedelta(days=40)
    journal.append_many(
        SessionRef(session_id=S1, profile_id="dev"),
        [EventDraft(type="command", text="old run [MASKED]", timestamp=old, tags=["t"]) for _ in range(3)],
    )
    journal.append(SessionRef(session_id=S2, parent_session_id=S1), EventDraft(type="note", text="new"))


def test_export_then_import_into_an_empty_journal_reproduces_it(journal: Journal, tmp_path: Path) -> None:
    fill(journal)
    out = tmp_path / "export.jsonl"
    assert export_jsonl(journal, out) == 4
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds == ["session", "session", "event", "event", "event", "event"]
    with Journal(tmp_path / "other.sqlite3") as other:
        report = import_jsonl(other, out, **catalogs())
        assert (report.events_added, report.sessions_added) == (4, 2)
        assert other.events(S1) == journal.events(S1) and other.events(S2) == journal.events(S2)
        restored, original = other.load_session(S1), journal.load_session(S1)
        assert restored is not None and original is not None
        assert {k: restored[k] for k in ("session_id", "status", "created_at")} == {
            k: original[k] for k in ("session_id", "status", "created_at")
        }


def test_import_is_idempotent(journal: Journal, tmp_path: Path) -> None:
    fill(journal)
    out = tmp_path / "e.jsonl"
    export_jsonl(journal, out)
    report = import_jsonl(journal, out, **catalogs())
    assert (report.events_added, report.events_skipped) == (0, 4)
    assert (report.sessions_added, report.sessions_skipped) == (0, 2)
    assert journal.count() == 4


def test_export_of_one_session_holds_only_that_session(journal: Journal, tmp_path: Path) -> None:
    fill(journal)
    out = tmp_path / "s2.jsonl"
    assert export_jsonl(journal, out, session_id=S2) == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["session", "event"]
    assert lines[1]["event"]["id"] == f"{S2}:0"


def test_invalid_line_names_file_and_line_and_imports_nothing(journal: Journal, tmp_path: Path) -> None:
    fill(journal)
    out = tmp_path / "e.jsonl"
    export_jsonl(journal, out)
    lines = out.read_text().splitlines()
    lines.insert(3, '{"kind": "event", "event": {"id": "x"}}')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with Journal(tmp_path / "fresh.sqlite3") as fresh:
        with pytest.raises(StoreError, match=rf"{bad}:4: not a valid Hydra export line"):
            import_jsonl(fresh, bad, **catalogs())
        assert fresh.count() == 0


def test_prune_removes_old_events_from_journal_and_index(journal: Journal) -> None:
    fill(journal)
    store = InMemoryStore()
    Indexer(journal, store).catch_up(5)
    assert prune(journal, store, older_than=timedelta(days=30)) == 3
    assert journal.count() == 1 and store.count() == 1
    assert [h.id for h in store.query_by_session(S2)] == [f"{S2}:0"]
    assert journal.load_session(S1) is not None


class DownStore(InMemoryStore):
    def delete(self, ids: Sequence[str]) -> None:
        raise ConnectionError("index down")


def test_prune_with_index_down_says_to_reindex(journal: Journal) -> None:
    fill(journal)
    with pytest.raises(StoreError, match="hydra reindex"):
        prune(journal, DownStore(), older_than=timedelta(days=30))
    assert journal.count() == 1


def test_disk_usage_counts_journal_and_warns_over_the_limit(tmp_path: Path) -> None:
    settings = HydraSettings(data_home=tmp_path / "data", disk_warning_bytes=1)
    with Journal(settings.journal_path) as j:
        j.append(SessionRef(session_id="s"), EventDraft(type="note", text="x" * 1000))
        usage = disk_usage(settings)
    assert usage.journal_bytes > 1000 and usage.index_bytes == 0
    assert usage.total_bytes >= usage.journal_bytes and usage.warning
    assert usage.message is not None and "hydra prune" in usage.message
    roomy = disk_usage(HydraSettings(data_home=tmp_path / "data", disk_warning_bytes=10**12))
    assert not roomy.warning and roomy.message is None


def test_disk_usage_of_a_server_index_is_unknown(tmp_path: Path) -> None:
    settings = HydraSettings(data_home=tmp_path / "nothing-yet", chroma_url="http://127.0.0.1:8000")
    usage = disk_usage(settings)
    assert usage.index_bytes is None and usage.total_bytes == 0 and not usage.warning


def test_export_never_writes_through_a_link_planted_at_its_temporary_name(journal: Journal, tmp_path: Path) -> None:
    fill(journal)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "export.jsonl"
    (tmp_path / "export.jsonl.partial").symlink_to(victim)
    assert export_jsonl(journal, out) == 4
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink() and out.stat().st_mode & 0o777 == 0o600
