"""Graph filters over the delegation tree, the same from every ContextStore (see conftest): root,
subtree, parent, profile, status, depth, event type and time range; and the session state index
documents carry (status kept current on summaries, checklist counts) as the indexer writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.indexer import Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.store import ContextStore, SearchFilters

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)

#   root (coder, depth 0) ── rev (code_reviewer, depth 1, failed) ── fix (coder, depth 2, completed)
#   other (code_reviewer, depth 0, completed)
TREE = {
    "root": ("coder", None, "root", 0),
    "rev": ("code_reviewer", "root", "root", 1),
    "fix": ("coder", "rev", "root", 2),
    "other": ("code_reviewer", None, "other", 0),
}
STATUS = {"root": "running", "rev": "failed", "fix": "completed", "other": "completed"}


def ref(session: str) -> SessionRef:
    profile, parent, root, depth = TREE[session]
    return SessionRef(
        session_id=session, profile_id=profile, parent_session_id=parent, root_session_id=root, depth=depth
    )


def make(session: str, counter: int, text: str, type_: str = "command", hours: int = 0, **kw: object) -> Event:
    draft = EventDraft(type=type_, text=text, timestamp=T0 + timedelta(hours=hours), **kw)  # type: ignore[arg-type]
    event = Event.from_draft(draft, ref(session), counter)
    return event.model_copy(update={"session_status": STATUS[session]})


def checklist(done: int, total: int) -> dict[str, object]:
    items = [{"id": f"i{n}", "description": "d", "rule": "test_passed", "done": n < done} for n in range(total)]
    return {"checklist": {"items": items}, "final": True}


CORPUS = [
    make("root", 0, "coder started on the payment retry bug", hours=0),
    make("rev", 0, "reviewer ran pytest: 2 failed", "test", hours=24),
    make("rev", 1, "review summary: tests failed, changes requested", "summary", hours=25, data=checklist(0, 2)),
    make("fix", 0, "fixed the retry loop in payments.py", "diff", hours=48),
    make("fix", 1, "fix summary: retry loop fixed, tests pass", "summary", hours=49, data=checklist(2, 2)),
    make("other", 0, "other review summary: approved", "summary", hours=72, data=checklist(1, 1)),
]


@pytest.fixture
def tree(context_store: ContextStore) -> ContextStore:
    context_store.record_events(CORPUS)
    return context_store


def found(store: ContextStore, filters: SearchFilters) -> set[str]:
    return {h.id for h in store.semantic_search("review tests payments retry summary", filters=filters, limit=50)}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (SearchFilters(root_session_id="root"), {"root:0", "rev:0", "rev:1", "fix:0", "fix:1"}),
        (SearchFilters(session_ids=["rev", "fix"]), {"rev:0", "rev:1", "fix:0", "fix:1"}),
        (SearchFilters(session_ids=[]), set()),
        (SearchFilters(parent_session_id="rev"), {"fix:0", "fix:1"}),
        (SearchFilters(profile_id="code_reviewer", session_status="failed"), {"rev:0", "rev:1"}),
        (
            SearchFilters(profile_id="code_reviewer", session_status="failed", event_type="summary"),
            {"rev:1"},
        ),
        (SearchFilters(depth=0), {"root:0", "other:0"}),
        (SearchFilters(root_session_id="root", depth=2), {"fix:0", "fix:1"}),
        (SearchFilters(session_status="completed", event_type="summary"), {"fix:1", "other:0"}),
        (SearchFilters(root_session_id="root", since=T0 + timedelta(hours=30)), {"fix:0", "fix:1"}),
        (
            SearchFilters(event_type="summary", since=T0 + timedelta(hours=20), until=T0 + timedelta(hours=50)),
            {"rev:1", "fix:1"},
        ),
        (SearchFilters(root_session_id="nobody"), set()),
    ],
)
def test_graph_filters_restrict_search(tree: ContextStore, filters: SearchFilters, expected: set[str]) -> None:
    assert found(tree, filters) == expected


def test_documents_carry_the_session_state_and_summaries_their_checklist(tree: ContextStore) -> None:
    hits = {h.id: h for h in tree.query_by_session("fix")}
    diff, summary = hits["fix:0"], hits["fix:1"]
    for hit in (diff, summary):
        assert hit.metadata["root_session_id"] == "root" and hit.metadata["parent_session_id"] == "rev"
        assert hit.metadata["depth"] == 2 and hit.metadata["session_status"] == "completed"
        assert hit.metadata["profile_id"] == "coder"
    assert "checklist_done" not in diff.metadata
    assert summary.metadata["checklist_done"] == 2 and summary.metadata["checklist_total"] == 2
    assert summary.metadata["checklist_complete"] is True
    review = tree.query_by_session("rev")[-1]
    assert review.metadata["checklist_complete"] is False and review.metadata["checklist_done"] == 0


def test_a_status_change_updates_the_sessions_summary_document(context_store: ContextStore, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    me = SessionRef(session_id="s1", profile_id="code_reviewer", root_session_id="s1", depth=0)

    def status(before: str, after: str) -> EventDraft:
        return EventDraft(type="status", text=f"status {before} -> {after}", data={"from": before, "to": after})

    journal.append(me, status("queued", "running"))
    journal.append(me, EventDraft(type="command", text="pytest -q"))
    journal.append(me, EventDraft(type="summary", text="reviewer summary: 1 test failed", data=checklist(0, 1)))
    indexer = Indexer(journal, context_store)
    indexer.catch_up(timeout_s=60)
    by_status = SearchFilters(event_type="summary", session_status="failed")
    assert found(context_store, by_status) == set()
    assert found(context_store, SearchFilters(session_status="running")) == {"s1:0", "s1:1", "s1:2"}
    journal.append(me, status("running", "failed"))
    indexer.catch_up(timeout_s=60)
    assert found(context_store, by_status) == {"s1:2"}
    assert found(context_store, SearchFilters(session_status="failed")) == {"s1:2", "s1:3"}
    # a rebuild from the journal alone gives the same documents
    Indexer(journal, context_store).reindex()
    assert found(context_store, by_status) == {"s1:2"}
    journal.close()
