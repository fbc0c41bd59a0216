"""Agents per host: how many concurrent agents one machine carries before a second one is needed.

For each count (8, 32, 64 by default) Hydra runs as its own process (``hydra serve --transport http``)
with its concurrency cap at that count, and that many real Codex agents run at once in their hardened
containers, each talking to a slow scripted model: every model request is answered after 2 s, and an
agent takes 10 turns (9 commands and a summary). While they run, a real MCP client calls
``list_sessions`` in a loop. Measured, each against the idle server of the same run:

* ``list_sessions`` p50/p95 (target: p95 at most 50 ms at 64 agents);
* the server's resident memory, idle and at its peak;
* each agent container's memory (the cgroup's current usage, read from ``docker stats``) at the peak;
* events lost: every agent's 9 command outputs and its summary must be in its timeline exactly once.

The ``list_sessions`` latencies are measured by a client in a process of its own (``probe``), which
does nothing else: the benchmark's own process also serves the scripted model to every agent, and a
call timed there waits for that work too, so it measured the benchmark as much as the server.

Usage: python benchmarks/bench_agents_per_host.py [--counts 8,32,64] [--turn-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from benchmarks.bench_server import TOKEN, call, http_server, pct, repo, rss_kib
from hydra_sandbox.scripted_model import Script, ScriptedModel

STEPS = 9  # commands; the tenth turn is the summary
ENDED = {"awaiting_approval", "completed", "failed", "cancelled", "timed_out"}


class _LateWriter:
    """A stream writer whose first ``drain`` of a response waits: the model takes its time to answer."""

    def __init__(self, writer: asyncio.StreamWriter, delay_s: float) -> None:
        self._writer = writer
        self._delay_s = delay_s
        self._waited = False

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        if not self._waited:
            self._waited = True
            await asyncio.sleep(self._delay_s)
        await self._writer.drain()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


class SlowModel(ScriptedModel):
    """The scripted model, answering each request ``delay_s`` after it arrives."""

    def __init__(self, script: Script, delay_s: float) -> None:
        super().__init__(script)
        self.delay_s = delay_s

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return await super()._one_request(reader, _LateWriter(writer, self.delay_s))  # type: ignore[arg-type]


def script(agents: int) -> Script:
    routes = []
    for n in range(agents):
        turns: list[list[dict[str, Any]]] = [[{"exec": f"echo agent-{n}-step-{i}-done"}] for i in range(STEPS)]
        turns.append([{"message": f"Summary: agent-{n}-finished."}])
        routes.append({"match": f"PER-HOST-{n}-", "turns": turns})
    return Script.model_validate({"routes": routes})


def container_memory_mib() -> list[float]:
    """Current memory of every running Hydra agent container, in MiB. ``docker stats`` of all running
    containers, filtered by name: given ids, it fails outright when one of them ended meanwhile."""
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}"], capture_output=True, text=True, check=False
    ).stdout
    sizes = []
    for line in out.splitlines():
        row = json.loads(line)
        if not str(row.get("Name", "")).startswith("hydra-s-"):
            continue
        used = row["MemUsage"].split("/")[0].strip()
        number, unit = float(used.rstrip("KMGiB")), used.lstrip("0123456789.")
        sizes.append(number * {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 2**20}.get(unit, 1.0))
    return sizes


def lost_events(n: int, events: list[dict[str, Any]]) -> int:
    """How many of agent ``n``'s expected outputs are missing from its timeline, or there twice."""
    texts = [str(e.get("text", "")) + json.dumps(e.get("data", {})) for e in events]
    missing = 0
    for i in range(STEPS):
        marker = f"agent-{n}-step-{i}-done"
        commands = [t for t, e in zip(texts, events, strict=True) if marker in t and e.get("type") == "command"]
        missing += abs(1 - len(commands))
    summaries = [e for e in events if e.get("type") == "message" and f"agent-{n}-finished" in str(e.get("text"))]
    return missing + abs(1 - len(summaries))


async def _probe_loop(url: str, stop: Any, interval_s: float) -> list[float]:
    async with Client(StreamableHttpTransport(url, auth=TOKEN), timeout=600) as client:
        samples: list[float] = []
        while not stop.is_set():
            start = time.perf_counter()
            await call(client, "list_sessions", limit=200)
            samples.append(time.perf_counter() - start)
            await asyncio.sleep(interval_s)
        return samples


def probe(url: str, stop: Any, results: Any, interval_s: float = 0.05) -> None:
    """Time ``list_sessions`` every ``interval_s`` until ``stop`` is set; the latencies go to ``results``."""
    results.put(asyncio.run(_probe_loop(url, stop, interval_s)))


