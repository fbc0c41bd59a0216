"""Every MCP tool, resource and prompt through an in-memory fastmcp Client, including refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from hydra_sandbox.mcp.auth import HydraTokenVerifier
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.fake_sandbox import FakeRun, FakeSandbox, command, message
from tests.hydra_server import TOOL_NAMES, operator_server, serve

SECRET = "sk-proj-SERVERTESTSECRETabcdefghijklmnopqrstuvwxyz012345"
TOOLS = set(TOOL_NAMES)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    return path


@pytest.fixture
def sandbox() -> FakeSandbox:
    sandbox = FakeSandbox()
    sandbox.script(
        "LEAK",
        FakeRun(
            drafts=[
                command(f"cat .env # {SECRET}", 0, f"OPENAI_API_KEY={SECRET}"),
                message("I changed nothing"),
            ]
        ),
    )
    return sandbox


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_MODEL_API_KEY", SECRET)
    return load_settings()


@pytest.fixture
async def client(settings: HydraSettings, sandbox: FakeSandbox) -> AsyncIterator[Client]:
    async with serve(settings, sandbox) as hydra:
        yield hydra.client


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, name: str, **args: Any) -> str:
    result = await client.call_tool(name, args, raise_on_error=False)
    assert result.is_error, f"{name}({args}) was not refused"
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert "Traceback" not in text
    return text


async def test_every_tool_is_listed_with_schema_and_annotations(client: Client) -> None:
    tools = {t.name: t for t in await client.list_tools()}
    assert set(tools) == TOOLS
    spawn = tools["spawn_agent"].input_schema["properties"]
    assert set(spawn) == {
        "profile_id",
        "custom_prompt",
        "goalset",
        "inputs",
        "working_dir",
        "flags",
        "policy",
        "parent_session_id",
        "relationship",
        "idempotency_key",
    }
    assert tools["spawn_agent"].input_schema["required"] == ["working_dir"]
    assert tools["list_sessions"].annotations.read_only_hint is True
    assert tools["search_context"].annotations.read_only_hint is True
    assert tools["apply_diff"].annotations.destructive_hint is True
    assert tools["discard_diff"].annotations.destructive_hint is True
    assert tools["log_context"].annotations.read_only_hint is False
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30


async def test_spawn_wait_diff_apply_and_search_round_trip(client: Client, workdir: Path, sandbox: FakeSandbox) -> None:
    spawned = await call(client, "spawn_agent", working_dir=str(workdir), custom_prompt="fix the bug")
    session_id = spawned["session_id"]
    assert spawned["status"] == "queued" and spawned["events"]
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, text: str | None) -> None:
        progress.append((value, text))

    waited = await client.call_tool(
        "wait_session", {"session_id": session_id, "timeout_s": 10}, progress_handler=on_progress
    )
    assert waited.structured_content["status"] == "awaiting_approval"
    assert waited.structured_content["session"]["checklist"]["items"]
    assert progress and "events" in (progress[-1][1] or "")
    diff = await call(client, "get_diff", session_id=session_id)
    assert [f["path"] for f in diff["files"]] == ["app.py"]
    dry = await call(client, "apply_diff", session_id=session_id)
    assert dry["applied"] is False and sandbox.applied == []
    applied = await call(client, "apply_diff", session_id=session_id, confirm=True, digest=diff["digest"])
    assert applied["applied"] is True and sandbox.applied == [session_id]
    listed = await call(client, "list_sessions", status="completed")
    assert [s["session_id"] for s in listed["sessions"]] == [session_id]
    tail = await call(client, "tail_logs", session_id=session_id, since=2, limit=3)
    assert [e["counter"] for e in tail["events"]] == [2, 3, 4] and tail["next_since"] == 5
    summary = await call(client, "summarize_session", session_id=session_id)
    assert summary["narrative"] != "no summary yet"
    found = await _search_until_found(client, "pytest passed", session_id)
    assert found


async def _search_until_found(client: Client, query: str, session_id: str) -> bool:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        hits = (await call(client, "search_context", query=query, session_id=session_id))["hits"]
        if hits:
            return all(h["session_id"] == session_id for h in hits)
        await asyncio.sleep(0.05)
    return False


async def test_refusals_say_what_was_wrong_and_server_stays_up(client: Client, workdir: Path) -> None:
    assert "available profiles" in await refused(client, "spawn_agent", working_dir=str(workdir), profile_id="x")
    assert "gpu" in await refused(client, "spawn_agent", working_dir=str(workdir), flags={"gpu": 1})
    assert "not an absolute path" in await refused(client, "spawn_agent", working_dir="repo")
    assert "not found" in await refused(client, "get_diff", session_id="s-nope")
    assert "valid: queued" in await refused(client, "list_sessions", status="dancing")
    assert "valid: command" in await refused(client, "search_context", query="x", event_type="gossip")
    assert "since" in await refused(client, "search_context", query="x", since="last tuesday")
    parent = await call(client, "spawn_agent", working_dir=str(workdir))
    text = await refused(
        client,
        "spawn_agent",
        working_dir=str(workdir),
        parent_session_id=parent["session_id"],
        policy={"resources": {"cpus": 64}},
    )
    assert "resources.cpus" in text and "wider" in text
    assert "no further children" not in text
    # the server is still up and answers normally
    assert (await call(client, "list_agents"))["profiles"]


async def test_host_notes_are_searchable_and_masked(client: Client) -> None:
    logged = await call(client, "log_context", note=f"we chose postgres; token {SECRET}", tags=["decision"])
    assert logged["session_id"] == "host"
    assert await _search_until_found(client, "postgres decision", "host")
    hits = (await call(client, "search_context", query="postgres"))["hits"]
    assert SECRET not in json.dumps(hits)


async def test_tool_results_never_contain_the_model_key(client: Client, workdir: Path) -> None:
    spawned = await call(client, "spawn_agent", working_dir=str(workdir), custom_prompt="LEAK")
    session_id = spawned["session_id"]
    await call(client, "wait_session", session_id=session_id, timeout_s=10)
    outputs = [
        await call(client, "tail_logs", session_id=session_id),
        await call(client, "summarize_session", session_id=session_id),
        await call(client, "search_context", query="OPENAI_API_KEY"),
    ]
    resource = await client.read_resource(f"hydra://sessions/{session_id}")
    blob = json.dumps(outputs) + resource[0].text
    assert SECRET not in blob
    assert "[MASKED:" in blob


async def test_terminate_and_resume_and_discard(client: Client, workdir: Path, sandbox: FakeSandbox) -> None:
    import asyncio

    sandbox.gate = asyncio.Event()
    session_id = (await call(client, "spawn_agent", working_dir=str(workdir)))["session_id"]
    stopped = await call(client, "terminate_session", session_id=session_id, reason="changed my mind")
    assert stopped["session_id"] == session_id
    waited = await call(client, "wait_session", session_id=session_id, timeout_s=10)
    assert waited["status"] == "cancelled"
    assert "already cancelled" in await refused(client, "terminate_session", session_id=session_id, reason="x")
    sandbox.gate.set()
    resumed = await call(client, "resume_session", session_id=session_id, prompt="try again")
    assert resumed["status"] == "queued"
    waited = await call(client, "wait_session", session_id=session_id, timeout_s=10)
    assert waited["status"] == "awaiting_approval"
    discarded = await call(client, "discard_diff", session_id=session_id)
    assert discarded["diff_state"] == "discarded" and discarded["status"] == "completed"


async def test_resources_describe_profiles_policies_sessions_checklists_and_status(
    client: Client, workdir: Path
) -> None:
    templates = {t.uri_template for t in await client.list_resource_templates()}
    assert {"hydra://sessions/{session_id}", "hydra://checklists/{session_id}"} <= templates
    profiles = json.loads((await client.read_resource("hydra://profiles"))[0].text)
    assert {p["id"] for p in profiles} >= {"default", "code_reviewer", "data_migration"}
    policies = json.loads((await client.read_resource("hydra://policies"))[0].text)
    assert "read_only" in {p["name"] for p in policies}
    session_id = (await call(client, "spawn_agent", working_dir=str(workdir)))["session_id"]
    await call(client, "wait_session", session_id=session_id, timeout_s=10)
    session = json.loads((await client.read_resource(f"hydra://sessions/{session_id}"))[0].text)
    assert session["session"]["session_id"] == session_id and session["timeline"]
    checklist = json.loads((await client.read_resource(f"hydra://checklists/{session_id}"))[0].text)
    assert any(i["id"] == "tests_passed" and i["done"] for i in checklist["items"])
    status = json.loads((await client.read_resource("hydra://status"))[0].text)
    assert {"runtime", "store", "queue_length", "running_sessions", "journal"} <= set(status)


async def test_prompts_per_profile_and_additional_agent(client: Client) -> None:
    names = {p.name for p in await client.list_prompts()}
    assert {"default", "code_reviewer", "data_migration", "additional_agent"} <= names
    reviewer = await client.get_prompt("code_reviewer", {"task": "review PR 7", "extra_goals": "check docs"})
    text = reviewer.messages[0].content.text
    assert "review PR 7" in text and "check docs" in text and "VERDICT" in text
    advice = await client.get_prompt("additional_agent", {"task": "audit the auth module"})
    assert "code_reviewer" in advice.messages[0].content.text


@pytest.mark.parametrize(("allowed", "expected"), [([], 421), (["hydra.*.svc:8765"], 401)])
def test_http_answers_only_hosts_it_knows(
    settings: HydraSettings, sandbox: FakeSandbox, allowed: list[str], expected: int
) -> None:
    from starlette.testclient import TestClient

    configured = settings.model_copy(update={"http_allowed_hosts": allowed})
    server = operator_server(configured, sandbox, auth=HydraTokenVerifier("operator-token"))
    app = server.http_app(path="/mcp", host_origin_protection=True, allowed_hosts=allowed or None)
    with TestClient(app) as http:
        status = http.post("/mcp", json={}, headers={"Host": "hydra.team.svc:8765"}).status_code
        assert status == expected
        assert http.post("/mcp", json={}, headers={"Host": "127.0.0.1:8765"}).status_code == 401


async def test_bad_arguments_are_refused_in_one_line_per_problem(client: Client) -> None:
    """fastmcp validates arguments before Hydra's code runs; the refusal is still Hydra's short form."""
    missing = await refused(client, "spawn_agent")
    assert missing == "spawn_agent: working_dir: required argument is missing"
    assert await refused(client, "list_agents", sudo=True) == "list_agents: sudo: unknown argument"
    assert await refused(client, "list_sessions", limit=-1) == (
        "list_sessions: limit: Input should be greater than or equal to 1 (got -1)"
    )
    many = await refused(client, "spawn_agent", working_dir="/", goalset=list(range(50)))
    assert "errors.pydantic.dev" not in many
    assert len(many.splitlines()) == 6 and many.endswith("... and 45 more problem(s)")
    odd_key = await refused(client, "list_agents", **{"x" * 5000 + "\nline": 1})
    assert len(odd_key) < 200 and "\n" not in odd_key
