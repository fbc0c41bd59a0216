"""Load: a burst of 200 spawns against a cap of 4, the same burst again (idempotent), then 10,000
notes while searches run against the real embedded Chroma. Hydra must not run more than the cap,
lose or duplicate a session or a note, or stop answering.

Counts and timings are printed and written to ``tests/adversarial/.results/test_load_burst.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from hydra_sandbox.services import Services
from hydra_sandbox.settings import HydraSettings, load_settings
from hydra_sandbox.store import InMemoryStore
from tests.adversarial.results import model_dir, scenario_recorder
from tests.fake_sandbox import FakeSandbox
from tests.hydra_server import serve as serve_hydra
from tests.mcp_calls import call

pytestmark = pytest.mark.adversarial

SPAWNS = 200
CAP = 4
NOTES = 10_000
NOTE_BATCH = 500
scenario = scenario_recorder(__file__)
WORDS = [
    "amber",
    "basil",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "glacier",
    "harbor",
    "iris",
    "juniper",
    "kelp",
    "lagoon",
    "meadow",
    "nectar",
    "opal",
    "prairie",
    "quartz",
    "reef",
    "saffron",
    "tundra",
    "umber",
    "violet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "anchor",
    "beacon",
    "canyon",
    "delta",
    "estuary",
    "falcon",
    "granite",
    "heron",
    "island",
    "jasper",
    "kestrel",
    "lantern",
    "marble",
    "nebula",
    "orchid",
    "pebble",
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_EMBEDDING_MODEL_DIR", str(model_dir()))
    return load_settings(max_concurrent_agents=CAP)


@contextlib.asynccontextmanager
async def serve(settings: HydraSettings, sandbox: FakeSandbox, store: Any) -> AsyncIterator[tuple[Client, Services]]:
    async with serve_hydra(settings, sandbox, store=store) as hydra:
        yield hydra.client, hydra.services


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_burst_of_200_spawns_never_exceeds_the_cap_and_loses_nothing(
    settings: HydraSettings, workdir: Path
) -> None:
    sandbox = FakeSandbox()
    sandbox.gate = asyncio.Event()
    with scenario("burst_200_spawns_cap_4") as counts:
        async with serve(settings, sandbox, InMemoryStore()) as (client, services):
            seen: list[int] = []
            stop = asyncio.Event()

            async def watch() -> None:  # samples concurrency between every scheduling step
                while not stop.is_set():
                    seen.append(max(sandbox.active, services.manager.running))
                    await asyncio.sleep(0.001)

            watcher = asyncio.create_task(watch())
            started = time.monotonic()
            spawned = await asyncio.gather(
                *(
                    call(
                        client,
                        "spawn_agent",
                        working_dir=str(workdir),
                        custom_prompt=f"task {i}",
                        idempotency_key=f"burst-{i}",
                    )
                    for i in range(SPAWNS)
                )
            )
            counts["spawn_calls"] = len(spawned)
            counts["spawn_seconds"] = round(time.monotonic() - started, 2)
            ids = [s["session_id"] for s in spawned]
            assert len(set(ids)) == SPAWNS
            assert not any(s["reused"] for s in spawned)

            async def capped_and_full() -> bool:
                return sandbox.active == CAP

            await until(capped_and_full, 30, f"{CAP} runs to be held by the gate")
            await asyncio.sleep(0.2)  # give any excess worker the chance to start a fifth run
            assert sandbox.active == CAP and sandbox.max_active == CAP
            assert services.manager.queue_length() == SPAWNS - CAP
            sandbox.gate.set()

            async def all_finished() -> bool:
                sessions = (await call(client, "list_sessions", limit=1000))["sessions"]
                return len(sessions) == SPAWNS and not any(
                    s["status"] in {"queued", "starting", "running"} for s in sessions
                )

            await until(all_finished, 120, "all 200 sessions to finish")
            counts["drain_seconds"] = round(time.monotonic() - started, 2)
            stop.set()
            await watcher
            counts["concurrency_samples"] = len(seen)
            counts["max_concurrency_seen"] = max(max(seen), sandbox.max_active)
            assert sandbox.max_active <= CAP and max(seen) <= CAP
            sessions = (await call(client, "list_sessions", limit=1000))["sessions"]
            assert sorted(s["session_id"] for s in sessions) == sorted(ids)
            assert {s["status"] for s in sessions} == {"awaiting_approval"}
            assert sorted(sandbox.started) == sorted(ids)  # each ran exactly once

            again = await asyncio.gather(
                *(
                    call(
                        client,
                        "spawn_agent",
                        working_dir=str(workdir),
                        custom_prompt=f"task {i}",
                        idempotency_key=f"burst-{i}",
                    )
                    for i in range(SPAWNS)
                )
            )
            counts["respawn_calls"] = len(again)
            assert [s["session_id"] for s in again] == ids
            assert all(s["reused"] for s in again)
            assert len((await call(client, "list_sessions", limit=1000))["sessions"]) == SPAWNS
            assert len(sandbox.started) == SPAWNS
            assert len(services.journal.query_sessions(limit=10_000)) == SPAWNS


def _note(i: int, rng: random.Random) -> str:
    return f"load note {i}: " + " ".join(rng.choice(WORDS) for _ in range(6)) + f" marker-{i:05d}"


async def test_10000_notes_are_journaled_once_and_searchable_while_indexing(
    settings: HydraSettings, workdir: Path
) -> None:
    from hydra_sandbox.chroma_store import ChromaStore

    sandbox = FakeSandbox()
    store = ChromaStore.from_settings(settings)
    rng = random.Random(1729)
    with scenario("notes_10000_search_while_indexing") as counts:
        async with serve(settings, sandbox, store) as (client, services):
            sessions = [
                (await call(client, "spawn_agent", working_dir=str(workdir), custom_prompt=f"notes {i}"))["session_id"]
                for i in range(8)
            ]
            for session_id in sessions:
                await call(client, "wait_session", session_id=session_id, timeout_s=30)
            targets: list[str | None] = [None, *sessions]  # None: the host's own notes
            notes = [(_note(i, rng), targets[i % len(targets)]) for i in range(NOTES)]

            searches: list[tuple[float, int]] = []  # (seconds, index lag) of every search
            search_errors: list[str] = []
            writing = asyncio.Event()

            async def search_while_indexing() -> None:
                while not writing.is_set() or services.indexer.lag() > 0:
                    t0 = time.monotonic()
                    result = await client.call_tool(
                        "search_context", {"query": rng.choice(WORDS) + " note"}, raise_on_error=False
                    )
                    if result.is_error:
                        search_errors.append(" ".join(getattr(b, "text", "") for b in result.content))
                    else:
                        searches.append((time.monotonic() - t0, int(result.structured_content["index_lag"])))
                    await asyncio.sleep(0.1)

            searcher = asyncio.create_task(search_while_indexing())
            started = time.monotonic()
            logged: list[dict[str, Any]] = []
            for start in range(0, NOTES, NOTE_BATCH):
                batch = notes[start : start + NOTE_BATCH]
                logged += await asyncio.gather(
                    *(
                        call(client, "log_context", note=text, **({"session_id": sid} if sid else {}))
                        for text, sid in batch
                    )
                )
            counts["log_context_calls"] = len(logged)
            counts["log_seconds"] = round(time.monotonic() - started, 2)
            writing.set()
            # the server still answers promptly while the index catches up
            t0 = time.monotonic()
            await call(client, "list_sessions", limit=10)
            status = json.loads((await client.read_resource("hydra://status"))[0].text)
            counts["answer_seconds_under_backlog"] = round(time.monotonic() - t0, 3)
            counts["index_lag_after_writes"] = status["store"]["index_lag"]
            await asyncio.wait_for(searcher, timeout=600)
            counts["index_seconds"] = round(time.monotonic() - started, 2)
            counts["searches"] = len(searches) + len(search_errors)
            counts["searches_during_lag"] = sum(1 for _, lag in searches if lag > 0)
            counts["search_p95_seconds"] = round(sorted(s for s, _ in searches)[int(0.95 * (len(searches) - 1))], 3)
            assert not search_errors, search_errors[:3]
            assert counts["searches_during_lag"] > 0, "no search ran while notes were still being indexed"

            # every note is in the journal exactly once, and counters have no gaps
            journal = services.journal
            assert len({e["id"] for e in logged}) == NOTES
            recorded: list[str] = []
            for sid in ["host", *sessions]:
                events = journal.events(sid)
                assert [e.counter for e in events] == list(range(len(events))), f"{sid}: counters not contiguous"
                recorded += [e.text for e in events if e.type == "note"]
            assert sorted(recorded) == sorted(text for text, _ in notes)

            async def caught_up() -> bool:
                return services.indexer.lag() == 0 and await asyncio.to_thread(store.count) == journal.count()

            await until(caught_up, 120, "index lag 0 and index count == journal count")
            counts["journal_events"] = journal.count()
            counts["index_documents"] = store.count()

            sample = rng.sample(range(NOTES), 5)
            for i in sample:
                text, sid = notes[i]
                hits = (await call(client, "search_context", query=text, limit=10))["hits"]
                assert logged[i]["id"] in [h["id"] for h in hits], f"note {i} not found by its own text"
                if sid is not None:
                    scoped = (await call(client, "search_context", query=text, session_id=sid, limit=3))["hits"]
                    assert scoped and scoped[0]["id"] == logged[i]["id"]
            counts["sampled_notes_found"] = len(sample)
            print(f"\nload: {json.dumps(counts, sort_keys=True)}")
