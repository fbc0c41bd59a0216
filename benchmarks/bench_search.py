"""Search benchmarks on embedded Chroma: event-to-searchable latency and semantic search latency.

1. Latency from ``Journal.append`` returning to the event being upserted into the index by the
   background :class:`Indexer`, with events arriving at a steady rate (default 100/s). Baseline: the
   synchronous path (append, then ``store.record_event`` in the same thread) measured in the same run.
2. ``ChromaStore.semantic_search`` (query embedding + both collections) p50/p95 at two index sizes,
   filled quickly with precomputed vectors (real embeddings of 500 synthetic events, jittered and
   re-normalised). Baseline: exact brute-force top-10 with numpy over the same vectors; recall@10 of
   Chroma's HNSW against that exact answer is reported too.

    python benchmarks/bench_search.py [--quick] [--sizes 10000,100000] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra_sandbox.chroma_store import ChromaStore, flatten_metadata
from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.indexer import Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.settings import load_settings
from hydra_sandbox.store import ContextStore, SearchFilters

VOCABULARY = (
    "ran pytest failed passed build docker image layer cache step apt install error warning commit "
    "diff refactor module function class test assertion timeout network proxy token session agent"
)


def texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    words = VOCABULARY.split(" ")
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 24))) for _ in range(n)]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class TimedStore:
    """Wraps a store and notes when each event's upsert returned (the moment it is searchable)."""

    def __init__(self, inner: ContextStore) -> None:
        self.inner = inner
        self.done: dict[str, float] = {}

    def record_events(self, events: Sequence[Event]) -> None:
        self.inner.record_events(events)
        now = time.perf_counter()
        for e in events:
            self.done.setdefault(e.id, now)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def latency(tmp: Path, embedding: MiniLMEmbedding, rate: float, seconds: float) -> list[tuple[str, float, float]]:
    journal = Journal(tmp / "lat.sqlite3")
    chroma = ChromaStore.embedded(tmp / "lat-chroma", embedding)
    # baseline: synchronous append + upsert of one event at a time
    sync: list[float] = []
    ref = SessionRef(session_id="sync")
    for line in texts(min(100, int(rate * seconds)), seed=11):
        start = time.perf_counter()
        chroma.record_event(journal.append(ref, EventDraft(type="note", text=line)))
        sync.append(time.perf_counter() - start)
    store = TimedStore(chroma)
    indexer = Indexer(journal, store, poll_interval_s=0.05)  # type: ignore[arg-type]
    indexer.catch_up(60)
    indexer.start()
    appended: dict[str, float] = {}
    ref = SessionRef(session_id="bg")
    period = 1.0 / rate
    start = time.perf_counter()
    for i, line in enumerate(texts(int(rate * seconds), seed=12)):
        due = start + i * period
        pause = due - time.perf_counter()
        if pause > 0:
            threading.Event().wait(pause)
        event = journal.append(ref, EventDraft(type="note", text=line))
        appended[event.id] = time.perf_counter()
        indexer.notify()
    indexer.catch_up(120)
    indexer.stop()
    chroma.close()
    journal.close()
    lat = [store.done[i] - t for i, t in appended.items()]
    return [
        ("synchronous append + upsert per event (baseline)", pct(sync, 0.5), pct(sync, 0.95)),
        (f"journal append -> searchable via Indexer at {rate:.0f} events/s", pct(lat, 0.5), pct(lat, 0.95)),
    ]