class Prober:
    """A :func:`probe` in a process of its own (spawned: no state of this process is inherited)."""

    def __init__(self, url: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results: Any = context.Queue()
        self._process = context.Process(target=probe, args=(url, self._stop, self._results), daemon=True)
        self._process.start()

    async def stop(self) -> list[float]:
        self._stop.set()
        samples: list[float] = await asyncio.to_thread(self._results.get, True, 120)
        await asyncio.to_thread(self._process.join, 30)
        return samples


async def idle_latencies(url: str, seconds: float = 6.0) -> list[float]:
    prober = Prober(url)
    await asyncio.sleep(seconds)
    return await prober.stop()


async def timeline(client: Client, session_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        page = await call(client, "tail_logs", session_id=session_id, since=since, limit=1000)
        events += page["events"]
        since = page["next_since"]
        if not page["more"]:
            return events


async def one_count(agents: int, turn_s: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hydra-bench-"))
    work = repo(tmp)
    try:
        async with (
            SlowModel(script(agents), turn_s) as model,
            http_server(tmp / "data", model.base_url, agents) as (server, url),
            Client(StreamableHttpTransport(url, auth=TOKEN), timeout=600) as client,
        ):
            await call(client, "log_context", note="bench warm-up: the store is open")
            idle = await idle_latencies(url)
            idle_rss = rss_kib(server.pid)
            prober = Prober(url)
            started = time.perf_counter()
            sessions = [
                (await call(client, "spawn_agent", working_dir=str(work), custom_prompt=f"PER-HOST-{n}-"))[
                    "session_id"
                ]
                for n in range(agents)
            ]
            peak_rss, most_running, sampled_at, agent_mib = idle_rss, 0, 0, [0.0]
            next_stats = 0.0
            while True:
                listed = (await call(client, "list_sessions", limit=agents + 10))["sessions"]
                peak_rss = max(peak_rss, rss_kib(server.pid))
                running = sum(1 for s in listed if s["status"] == "running")
                most_running = max(most_running, running)
                if running >= sampled_at and time.monotonic() >= next_stats:
                    # off the event loop: it also serves the model, and docker stats takes a second or two
                    agent_mib = await asyncio.to_thread(container_memory_mib) or agent_mib  # at the most running
                    sampled_at = running
                    next_stats = time.monotonic() + 5
                if all(s["status"] in ENDED for s in listed if s["session_id"] in sessions):
                    break
                await asyncio.sleep(0.25)
            elapsed = time.perf_counter() - started
            loaded = await prober.stop()
            lost, statuses = 0, dict[str, int]()
            for n, sid in enumerate(sessions):
                record = (await call(client, "summarize_session", session_id=sid))["session"]
                statuses[record["status"]] = statuses.get(record["status"], 0) + 1
                lost += lost_events(n, await timeline(client, sid))
            for sid in sessions:
                await call(client, "discard_diff", session_id=sid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "agents": agents,
        "most_running": most_running,
        "seconds": round(elapsed, 1),
        "statuses": statuses,
        "idle_p95_ms": round(pct(idle, 0.95) * 1000, 1),
        "p50_ms": round(pct(loaded, 0.5) * 1000, 1),
        "p95_ms": round(pct(loaded, 0.95) * 1000, 1),
        "calls": len(loaded),
        "server_idle_mib": round(idle_rss / 1024),
        "server_peak_mib": round(peak_rss / 1024),
        "agent_mib_median": round(sorted(agent_mib)[len(agent_mib) // 2], 1),
        "agent_mib_max": round(max(agent_mib), 1),
        "lost_or_duplicated": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="8,32,64")
    parser.add_argument("--turn-seconds", type=float, default=2.0)
    args = parser.parse_args()
    print("| agents | most running at once | run (s) | statuses | list_sessions p50 / p95 (idle p95) | p95 / idle | "
          "server memory idle → peak | agent memory median / max | events lost or doubled |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count in (int(c) for c in args.counts.split(",")):
        r = asyncio.run(one_count(count, args.turn_seconds))
        print(
            f"| {r['agents']} | {r['most_running']} | {r['seconds']} | {r['statuses']} | {r['p50_ms']} / "
            f"**{r['p95_ms']} ms** ({r['idle_p95_ms']} ms) | {r['p95_ms'] / r['idle_p95_ms']:.1f}x | "
            f"{r['server_idle_mib']} → {r['server_peak_mib']} MiB "
            f"({r['server_peak_mib'] / r['server_idle_mib']:.2f}x) | "
            f"{r['agent_mib_median']} / {r['agent_mib_max']} MiB | {r['lost_or_duplicated']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
