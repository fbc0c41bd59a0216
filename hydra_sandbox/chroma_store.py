"""ChromaStore: the ContextStore over Chroma, embedded (``PersistentClient``) or a server (``HttpClient``).

Embeddings are always computed here with :class:`~hydra_sandbox.embeddings.MiniLMEmbedding` and handed
to Chroma explicitly (collections are created with ``embedding_function=None``), so Chroma's own
downloading default is never used and a Chroma server needs no model.

Metadata layout (Chroma only takes scalar values):

- ``session_id``, ``type``, ``counter`` and the session state (``profile_id``, ``parent_session_id``,
  ``relationship``, ``root_session_id``, ``depth``, ``session_status``; on summaries ``checklist_done``,
  ``checklist_total``, ``checklist_complete``) as plain keys (absent when unset);
- ``ts``: the event time as a float Unix timestamp, so ``since``/``until`` are numeric range filters
  (``timestamp`` keeps the exact ISO 8601 value for display);
- ``tags``: ONE array field (absent when there are none), so a tag filter is a ``$contains`` clause
  evaluated by Chroma (no post-filtering, limits stay correct). Indexes written before this layout held
  one boolean key per tag (``tag:<name>: True``; about 10,000 of them in one event broke embedded
  Chroma for good); a tag filter also matches that legacy key, so old indexes keep answering, and
  ``hydra reindex`` rewrites them in the new layout;
- ``related_files``, ``related_sessions``, ``data``: JSON strings used to rebuild hits.

Every event is checked against the index limits first (:func:`hydra_sandbox.limits.index_problem`):
a batch holding one the index must not take raises :class:`~hydra_sandbox.errors.UnindexableEventError`
before anything is written, and the indexer sets that event aside.

Only one process may open an embedded Chroma directory (a second opener can hang or corrupt it,
chroma-core/chroma issue 7040); ChromaStore takes an exclusive lock file in the directory and fails
with a clear message instead. Use a Chroma server (``HYDRA_CHROMA_URL``) to share an index.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings as ChromaSettings

from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.errors import HydraError, StoreError
from hydra_sandbox.events import Event, as_utc
from hydra_sandbox.heap_scrub import scrub_heap
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import (
    STATE_KEYS,
    SUMMARY_TYPE,
    SearchFilters,
    SearchHit,
    check_indexable,
    check_summary,
    checklist_counts,
)

EVENTS_COLLECTION = "hydra_events"
SUMMARIES_COLLECTION = "hydra_summaries"
LOCK_FILE = "hydra-chroma.lock"
_PLAIN_KEYS = STATE_KEYS
_CHECKLIST_KEYS = ("checklist_done", "checklist_total", "checklist_complete")


def flatten_metadata(event: Event) -> dict[str, str | int | float | bool | list[str]]:
    """The metadata Chroma stores for ``event`` (see the module docstring)."""
    meta: dict[str, str | int | float | bool | list[str]] = {
        "session_id": event.session_id,
        "type": event.type,
        "counter": event.counter,
        "ts": as_utc(event.timestamp).timestamp(),
        "timestamp": as_utc(event.timestamp).isoformat(),
        "related_files": json.dumps(event.related_files),
        "related_sessions": json.dumps(event.related_sessions),
        "data": json.dumps(event.data, default=str, sort_keys=True),
    }
    for key in _PLAIN_KEYS:
        value = getattr(event, key)
        if value is not None:
            meta[key] = value
    meta.update(checklist_counts(event))
    if event.tags:
        meta["tags"] = list(event.tags)
    return meta


def _tags(value: Any) -> list[str]:
    """The ``tags`` field: an array, or the JSON string of the legacy layout."""
    if isinstance(value, list):
        return [str(t) for t in value]
    return [str(t) for t in json.loads(value)] if isinstance(value, str) else []


def unflatten_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Chroma metadata back to the SearchHit metadata shape of :func:`hydra_sandbox.store.hit_metadata`."""
    out: dict[str, Any] = {
        "counter": int(meta["counter"]),
        "timestamp": meta.get("timestamp") or datetime.fromtimestamp(float(meta["ts"]), UTC).isoformat(),
        "tags": _tags(meta.get("tags")),
        "related_files": json.loads(meta.get("related_files", "[]")),
        "related_sessions": json.loads(meta.get("related_sessions", "[]")),
        "data": json.loads(meta.get("data", "{}")),
    }
    for key in (*_PLAIN_KEYS, *_CHECKLIST_KEYS):
        if meta.get(key) is not None:
            out[key] = meta[key]
    return out