def fill(store: ChromaStore, embedding: MiniLMEmbedding, n: int, base: np.ndarray, lines: list[str]) -> np.ndarray:
    rng = np.random.default_rng(5)
    vectors = base[np.arange(n) % len(base)] + rng.normal(0, 0.02, (n, base.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    events_col, _ = store._collections()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    step = 2000
    for k in range(0, n, step):
        part = range(k, min(n, k + step))
        evs = [
            Event.from_draft(
                EventDraft(
                    type="command",
                    text=f"{lines[i % len(lines)]} #{i}",
                    tags=["t" + str(i % 7)],
                    timestamp=t0 + timedelta(seconds=i),
                ),
                SessionRef(session_id=f"s{i % 200}", profile_id="bench"),
                i // 200,
            )
            for i in part
        ]
        events_col.upsert(
            ids=[e.id for e in evs],
            documents=[e.text for e in evs],
            metadatas=[flatten_metadata(e) for e in evs],
            embeddings=vectors[k : k + len(evs)],
        )
    return vectors


def search(tmp: Path, embedding: MiniLMEmbedding, sizes: list[int], queries: int) -> list[tuple[str, ...]]:
    lines = texts(500, seed=21)
    base = embedding.embed(lines)
    qs = texts(queries, seed=99)
    rows: list[tuple[str, ...]] = []
    for size in sizes:
        store = ChromaStore.embedded(tmp / f"search-{size}", embedding)
        t_fill = time.perf_counter()
        vectors = fill(store, embedding, size, base, lines)
        fill_rate = size / (time.perf_counter() - t_fill)
        store.semantic_search(qs[0])  # warm up
        chroma_t, exact_t, recall = [], [], []
        filtered_t = []
        for q in qs:
            start = time.perf_counter()
            hits = store.semantic_search(q, limit=10)
            chroma_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            qv = embedding.embed([q])[0]
            top = np.argpartition(-(vectors @ qv), 10)[:10]
            exact_t.append(time.perf_counter() - start)
            exact_ids = {f"s{i % 200}:{i // 200}" for i in top}
            recall.append(len(exact_ids & {h.id for h in hits}) / 10)
            start = time.perf_counter()
            store.semantic_search(q, SearchFilters(tags=["t3"], profile_id="bench"), limit=10)
            filtered_t.append(time.perf_counter() - start)
        store.close()
        b50, b95 = pct(exact_t, 0.5), pct(exact_t, 0.95)
        rows.append(
            (
                f"{size:,}",
                "numpy exact top-10 (baseline)",
                f"{b50 * 1e3:.1f}",
                f"{b95 * 1e3:.1f}",
                "1.00x",
                "1.00",
                "",
            )
        )
        for name, ts in (
            ("ChromaStore.semantic_search", chroma_t),
            ("... with tag+profile filter", filtered_t),
        ):
            p95 = pct(ts, 0.95)
            rows.append(
                (
                    f"{size:,}",
                    name,
                    f"{pct(ts, 0.5) * 1e3:.1f}",
                    f"{p95 * 1e3:.1f}",
                    f"{p95 / b95:.2f}x",
                    f"{statistics.mean(recall):.2f}" if ts is chroma_t else "",
                    f"{fill_rate:,.0f}" if ts is chroma_t else "",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--sizes", default=None, help="comma-separated index sizes (default 10000,100000)")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: HYDRA_EMBEDDING_MODEL_DIR")
    args = parser.parse_args()
    model_dir = args.model_dir or load_settings().embedding_model_dir
    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([1000, 5000] if args.quick else [10_000, 100_000])
    )
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    queries = args.queries or (20 if args.quick else 100)
    embedding = MiniLMEmbedding(model_dir)
    with tempfile.TemporaryDirectory(prefix="hydra-bench-search-") as tmp:
        lat = latency(Path(tmp), embedding, args.rate, seconds)
        srch = search(Path(tmp), embedding, sizes, queries)
    mode = "quick" if args.quick else "full"
    print(f"# Event-to-searchable latency ({mode} mode, {seconds:.0f} s at {args.rate:.0f} events/s)\n")
    print("| path | p50 ms | p95 ms | p95 vs baseline |")
    print("|---|---:|---:|---:|")
    for name, p50, p95 in lat:
        print(f"| {name} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | {p95 / lat[0][2]:.2f}x |")
    print(f"\n# Semantic search latency ({mode} mode, {queries} queries, top 10)\n")
    print("| events | search | p50 ms | p95 ms | p95 vs exact numpy | recall@10 | fill docs/s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for row in srch:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
