"""The MCP server under load, as a separate process over streamable HTTP with a real client:

* tool-call latency (p50/p95) of ``list_sessions`` and ``search_context`` while 8 real Codex agents
  run and stream events, against the same calls on the idle server (same run);
* time from ``spawn_agent`` to the agent's first Codex event, against ``docker run --rm IMAGE true``;
* the server's resident memory with 8 sessions running, against the idle server.

Usage: python benchmarks/bench_server.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import load_settings

TOKEN = "bench-token-0d8c"
AGENTS = 8
FIRST_EVENT_SAMPLES = 7
MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"


def script(steps: int) -> Script:
    routes = []
    for n in range(AGENTS):
        turns: list[list[dict[str, Any]]] = [
            [{"exec": f"echo agent {n} step {i}; seq 1 200 | tail -n 3; sleep 0.3"}] for i in range(steps)
        ]
        turns.append([{"message": f"Summary: agent {n} finished {steps} steps."}])
        routes.append({"match": f"BENCH-AGENT-{n}-", "turns": turns})
    routes.append({"match": "BENCH-FIRST-", "turns": [[{"message": "Summary: first event probe."}]]})
    return Script.model_validate({"routes": routes})


def _own_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of the server and the processes it started (its index process), in KiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += _own_rss_kib(current)
            pending += _children(current)
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return total


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert result.structured_content is not None
    return result.structured_content


async def latencies(client: Client, calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"list_sessions": [], "search_context": []}
    for i in range(calls):
        start = time.perf_counter()
        await call(client, "list_sessions")
        out["list_sessions"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await call(client, "search_context", query=f"agent step {i % 10} output", limit=5)
        out["search_context"].append(time.perf_counter() - start)
    return out


def repo(root: Path) -> Path:
    path = root / "repo"
    path.mkdir()
    (path / "README.md").write_text("bench\n")
    subprocess.run(["chown", "-R", "1234:1234", str(path)], check=True)
    os.chmod(root, 0o755)
    return path


@contextlib.asynccontextmanager
async def http_server(
    data_home: Path, model_url: str, max_agents: int
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """``hydra serve --transport http`` as its own process on a free loopback port, yielding the process
    and its MCP URL once it listens. Stopped, and what it left collected by ``hydra gc``, at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")} | {
        "HYDRA_DATA_HOME": str(data_home),
        "HYDRA_MODEL_BASE_URL": model_url,
        "HYDRA_MODEL": "test-model",
        "HYDRA_EMBEDDING_MODEL_DIR": str(MODEL_DIR),
        "HYDRA_HTTP_TOKEN": TOKEN,
        "HYDRA_MAX_CONCURRENT_AGENTS": str(max_agents),
    }
    argv = [sys.executable, "-m", "hydra_sandbox", "serve", "--transport", "http", "--port", str(port)]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                await asyncio.sleep(0.2)
        yield server, f"http://127.0.0.1:{port}/mcp"
    finally:
        server.terminate()
        server.wait(60)
        subprocess.run([sys.executable, "-m", "hydra_sandbox", "gc"], env=env, capture_output=True, check=False)


async def main(quick: bool) -> None:
    steps, calls = (6, 60) if quick else (20, 300)
    image = load_settings().agent_image
    tmp = Path(tempfile.mkdtemp(prefix="hydra-bench-"))
    work = repo(tmp)
    try:
        async with (
            ScriptedModel(script(steps)) as model,
            http_server(tmp / "data", model.base_url, AGENTS + 1) as (server, url),
            Client(StreamableHttpTransport(url, auth=TOKEN), timeout=300) as client,
        ):
            await call(client, "log_context", note="bench warm-up: the store is open")
            idle = await latencies(client, calls // 3)
            idle_rss = rss_kib(server.pid)

            # alternated, so load that comes and goes on a shared machine falls on both sides alike
            plain: list[float] = []
            first: list[float] = []
            for i in range(FIRST_EVENT_SAMPLES):
                start = time.perf_counter()
                subprocess.run(["docker", "run", "--rm", image, "true"], check=True, capture_output=True)
                plain.append(time.perf_counter() - start)
                start = time.perf_counter()
                spawned = await call(client, "spawn_agent", working_dir=str(work), custom_prompt=f"BENCH-FIRST-{i}")
                sid = spawned["session_id"]
                while True:
                    events = (await call(client, "tail_logs", session_id=sid, limit=100))["events"]
                    if any(e["data"].get("codex") == "thread.started" for e in events):
                        break
                    await asyncio.sleep(0.02)
                first.append(time.perf_counter() - start)
                await call(client, "wait_session", session_id=sid, timeout_s=120)

            sessions = [
                (await call(client, "spawn_agent", working_dir=str(work), custom_prompt=f"BENCH-AGENT-{n}-"))[
                    "session_id"
                ]
                for n in range(AGENTS)
            ]
            while True:
                running = (await call(client, "list_sessions", status="running"))["sessions"]
                if len(running) >= AGENTS:
                    break
                await asyncio.sleep(0.2)
            loaded = await latencies(client, calls)
            peak = rss_kib(server.pid)
            events = 0
            for sid in sessions:
                done = await call(client, "wait_session", session_id=sid, timeout_s=600)
                events += int(done["session"].get("event_count", 0) or 0)
                peak = max(peak, rss_kib(server.pid))
            for sid in sessions:
                await call(client, "discard_diff", session_id=sid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# bench_server ({'quick' if quick else 'full'}): {AGENTS} agents x {steps} commands, {calls} calls")
    for tool in ("list_sessions", "search_context"):
        i50, i95 = pct(idle[tool], 0.5) * 1000, pct(idle[tool], 0.95) * 1000
        l50, l95 = pct(loaded[tool], 0.5) * 1000, pct(loaded[tool], 0.95) * 1000
        print(
            f"{tool}: idle p50 {i50:.1f} ms p95 {i95:.1f} ms; with {AGENTS} agents p50 {l50:.1f} ms "
            f"p95 {l95:.1f} ms; p95 ratio loaded/idle {l95 / i95:.2f}x"
        )
    f, p = statistics.median(first), statistics.median(plain)
    print(
        f"spawn_agent -> first Codex event: median {f:.2f} s; docker run --rm true: {p:.2f} s; ratio {f / p:.2f}x "
        f"({FIRST_EVENT_SAMPLES} of each, alternated; all: {' '.join(f'{x:.2f}' for x in first)} / "
        f"{' '.join(f'{x:.2f}' for x in plain)})"
    )
    print(
        f"server RSS: idle {idle_rss / 1024:.0f} MiB; with {AGENTS} sessions peak {peak / 1024:.0f} MiB; "
        f"ratio {peak / idle_rss:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv))
