"""Hydra as a separate process, driven by a real MCP client over both real transports.

stdio: the whole loop, where the coder agent (real Codex in the sandbox) delegates to a reviewer
through the MCP endpoint inside its sandbox, is refused a wider child, and the review gates apply.
HTTP: the server is killed with SIGKILL while an agent runs; a new server re-attaches and the same
session is followed to its end with no lost and no duplicate events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport

from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings
from tests.mcp_calls import call, until

pytestmark = pytest.mark.docker
MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"
TOKEN = "transport-test-token-5c1e0b7d"

WIDER = {"resources": {"memory_mb": 64_000}}
DELEGATION = {
    "routes": [
        {
            "match": "CODER-7Q",
            "turns": [
                [{"exec": "sed -i 's/a - b/a + b/' src/calc.py && python3 -m pytest -q"}],
                [
                    {
                        "mcp_call": {
                            "name": "spawn_agent",
                            "arguments": {"working_dir": "/workspace", "profile_id": "code_reviewer", "policy": WIDER},
                        }
                    }
                ],
                [
                    {
                        "mcp_call": {
                            "name": "spawn_agent",
                            "arguments": {
                                "working_dir": "/workspace",
                                "profile_id": "code_reviewer",
                                "relationship": "review",
                                "custom_prompt": "REVIEWER-3K: review the sign fix in src/calc.py",
                                "policy": {"resources": {"timeout_s": 900}},
                            },
                        }
                    }
                ],
                [{"message": "Decision: fix the sign in add and ask for a review. Summary: changed src/calc.py"}],
            ],
        },
        {
            "match": "REVIEWER-3K",
            "turns": [
                [{"exec": "grep -n 'a + b' src/calc.py && python3 -m pytest -q"}],
                [{"message": "The fix is right.\nVERDICT: APPROVE"}],
            ],
        },
        {"match": "SLEEPER-9D", "turns": [[{"exec": "sleep 300", "yield_ms": 30000}]] * 10},
    ]
}


def server_env(settings: HydraSettings, model_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    return env | {
        "HYDRA_DATA_HOME": str(settings.data_home),
        "HYDRA_MODEL_BASE_URL": model_url,
        "HYDRA_MODEL": "test-model",
        "HYDRA_EMBEDDING_MODEL_DIR": str(MODEL_DIR),
        **extra,
    }


async def test_over_stdio_an_agent_delegates_a_review_through_hydra_and_the_review_gates_apply(
    agent_image: str, repo: Path, settings: HydraSettings
) -> None:
    try:
        async with ScriptedModel(Script.model_validate(DELEGATION)) as model:
            transport = StdioTransport(
                command=sys.executable,
                args=["-m", "hydra_sandbox", "serve"],
                env=server_env(settings, model.base_url),
                cwd=str(repo.parent),
            )
            async with Client(transport, timeout=300) as client:
                await _delegation_round_trip(client, repo)
    finally:
        await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))


async def _delegation_round_trip(client: Client, repo: Path) -> None:
    spawned = await call(
        client, "spawn_agent", working_dir=str(repo), profile_id="coder", custom_prompt="CODER-7Q: fix add()"
    )
    coder = spawned["session_id"]
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    waited = await client.call_tool(
        "wait_session", {"session_id": coder, "timeout_s": 240}, progress_handler=on_progress
    )
    assert waited.structured_content is not None
    assert waited.structured_content["status"] == "awaiting_approval", json.dumps(waited.structured_content)[:2000]
    assert progress, "no progress notifications reached the stdio client"

    timeline = (await call(client, "tail_logs", session_id=coder, limit=1000))["events"]
    mcp_calls = [e for e in timeline if "mcp" in e.get("tags", [])]
    assert len(mcp_calls) >= 2, "the agent's MCP tool calls are not in its timeline"
    dumped = json.dumps(mcp_calls)
    assert "resources.memory_mb: 64000 is wider than the parent" in dumped, (
        "no refusal of the wider child: " + dumped[:2000]
    )
    assert TOKEN not in dumped

    children = (await call(client, "list_sessions", parent_session_id=coder))["sessions"]
    assert len(children) == 1, "exactly one child: the wider one must have been refused"
    reviewer = children[0]
    assert reviewer["profile_id"] == "code_reviewer" and reviewer["depth"] == 1
    digest = (await call(client, "get_diff", session_id=coder))["digest"]
    refused = await client.call_tool(
        "apply_diff", {"session_id": coder, "confirm": True, "digest": digest}, raise_on_error=False
    )
    reviewed = await call(client, "wait_session", session_id=reviewer["session_id"], timeout_s=240)
    assert reviewed["status"] == "completed", json.dumps(reviewed)[:2000]
    items = {i["id"]: i["done"] for i in reviewed["session"]["checklist"]["items"]}
    assert items == {"tests_run": True, "approved": True}, "the reviewer did not see the coder's change"
    if refused.is_error:  # the review_approved rule held while the review was still running
        assert "review_approved" in str(refused.content)
        assert (repo / "src" / "calc.py").read_text().endswith("a - b\n")
        applied = await call(client, "apply_diff", session_id=coder, confirm=True, digest=digest)
        assert applied["applied"] is True
    assert (repo / "src" / "calc.py").read_text().endswith("a + b\n")

    async def found() -> list[dict[str, Any]]:
        hits = (await call(client, "search_context", query="fix the sign in add", session_id=coder))["hits"]
        return list(hits)

    hits = await until(found, "the coder's run to be searchable", 60)
    assert hits[0]["session_id"] == coder
    summary = await call(client, "summarize_session", session_id=coder)
    assert summary["summary"]["checklist"], summary

    sleeper = (await call(client, "spawn_agent", working_dir=str(repo), custom_prompt="SLEEPER-9D"))["session_id"]

    async def sleeping() -> bool:
        events = (await call(client, "tail_logs", session_id=sleeper, limit=200))["events"]
        return any(e["text"] == "turn started" for e in events)

    try:
        await until(sleeping, "the sleeper to start")
    except AssertionError:
        events = (await call(client, "tail_logs", session_id=sleeper, limit=200))["events"]
        raise AssertionError(json.dumps(events)[-4000:]) from None
    await call(client, "terminate_session", session_id=sleeper, reason="test: stop it")
    ended = await call(client, "wait_session", session_id=sleeper, timeout_s=60)
    assert ended["status"] == "cancelled"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """``hydra serve --transport http`` as a child process."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hydra_sandbox", "serve", "--transport", "http", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
            )

        async def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            return True

        await until(answers, "the HTTP server to listen", 90)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