def build_where(filters: SearchFilters | None) -> dict[str, Any] | None:
    """A Chroma ``where`` clause for ``filters`` (None when nothing is filtered)."""
    if filters is None:
        return None
    clauses: list[dict[str, Any]] = []
    for key, value in (
        ("session_id", filters.session_id),
        ("profile_id", filters.profile_id),
        ("type", filters.event_type),
        ("parent_session_id", filters.parent_session_id),
        ("root_session_id", filters.root_session_id),
        ("session_status", filters.session_status),
        ("depth", filters.depth),
    ):
        if value is not None:
            clauses.append({key: value})
    if filters.session_ids is not None:
        clauses.append({"session_id": {"$in": list(filters.session_ids) or [""]}})
    clauses.extend({"$or": [{"tags": {"$contains": tag}}, {f"tag:{tag}": True}]} for tag in filters.tags)
    if filters.since is not None:
        clauses.append({"ts": {"$gte": as_utc(filters.since).timestamp()}})
    if filters.until is not None:
        clauses.append({"ts": {"$lte": as_utc(filters.until).timestamp()}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class ChromaStore:
    """ContextStore over Chroma; build with :meth:`from_settings`, :meth:`embedded` or :meth:`http`."""

    def __init__(
        self,
        client: Any,
        embedding: MiniLMEmbedding,
        *,
        target: str,
        lock: IO[str] | None = None,
    ) -> None:
        self._client = client
        self._embedding = embedding
        self._target = target
        self._lock_file = lock
        self._events: Any = None
        self._summaries: Any = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: HydraSettings) -> ChromaStore:
        embedding = MiniLMEmbedding(settings.embedding_model_dir)
        if settings.chroma_url:
            token = settings.chroma_token.get_secret_value() if settings.chroma_token else None
            return cls.http(settings.chroma_url, embedding, token=token)
        return cls.embedded(settings.effective_chroma_path, embedding)

    @classmethod
    def embedded(cls, path: Path, embedding: MiniLMEmbedding) -> ChromaStore:
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock = (path / LOCK_FILE).open("a+")
        except OSError as exc:
            raise StoreError(
                f"Chroma directory {path} cannot be created or opened ({exc})",
                hint="check permissions, or set HYDRA_CHROMA_PATH to a writable directory",
            ) from exc
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise StoreError(
                f"Chroma directory {path} is already open in {holder}",
                hint="only one process may open an embedded Chroma index; go through the running Hydra "
                "server, read the journal, or run a Chroma server and set HYDRA_CHROMA_URL",
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}\n")
        lock.flush()
        scrub_heap()  # the index files are saved from uninitialised buffers: see heap_scrub
        try:
            client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
        except Exception as exc:
            lock.close()
            raise StoreError(
                f"Chroma directory {path} could not be opened ({type(exc).__name__}: {exc})",
                hint="if it is corrupt, move it aside and run `hydra reindex` to rebuild it from the journal",
            ) from exc
        return cls(client, embedding, target=f"embedded Chroma at {path}", lock=lock)

    @classmethod
    def http(cls, url: str, embedding: MiniLMEmbedding, token: str | None = None) -> ChromaStore:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreError(f"Chroma URL {url!r} is invalid", hint="use http://host:port, e.g. http://127.0.0.1:8000")
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname,
                port=port,
                ssl=parsed.scheme == "https",
                headers={"Authorization": f"Bearer {token}"} if token else None,
                settings=ChromaSettings(anonymized_telemetry=False),
            )
        except Exception as exc:
            raise StoreError(
                f"Chroma server {url} is not reachable ({type(exc).__name__}: {exc})",
                hint="start it (`chroma run --path DIR --port PORT`) or fix HYDRA_CHROMA_URL",
            ) from exc
        return cls(client, embedding, target=f"Chroma server {url}")

    def close(self) -> None:
        """Release the embedded directory lock (the client itself has no close)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        try:
            yield
        except HydraError:
            raise
        except Exception as exc:  # chromadb and httpx raise many unrelated types; all mean "index failed"
            raise StoreError(
                f"{self._target}: failed to {action} ({type(exc).__name__}: {exc})",
                hint="the journal still holds every event; once the index is back Hydra catches up, "
                "or run `hydra reindex`",
            ) from exc

    def _collections(self) -> tuple[Any, Any]:
        if self._events is None or self._summaries is None:
            with self._calling("open collections"):
                config: Any = {"hnsw": {"space": "cosine"}}
                self._events = self._client.get_or_create_collection(
                    EVENTS_COLLECTION, configuration=config, embedding_function=None
                )
                self._summaries = self._client.get_or_create_collection(
                    SUMMARIES_COLLECTION, configuration=config, embedding_function=None
                )
        return self._events, self._summaries

    def _max_batch(self) -> int:
        try:
            return max(1, int(self._client.get_max_batch_size()))
        except Exception:  # older servers lack the endpoint: a conservative batch works everywhere
            return 1000

    @staticmethod
    def _hits(ids: list[str], docs: list[str | None], metas: list[Any], dists: list[float]) -> list[SearchHit]:
        return [
            SearchHit(
                id=i,
                session_id=str(m["session_id"]),
                type=str(m["type"]),
                text=d or "",
                distance=float(dist),
                metadata=unflatten_metadata(dict(m)),
            )
            for i, d, m, dist in zip(ids, docs, metas, dists, strict=True)
        ]

    # -- ContextStore ---------------------------------------------------------------------------

    def record_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        check_indexable(events)
        latest: dict[str, Event] = {e.id: e for e in events}  # Chroma rejects duplicate ids in one call
        events_col, summaries_col = self._collections()
        vectors = self._embedding.embed_excerpts([e.text for e in latest.values()])
        groups: dict[int, list[int]] = {0: [], 1: []}
        items = list(latest.values())
        for index, event in enumerate(items):
            groups[1 if event.type == SUMMARY_TYPE else 0].append(index)
        step = self._max_batch()
        with self._calling(f"upsert {len(items)} events"):
            for which, indexes in groups.items():
                if not indexes:
                    continue
                target, other = (summaries_col, events_col) if which else (events_col, summaries_col)
                # an id lives in exactly one collection, even if its type changed
                other.delete(ids=[items[i].id for i in indexes])
                for start in range(0, len(indexes), step):
                    part = indexes[start : start + step]
                    target.upsert(
                        ids=[items[i].id for i in part],
                        documents=[items[i].text for i in part],
                        metadatas=[flatten_metadata(items[i]) for i in part],
                        embeddings=vectors[part],
                    )

    def record_event(self, event: Event) -> None:
        self.record_events([event])

    def finalize_session(self, session_id: str, summary: Event) -> None:
        check_summary(session_id, summary)
        self.record_events([summary])

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]:
        hits: list[SearchHit] = []
        with self._calling(f"read events of session {session_id}"):
            for collection in self._collections():
                got = collection.get(where={"session_id": session_id}, include=["documents", "metadatas"])
                hits.extend(self._hits(got["ids"], got["documents"], got["metadatas"], [0.0] * len(got["ids"])))
        hits.sort(key=lambda h: int(h.metadata["counter"]))
        return hits[:limit]

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]:
        if limit <= 0:
            return []
        vector = self._embedding.embed([query])
        where = build_where(filters)
        hits: list[SearchHit] = []
        with self._calling("search"):
            for collection in self._collections():
                got = collection.query(
                    query_embeddings=vector,
                    n_results=limit,
                    where=where,
                    include=["documents", "metadatas", "distances"],
                )
                hits.extend(self._hits(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0]))
        hits.sort(key=lambda h: (h.distance, h.id))
        return hits[:limit]

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        step = self._max_batch()
        with self._calling(f"delete {len(ids)} events"):
            for collection in self._collections():
                for start in range(0, len(ids), step):
                    collection.delete(ids=list(ids[start : start + step]))

    def count(self) -> int:
        with self._calling("count"):
            return sum(int(c.count()) for c in self._collections())

    def reset(self) -> None:
        with self._calling("reset the index"):
            existing = {getattr(c, "name", c) for c in self._client.list_collections()}
            for name in (EVENTS_COLLECTION, SUMMARIES_COLLECTION):
                if name in existing:
                    self._client.delete_collection(name)
            self._events = self._summaries = None
        self._collections()
