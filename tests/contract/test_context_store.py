"""The same contract over every ContextStore: in memory, embedded Chroma (and a Chroma server, in the
docker suite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.settings import load_settings
from hydra_sandbox.store import ContextStore, InMemoryStore, SearchFilters

MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"


def embedded_chroma(tmp_path: Path) -> ContextStore:
    from hydra_sandbox.chroma_store import ChromaStore

    return ChromaStore.from_settings(load_settings(data_home=tmp_path, embedding_model_dir=MODEL_DIR))


@pytest.fixture(params=["memory", "embedded-chroma"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContextStore]:
    yield InMemoryStore() if request.param == "memory" else embedded_chroma(tmp_path)


def events() -> list[Event]:
    old = datetime.now(UTC) - timedelta(days=10)
    drafts = [
        ("s1", "command", "ran pytest and all tests passed", ["ci"], None),
        ("s1", "message", "refactored the database connection pool", [], None),
        ("s2", "decision", "decided to migrate the users table to postgres", ["db", "decision"], old),
        ("s2", "summary", "session summary: database migration finished", [], None),
    ]
    out = []
    for i, (session, kind, text, tags, ts) in enumerate(drafts):
        draft = EventDraft(type=kind, text=text, tags=tags, **({"timestamp": ts} if ts else {}))
        ref = SessionRef(
            session_id=session,
            profile_id="data_migration" if session == "s2" else "default",
            parent_session_id="s1" if session == "s2" else None,
        )
        out.append(Event.from_draft(draft, ref, i))
    return out


def test_upsert_is_idempotent(store: ContextStore) -> None:
    store.record_events(events())
    store.record_events(events())
    assert store.count() == 4


def test_query_by_session_returns_only_that_session(store: ContextStore) -> None:
    store.record_events(events())
    assert {h.session_id for h in store.query_by_session("s2")} == {"s2"}
    assert len(store.query_by_session("s1")) == 2


def test_search_finds_by_meaning_and_filters(store: ContextStore) -> None:
    store.record_events(events())
    hits = store.semantic_search("database migration postgres", limit=3)
    assert hits and hits[0].session_id == "s2"
    only_s1 = store.semantic_search("database", SearchFilters(session_id="s1"))
    assert only_s1 and {h.session_id for h in only_s1} == {"s1"}
    by_type = store.semantic_search("database", SearchFilters(event_type="decision"))
    assert [h.type for h in by_type] == ["decision"]
    by_tag = store.semantic_search("tests", SearchFilters(tags=["ci"]))
    assert [h.id for h in by_tag] == ["s1:0"]
    recent = store.semantic_search("database", SearchFilters(since=datetime.now(UTC) - timedelta(days=1)))
    assert "s2:2" not in {h.id for h in recent}
    children = store.semantic_search("database", SearchFilters(parent_session_id="s1"))
    assert children and {h.session_id for h in children} == {"s2"}
    assert [h.type for h in store.semantic_search("summary", SearchFilters(event_type="summary"))] == ["summary"]


def test_delete_and_reset(store: ContextStore) -> None:
    store.record_events(events())
    store.delete(["s1:0"])
    assert store.count() == 3
    store.reset()
    assert store.count() == 0


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    from hydra_sandbox.chroma_store import ChromaStore
    from hydra_sandbox.errors import EmbeddingModelMissingError

    store = ChromaStore.from_settings(load_settings(data_home=tmp_path, embedding_model_dir=tmp_path / "nope"))
    with pytest.raises(EmbeddingModelMissingError) as info:
        store.semantic_search("x")
    assert str(tmp_path / "nope") in str(info.value) and "HYDRA_EMBEDDING_MODEL_DIR" in str(info.value)
