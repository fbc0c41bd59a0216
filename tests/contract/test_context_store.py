"""The ContextStore contract: the same behaviour from every implementation (see conftest)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hydra_sandbox.chroma_store import ChromaStore, build_where, flatten_metadata
from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.errors import StoreError, UnindexableEventError
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.limits import MAX_INDEX_TAGS
from hydra_sandbox.store import ContextStore, SearchFilters, hit_metadata

T0 = datetime(2026, 1, 10, 12, 0, 0, 123456, tzinfo=UTC)


def make(session: str, counter: int, text: str, type_: str = "command", **kw: object) -> Event:
    ref_keys = {k: kw.pop(k) for k in ("profile_id", "parent_session_id", "relationship") if k in kw}
    ref = SessionRef(session_id=session, **ref_keys)  # type: ignore[arg-type]
    kw.setdefault("timestamp", T0 + timedelta(hours=counter))
    return Event.from_draft(EventDraft(type=type_, text=text, **kw), ref, counter)  # type: ignore[arg-type]


CORPUS = [
    make(
        "alpha",
        0,
        "docker build failed: apt could not fetch packages",
        tags=["build", "docker"],
        profile_id="builder",
        data={"exit_code": 100},
        related_files=["Dockerfile"],
    ),
    make(
        "alpha",
        1,
        "pytest passed: 42 tests in the payments module",
        "test",
        tags=["test"],
        profile_id="builder",
    ),
    make("alpha", 2, "decided to pin numpy below version two", "decision", tags=["deps"], profile_id="builder"),
    make(
        "beta",
        0,
        "refactored the login form validation",
        "diff",
        tags=["build", "ui"],
        profile_id="frontend",
        parent_session_id="alpha",
        relationship="child",
    ),
    make(
        "beta",
        1,
        "login form refactor finished and reviewed",
        "summary",
        profile_id="frontend",
        parent_session_id="alpha",
    ),
]


@pytest.fixture
def filled(context_store: ContextStore) -> ContextStore:
    context_store.record_events(CORPUS)
    return context_store


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.id for h in hits]


def test_query_by_session_returns_events_and_summary_in_counter_order(filled: ContextStore) -> None:
    hits = filled.query_by_session("beta")
    assert ids(hits) == ["beta:0", "beta:1"]
    assert [h.type for h in hits] == ["diff", "summary"]
    assert ids(filled.query_by_session("alpha", limit=2)) == ["alpha:0", "alpha:1"]
    assert filled.query_by_session("nobody") == []


def test_hits_carry_text_and_metadata_that_round_trip(filled: ContextStore) -> None:
    by_id = {h.id: h for h in filled.query_by_session("alpha") + filled.query_by_session("beta")}
    for event in CORPUS:
        hit = by_id[event.id]
        assert (hit.session_id, hit.type, hit.text) == (event.session_id, event.type, event.text)
        assert hit.metadata == hit_metadata(event)


def test_recording_the_same_id_again_updates_instead_of_duplicating(filled: ContextStore) -> None:
    before = filled.count()
    changed = CORPUS[1].model_copy(update={"text": "pytest failed: 3 tests in the payments module"})
    filled.record_events([changed, changed])
    filled.record_event(changed)
    assert filled.count() == before == len(CORPUS)
    assert filled.query_by_session("alpha")[1].text == changed.text


def test_semantic_search_finds_the_relevant_event_first(filled: ContextStore) -> None:
    hits = filled.semantic_search("docker build failed while fetching apt packages", limit=3)
    assert hits[0].id == "alpha:0"
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert len(hits) == 3


def test_semantic_search_merges_summaries_and_events(filled: ContextStore) -> None:
    hits = filled.semantic_search("login form refactor", limit=5)
    assert {"beta:0", "beta:1"} <= set(ids(hits[:2]))
    assert len(filled.semantic_search("anything", limit=100)) == len(CORPUS)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (SearchFilters(session_id="beta"), {"beta:0", "beta:1"}),
        (SearchFilters(profile_id="builder"), {"alpha:0", "alpha:1", "alpha:2"}),
        (SearchFilters(event_type="decision"), {"alpha:2"}),
        (SearchFilters(event_type="summary"), {"beta:1"}),
        (SearchFilters(tags=["build"]), {"alpha:0", "beta:0"}),
        (SearchFilters(tags=["build", "docker"]), {"alpha:0"}),
        (SearchFilters(tags=["build", "missing"]), set()),
        (SearchFilters(parent_session_id="alpha"), {"beta:0", "beta:1"}),
        (SearchFilters(since=T0 + timedelta(minutes=30)), {"alpha:1", "alpha:2", "beta:1"}),
        (SearchFilters(until=T0 + timedelta(minutes=30)), {"alpha:0", "beta:0"}),
        (SearchFilters(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=1)), {"alpha:1", "beta:1"}),
        (SearchFilters(session_id="alpha", tags=["test"], event_type="test"), {"alpha:1"}),
    ],
)
def test_filters_restrict_semantic_search(filled: ContextStore, filters: SearchFilters, expected: set[str]) -> None:
    assert set(ids(filled.semantic_search("build test login", filters=filters, limit=50))) == expected


def test_finalize_session_stores_a_searchable_summary(context_store: ContextStore) -> None:
    summary = make("gamma", 3, "gamma session summary: migrated the database schema", "summary")
    context_store.finalize_session("gamma", summary)
    hits = context_store.semantic_search("database schema migration summary", limit=1)
    assert ids(hits) == ["gamma:3"] and hits[0].type == "summary"


def test_finalize_session_refuses_an_event_that_is_not_its_summary(context_store: ContextStore) -> None:
    with pytest.raises(StoreError, match="summary"):
        context_store.finalize_session("gamma", make("gamma", 0, "just a note", "note"))
    with pytest.raises(StoreError, match="gamma"):
        context_store.finalize_session("gamma", make("delta", 0, "other session", "summary"))


def test_delete_removes_events_and_summaries(filled: ContextStore) -> None:
    filled.delete(["alpha:0", "beta:1", "never-existed:0"])
    assert filled.count() == len(CORPUS) - 2
    assert ids(filled.query_by_session("beta")) == ["beta:0"]
    assert "alpha:0" not in ids(filled.semantic_search("docker build failed", limit=10))
    filled.delete([])


def test_reset_empties_the_store_and_it_stays_usable(filled: ContextStore) -> None:
    filled.reset()
    assert filled.count() == 0 and filled.semantic_search("docker") == []
    filled.record_event(CORPUS[0])
    assert ids(filled.semantic_search("docker")) == ["alpha:0"]


def test_empty_and_long_texts_are_stored_in_full(context_store: ContextStore) -> None:
    long_text = "step output line\n" * 2000 + "ERROR: disk quota exceeded"
    context_store.record_events([make("long", 0, ""), make("long", 1, long_text)])
    hits = context_store.query_by_session("long")
    assert [h.text for h in hits] == ["", long_text]


def test_a_second_opener_of_an_embedded_chroma_directory_gets_a_clear_error(
    tmp_path: Path, embedding: MiniLMEmbedding
) -> None:
    first = ChromaStore.embedded(tmp_path / "chroma", embedding)
    try:
        with pytest.raises(StoreError) as info:
            ChromaStore.embedded(tmp_path / "chroma", embedding)
        message = str(info.value)
        assert str(tmp_path / "chroma") in message and f"process {os.getpid()}" in message
        assert "HYDRA_CHROMA_URL" in message
    finally:
        first.close()
    ChromaStore.embedded(tmp_path / "chroma", embedding).close()  # free again once closed


def test_where_clause_encodes_every_filter_for_chroma() -> None:
    since = T0 - timedelta(days=1)
    where = build_where(SearchFilters(session_id="s", tags=["a", "b"], since=since))
    assert where == {
        "$and": [
            {"session_id": "s"},
            {"$or": [{"tags": {"$contains": "a"}}, {"tag:a": True}]},
            {"$or": [{"tags": {"$contains": "b"}}, {"tag:b": True}]},
            {"ts": {"$gte": since.timestamp()}},
        ]
    }
    assert build_where(SearchFilters(event_type="note")) == {"type": "note"}
    assert build_where(SearchFilters()) is None and build_where(None) is None


def test_an_event_with_ten_thousand_tags_is_refused_and_the_store_keeps_working(context_store: ContextStore) -> None:
    # about 10,000 distinct tags in one event once broke embedded Chroma for good ("Error in compaction")
    flood = make("flood", 1, "a note with very many tags", "note", tags=[f"t{i}" for i in range(10_000)])
    with pytest.raises(UnindexableEventError) as info:
        context_store.record_events([make("flood", 0, "a fine note", "note"), flood])
    assert info.value.event_id == "flood:1" and "10000 tags" in str(info.value)
    assert context_store.query_by_session("flood") == []  # nothing of the refused batch was written
    context_store.record_events(CORPUS)
    assert ids(context_store.semantic_search("docker build", SearchFilters(tags=["docker"]))) == ["alpha:0"]


def test_an_event_with_as_many_tags_as_the_index_takes_is_found_by_any_of_them(context_store: ContextStore) -> None:
    many = make("many", 0, "tagged to the limit", "note", tags=[f"label-{i}" for i in range(MAX_INDEX_TAGS)])
    context_store.record_events([many, *CORPUS])
    last = f"label-{MAX_INDEX_TAGS - 1}"
    assert ids(context_store.semantic_search("tagged", SearchFilters(tags=["label-0", last]))) == ["many:0"]
    assert context_store.query_by_session("many")[0].metadata["tags"] == many.tags


def test_chroma_keeps_all_tags_of_an_event_in_one_metadata_field() -> None:
    meta = flatten_metadata(CORPUS[0])
    assert meta["tags"] == ["build", "docker"]
    assert [key for key in meta if key.startswith("tag")] == ["tags"]
    assert "tags" not in flatten_metadata(CORPUS[4])  # Chroma refuses empty arrays


def test_an_index_written_with_one_key_per_tag_still_answers_tag_filters(
    tmp_path: Path, embedding: MiniLMEmbedding
) -> None:
    store = ChromaStore.embedded(tmp_path / "chroma", embedding)
    try:
        store.record_events(CORPUS)
        events_col, _ = store._collections()
        legacy = {"session_id": "old", "type": "note", "counter": 0, "ts": T0.timestamp(), "tags": '["legacy"]'}
        legacy["tag:legacy"] = True
        events_col.upsert(
            ids=["old:0"], documents=["an old note"], metadatas=[legacy], embeddings=embedding.embed(["an old note"])
        )
        hits = store.semantic_search("old note", SearchFilters(tags=["legacy"]))
        assert ids(hits) == ["old:0"] and hits[0].metadata["tags"] == ["legacy"]
    finally:
        store.close()


def test_reindex_over_a_journal_with_a_ten_thousand_tag_note_leaves_embedded_chroma_writable(
    tmp_path: Path, embedding: MiniLMEmbedding
) -> None:
    from hydra_sandbox.indexer import Indexer
    from hydra_sandbox.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite3")
    store = ChromaStore.embedded(tmp_path / "chroma", embedding)
    try:
        ref = SessionRef(session_id="s")
        journal.append(ref, EventDraft(type="note", text="before the flood"))
        flood = journal.append(ref, EventDraft(type="note", text="flood", tags=[f"t{i}" for i in range(10_000)]))
        journal.append(ref, EventDraft(type="note", text="after the flood", tags=["calm"]))
        indexer = Indexer(journal, store)
        assert indexer.reindex() == 3 and indexer.set_aside_count() == 1
        journal.append(ref, EventDraft(type="note", text="much later", tags=["calm"]))
        assert indexer.catch_up(timeout_s=30) == 1
        hits = store.semantic_search("note", SearchFilters(tags=["calm"]))
        assert sorted(ids(hits)) == ["s:2", "s:3"] and flood.id not in ids(store.query_by_session("s"))
    finally:
        store.close()
        journal.close()
