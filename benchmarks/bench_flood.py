"""One agent floods output while another reader polls its session: server memory and tool-call p95.

What runs: the real MCP server in this process (fastmcp in-memory client), the real output pipeline
(:class:`~hydra_sandbox.sandbox.pipeline.OutputPipeline`: decode, split, mask, number), the real
recorder and journal; a fake runtime feeds the pipeline ``LINES`` two-byte stderr lines (``".\\n"``) in
64 KiB chunks, as a container's log stream would; runs of them coalesce into ``output`` events (the
result counts them and the lines they hold, which must be all of them). No container and no embedding:
the search index is a store that drops what it is given (the index has its own benchmark), so the
memory figure is the server's own (journal, recorder, reads). Measured in one run:

* idle: resident memory, and p95 of ``list_sessions`` / ``tail_logs`` calls on the idle server;
* flood: peak resident memory and the p95 of the same calls while the flood is recorded and a reader
  reads ``hydra://sessions/{id}`` of the flooding session in a loop; the largest resource response;
* what the old whole-timeline resource would have returned for the same session (its JSON size).

Usage: python benchmarks/bench_flood.py [--lines N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import Event
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox.pipeline import OutputPipeline
from hydra_sandbox.sandbox.protocol import EventSink, RunRequest, RunResult
from hydra_sandbox.settings import load_settings
from hydra_sandbox.store import InMemoryStore, SearchFilters, SearchHit
from tests.fake_sandbox import FakeSandbox
from tests.hydra_server import serve

CHUNK = 64 * 1024


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class DroppingStore(InMemoryStore):
    """A ContextStore that keeps nothing (the index is benchmarked on its own)."""

    def record_events(self, events: Sequence[Event]) -> None:
        return None

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]:
        return []


class FloodSandbox(FakeSandbox):
    """A run whose container prints ``lines`` two-byte lines on stderr, through the real pipeline."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines
        self.fed = asyncio.Event()

    async def run(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        if "FLOOD" not in request.prompt:
            return await super().run(request, sink, cancel)
        masker = SecretMasker()
        pipeline = OutputPipeline(masker, CodexEventParser([], masker.mask), sink)
        full, rest = divmod(self.lines * 2, CHUNK)  # the chunks are made once: 100 MB is never held
        chunk = b".\n" * (CHUNK // 2)
        for _ in range(full):
            await pipeline.feed("stderr", chunk)
        await pipeline.feed("stderr", chunk[:rest])
        await pipeline.close()
        self.fed.set()
        return RunResult(status="completed", has_changes=False)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18] * 1000 if len(samples) >= 20 else max(samples) * 1000


async def timed(samples: list[float], call: Any) -> Any:
    start = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - start)
    return result


async def probe(client: Any, session_id: str, samples: list[float], stop: asyncio.Event, n: int | None) -> None:
    """list_sessions and tail_logs of a quiet session, one after the other."""
    done = 0
    while not stop.is_set() and (n is None or done < n):
        await timed(samples, client.call_tool("list_sessions", {"limit": 50}))
        await timed(samples, client.call_tool("tail_logs", {"session_id": session_id, "limit": 100}))
        done += 1
        await asyncio.sleep(0.005)


async def reader(client: Any, session_id: str, stop: asyncio.Event, sizes: list[int]) -> None:
    while not stop.is_set():
        text = (await client.read_resource(f"hydra://sessions/{session_id}"))[0].text
        sizes.append(len(text))
        await asyncio.sleep(0)


async def bench(lines: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HYDRA_DATA_HOME"] = str(Path(tmp) / "data")
        workdir = Path(tmp) / "repo"
        workdir.mkdir()
        (workdir / "app.py").write_text("x = 1\n")
        sandbox = FloodSandbox(lines)
        async with serve(load_settings(), sandbox, store=DroppingStore()) as hydra:
            client = hydra.client
            quiet = (await client.call_tool("spawn_agent", {"working_dir": str(workdir)})).structured_content
            await client.call_tool("wait_session", {"session_id": quiet["session_id"], "timeout_s": 30})
            idle: list[float] = []
            await probe(client, quiet["session_id"], idle, asyncio.Event(), 100)
            idle_rss = rss_mb()

            started = time.perf_counter()
            spawn = {"working_dir": str(workdir), "custom_prompt": "FLOOD"}
            flood = (await client.call_tool("spawn_agent", spawn)).structured_content
            stop = asyncio.Event()
            busy: list[float] = []
            sizes: list[int] = []
            peak = idle_rss

            async def sample_memory() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, rss_mb())
                    await asyncio.sleep(0.05)

            tasks = [
                asyncio.create_task(probe(client, quiet["session_id"], busy, stop, None)),
                asyncio.create_task(reader(client, flood["session_id"], stop, sizes)),
                asyncio.create_task(sample_memory()),
            ]
            await client.call_tool("wait_session", {"session_id": flood["session_id"], "timeout_s": 3600})
            elapsed = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*tasks)
            events = hydra.services.journal.events(flood["session_id"])
            old_resource = len(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
    output = [e for e in events if e.type == "output"]
    return {
        "lines": lines,
        "output_bytes": lines * 2,
        "events": len(events),
        "output_events": len(output),
        "lines_recorded": sum(int(e.data["lines"]) for e in output),
        "flood_seconds": round(elapsed, 1),
        "idle_rss_mb": round(idle_rss, 1),
        "flood_peak_rss_mb": round(peak, 1),
        "memory_ratio": round(peak / idle_rss, 2),
        "idle_p95_ms": round(p95(idle), 1),
        "flood_p95_ms": round(p95(busy), 1),
        "p95_ratio": round(p95(busy) / p95(idle), 1),
        "calls_during_flood": len(busy),
        "resource_reads": len(sizes),
        "largest_resource_bytes": max(sizes) if sizes else 0,
        "whole_timeline_bytes": old_resource,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000_000, help="two-byte lines the agent prints (100 MB)")
    parser.add_argument("--quick", action="store_true", help="20,000 lines")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(20_000 if args.quick else args.lines)), indent=2))


if __name__ == "__main__":
    main()