async def http_server(settings: HydraSettings, tmp_path: Path) -> AsyncIterator[Callable[[str], HttpServer]]:
    servers: list[HttpServer] = []
    port = free_port()

    def make(model_url: str) -> HttpServer:
        env = server_env(settings, model_url, HYDRA_HTTP_TOKEN=TOKEN)
        servers.append(HttpServer(env, port, tmp_path / "server.log"))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


async def test_over_http_a_killed_server_is_replaced_and_follows_the_agent_without_losing_events(
    agent_image: str, repo: Path, settings: HydraSettings, http_server: Callable[[str], HttpServer]
) -> None:
    script = {
        "turns": [
            [{"exec": "echo before; sleep 20; echo after", "yield_ms": 30000}],
            [{"exec": "echo second"}],
            [{"message": "end"}],
        ]
    }
    try:
        async with ScriptedModel(Script.model_validate(script)) as model:
            first = http_server(model.base_url)
            await first.start()
            async with Client(StreamableHttpTransport(first.url, auth=TOKEN), timeout=120) as client:
                session_id = (await call(client, "spawn_agent", working_dir=str(repo)))["session_id"]

                async def started() -> bool:
                    events = (await call(client, "tail_logs", session_id=session_id, limit=500))["events"]
                    return bool(model.requests) and any(e["text"] == "turn started" for e in events)

                await until(started, "the agent's first turn")
            first.kill()
            second = http_server(model.base_url)
            await second.start()
            async with Client(StreamableHttpTransport(second.url, auth=TOKEN), timeout=300) as client:
                ended = await call(client, "wait_session", session_id=session_id, timeout_s=240)
                assert ended["status"] in {"completed", "awaiting_approval"}, json.dumps(ended)[:2000]
                events = (await call(client, "tail_logs", session_id=session_id, limit=1000))["events"]
        counters = [e["counter"] for e in events]
        assert counters == list(range(len(events))), "a gap or a repeat in the session's counters"
        keyed = [
            (e["data"].get("run"), e["data"]["seq"], e["data"].get("stream")) for e in events if "seq" in e["data"]
        ]
        assert len(keyed) == len(set(keyed)), "an event of the agent was recorded twice"
        texts = "\n".join(e["text"] for e in events)
        assert "re-attached" in texts and "after" in texts and "second" in texts
        for once in ("turn started", "turn completed", "$ echo before", "$ echo second", "ended completed"):
            assert texts.count(once) == 1, f"{once!r} was lost or recorded twice"
    finally:
        await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))
