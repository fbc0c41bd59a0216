"""The ContextStore on Chroma: embedded (``PersistentClient``) by default, or a Chroma server
(``HttpClient``) when ``HYDRA_CHROMA_URL`` is set. Hydra computes the embeddings itself
(:mod:`hydra_sandbox.embeddings`), so Chroma never tries to download a model.

Metadata values are scalars: tags are stored both as ``"|a|b|"`` and as one boolean key per tag
(``tag:a``) so that filters can ask for a tag; times are epoch seconds for range filters.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from hydra_sandbox.embeddings import MiniLMEmbedder
from hydra_sandbox.errors import StoreError
from hydra_sandbox.events import Event
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import SearchFilters, SearchHit

EVENTS = "hydra_events"
SUMMARIES = "hydra_summaries"
MAX_DOCUMENT = 32_000


def _tag_key(tag: str) -> str:
    return "tag:" + re.sub(r"[^A-Za-z0-9_.-]", "_", tag)[:60]


def event_metadata(event: Event) -> dict[str, str | int | float | bool]:
    meta: dict[str, str | int | float | bool] = {
        "session_id": event.session_id,
        "counter": event.counter,
        "type": event.type,
        "profile_id": event.profile_id or "",
        "parent_session_id": event.parent_session_id or "",
        "relationship": event.relationship or "",
        "ts": event.timestamp.timestamp(),
        "timestamp": event.timestamp.isoformat(),
        "tags": "|" + "|".join(event.tags) + "|" if event.tags else "",
        "related_files": "|".join(event.related_files)[:2000],
    }
    for tag in event.tags:
        meta[_tag_key(tag)] = True
    return meta


def where_clause(filters: SearchFilters | None) -> dict[str, Any] | None:
    if filters is None:
        return None
    conditions: list[dict[str, Any]] = []
    for key in ("session_id", "profile_id", "parent_session_id"):
        value = getattr(filters, key)
        if value is not None:
            conditions.append({key: value})
    if filters.event_type is not None:
        conditions.append({"type": filters.event_type})
    conditions += [{_tag_key(tag): True} for tag in filters.tags]
    if filters.since is not None:
        conditions.append({"ts": {"$gte": filters.since.timestamp()}})
    if filters.until is not None:
        conditions.append({"ts": {"$lte": filters.until.timestamp()}})
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


class ChromaStore:
    def __init__(self, client: Any, embedder: MiniLMEmbedder) -> None:
        self.client = client
        self.embedder = embedder
        try:
            self.events = client.get_or_create_collection(
                EVENTS, metadata={"hnsw:space": "cosine"}, embedding_function=None
            )
            self.summaries = client.get_or_create_collection(
                SUMMARIES, metadata={"hnsw:space": "cosine"}, embedding_function=None
            )
        except Exception as exc:
            raise StoreError(
                f"cannot open the Chroma collections: {exc}",
                hint="check HYDRA_CHROMA_URL or the embedded store's directory",
            ) from None

    @classmethod
    def from_settings(cls, settings: HydraSettings) -> ChromaStore:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if settings.chroma_url:
                parts = urlsplit(settings.chroma_url)
                client = chromadb.HttpClient(
                    host=parts.hostname or "127.0.0.1",
                    port=parts.port or 8000,
                    ssl=parts.scheme == "https",
                    settings=chroma_settings,
                )
            else:
                path = settings.effective_chroma_path
                path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
        except Exception as exc:
            where = settings.chroma_url or settings.effective_chroma_path
            raise StoreError(
                f"cannot open Chroma at {where}: {exc}",
                hint="start the Chroma server, or unset HYDRA_CHROMA_URL for the embedded store",
            ) from None
        return cls(client, MiniLMEmbedder(settings.embedding_model_dir))

    def _upsert(self, collection: Any, events: Sequence[Event]) -> None:
        if not events:
            return
        unique = {e.id: e for e in events}
        batch = list(unique.values())
        vectors = self.embedder.embed([e.text for e in batch])
        collection.upsert(
            ids=[e.id for e in batch],
            embeddings=vectors.tolist(),
            documents=[e.text[:MAX_DOCUMENT] for e in batch],
            metadatas=[event_metadata(e) for e in batch],
        )

    def record_events(self, events: Sequence[Event]) -> None:
        self._upsert(self.events, [e for e in events if e.type != "summary"])
        self._upsert(self.summaries, [e for e in events if e.type == "summary"])

    def record_event(self, event: Event) -> None:
        self.record_events([event])

    def finalize_session(self, session_id: str, summary: Event) -> None:
        self._upsert(self.summaries, [summary])

    @staticmethod
    def _hits(result: dict[str, Any]) -> list[SearchHit]:
        hits = []
        ids = result.get("ids") or [[]]
        for i, event_id in enumerate(ids[0]):
            meta = result["metadatas"][0][i] or {}
            distance = result["distances"][0][i] if result.get("distances") else 0.0
            hits.append(
                SearchHit(
                    id=event_id,
                    session_id=str(meta.get("session_id", "")),
                    type=str(meta.get("type", "")),
                    text=result["documents"][0][i] or "",
                    distance=float(distance),
                    metadata=dict(meta),
                )
            )
        return hits

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]:
        hits: list[SearchHit] = []
        for collection in (self.events, self.summaries):
            got = collection.get(where={"session_id": session_id}, limit=limit, include=["documents", "metadatas"])
            for event_id, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=False):
                hits.append(
                    SearchHit(
                        id=event_id,
                        session_id=session_id,
                        type=str(meta.get("type", "")),
                        text=doc or "",
                        distance=0.0,
                        metadata=dict(meta),
                    )
                )
        hits.sort(key=lambda h: int(h.metadata.get("counter", 0)))
        return hits[:limit]

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]:
        vector = self.embedder.embed([query])[0].tolist()
        where = where_clause(filters)
        hits: list[SearchHit] = []
        for collection in (self.events, self.summaries):
            if (
                filters is not None
                and filters.event_type is not None
                and ((collection is self.summaries) != (filters.event_type == "summary"))
            ):
                continue
            result = collection.query(
                query_embeddings=[vector], n_results=limit, where=where, include=["documents", "metadatas", "distances"]
            )
            hits += self._hits(result)
        hits.sort(key=lambda h: h.distance)
        return hits[:limit]

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.events.delete(ids=list(ids))
            self.summaries.delete(ids=list(ids))

    def count(self) -> int:
        return int(self.events.count()) + int(self.summaries.count())

    def reset(self) -> None:
        for name in (EVENTS, SUMMARIES):
            with contextlib.suppress(Exception):
                self.client.delete_collection(name)
        self.events = self.client.get_or_create_collection(
            EVENTS, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        self.summaries = self.client.get_or_create_collection(
            SUMMARIES, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
