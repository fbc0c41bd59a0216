"""The delegation graph, queried: search_context's graph filters and the tree resource over the MCP
server (fake sandbox, in-memory store), and ``hydra sessions tree`` over the same journal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from typer.testing import CliRunner

from hydra_sandbox.settings import HydraSettings, load_settings
from tests.fake_sandbox import FakeRun, FakeSandbox, command, ran_tests
from tests.hydra_server import serve
from tests.mcp_calls import call


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    return load_settings()


async def search_until(client: Client, expected: set[str], **args: Any) -> set[str]:
    """The sessions of the hits, once the index has caught up with every expected session."""
    loop = asyncio.get_running_loop()
    deadline, sessions = loop.time() + 15, set()
    while loop.time() < deadline:
        hits = (await call(client, "search_context", query="pytest review fix", limit=100, **args))["hits"]
        sessions = {h["session_id"] for h in hits}
        if sessions >= expected:
            return sessions
        await asyncio.sleep(0.05)
    return sessions


async def test_graph_filters_and_the_tree_over_the_server(settings: HydraSettings, tmp_path: Path) -> None:
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "app.py").write_text("x = 1\n")
    sandbox = FakeSandbox()
    sandbox.script("REVIEW", FakeRun(drafts=[command("pytest -q", 1, "1 failed"), ran_tests(False)], changes=[]))
    async with serve(settings, sandbox) as hydra:
        client = hydra.client

        async def spawn(prompt: str, parent: str | None = None, profile: str = "default") -> str:
            args: dict[str, Any] = {"working_dir": str(workdir), "custom_prompt": prompt, "profile_id": profile}
            if parent:
                args["parent_session_id"] = parent
            session_id = (await call(client, "spawn_agent", **args))["session_id"]
            await call(client, "wait_session", session_id=session_id, timeout_s=10)
            return str(session_id)

        root = await spawn("fix it")
        review = await spawn("REVIEW the fix", parent=root, profile="code_reviewer")
        fix = await spawn("fix what the review found", parent=review)
        other = await spawn("an unrelated task")

        assert await search_until(client, {root, review, fix}, root_session_id=root) == {root, review, fix}
        assert await search_until(client, {review, fix}, subtree_of=review) == {review, fix}
        assert await search_until(client, {fix}, parent_session_id=review) == {fix}
        assert await search_until(client, {root, other}, depth=0) == {root, other}
        reviewers = await search_until(
            client, {review}, profile_id="code_reviewer", session_status="completed", event_type="summary"
        )
        assert reviewers == {review}
        assert await search_until(client, set(), until="2000-01-01T00:00:00Z") == set()

        refused = await client.call_tool(
            "search_context", {"query": "x", "session_status": "dancing"}, raise_on_error=False
        )
        assert refused.is_error and "valid: queued" in refused.content[0].text  # type: ignore[union-attr]

        tree = json.loads((await client.read_resource(f"hydra://sessions/{root}/tree"))[0].text)
        assert tree["session_id"] == root and tree["status"] == "awaiting_approval"
        assert tree["tests"] == {"passed": 1, "failed": 0, "last": "passed"} and tree["files_changed"] == ["app.py"]
        (child,) = tree["children"]
        assert child["session_id"] == review and child["status"] == "completed"
        assert child["profile_id"] == "code_reviewer"
        assert child["tests"]["failed"] == 1 and child["tests"]["last"] == "failed" and child["files_changed"] == []
        assert [g["session_id"] for g in child["children"]] == [fix]
        assert child["checklist_total"] >= 1

    from hydra_sandbox.cli import app

    shown = CliRunner().invoke(app, ["sessions", "tree", root])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"{root} [awaiting_approval] default: tests 1 passed/0 failed")
    assert f"└── {review} [completed] code_reviewer: tests 0 passed/1 failed, last failed" in lines[1]
    assert lines[2].strip().startswith(f"└── {fix} [awaiting_approval]")
    as_json = json.loads(CliRunner().invoke(app, ["sessions", "tree", root, "--json"]).output)
    assert as_json["children"][0]["children"][0]["session_id"] == fix
