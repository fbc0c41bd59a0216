"""Limits on what a caller can make Hydra hold: each refusal names the argument, the limit and what was
given, and the record keeps working (tags used to break the index for good at about 10,000)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.errors import LimitExceededError
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.limits import (
    MAX_GLOB_CHARS,
    MAX_GLOBS,
    MAX_GOAL_CHARS,
    MAX_GOALS,
    MAX_INPUT_BYTES,
    MAX_INPUT_DEPTH,
    MAX_PAGE_BYTES,
    MAX_PAGE_EVENTS,
    MAX_PROMPT_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    check_structure,
    check_tags,
)
from hydra_sandbox.services import Services
from hydra_sandbox.settings import load_settings
from tests.hydra_server import serve


@pytest.fixture
async def hydra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Client, Services]]:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    async with serve(load_settings()) as served:
        yield served.client, served.services


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, name: str, **args: Any) -> str:
    result = await client.call_tool(name, args, raise_on_error=False)
    assert result.is_error, f"{name} was not refused"
    return " ".join(getattr(block, "text", "") for block in result.content)


async def eventually(predicate: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


async def test_ten_thousand_tags_on_a_note_are_refused_naming_the_limit(hydra: tuple[Client, Services]) -> None:
    client, services = hydra
    text = await refused(client, "log_context", note="flood", tags=[f"t{i}" for i in range(10_000)])
    assert "log_context.tags" in text and f"limit is {MAX_TAGS}" in text and "10000 tags given" in text
    assert services.journal.count() == 0  # nothing reached the journal


async def test_a_tag_longer_than_the_limit_is_refused_with_its_index(hydra: tuple[Client, Services]) -> None:
    client, _ = hydra
    text = await refused(client, "log_context", note="n", tags=["ok", "x" * (MAX_TAG_CHARS + 1)])
    assert "log_context.tags[1]" in text and f"1 to {MAX_TAG_CHARS}" in text


async def test_search_context_filters_by_tags_and_limits_them(hydra: tuple[Client, Services]) -> None:
    client, services = hydra
    await call(client, "log_context", note="we chose postgres for the ledger", tags=["decision", "db"])
    await call(client, "log_context", note="postgres is slow on this laptop", tags=["observation"])

    async def both_indexed() -> bool:
        return services.indexer.lag() == 0

    await eventually(both_indexed)
    hits = (await call(client, "search_context", query="postgres", tags=["decision"]))["hits"]
    assert [h["metadata"]["tags"] for h in hits] == [["decision", "db"]]
    assert (await call(client, "search_context", query="postgres", tags=["decision", "observation"]))["hits"] == []
    text = await refused(client, "search_context", query="x", tags=[str(i) for i in range(MAX_TAGS + 1)])
    assert "search_context.tags" in text and f"limit is {MAX_TAGS}" in text


async def test_status_shows_events_the_index_set_aside_and_why(hydra: tuple[Client, Services]) -> None:
    client, services = hydra
    draft = EventDraft(type="note", text="imported flood", tags=[f"t{i}" for i in range(10_000)])
    flood = services.journal.append(SessionRef(session_id="host"), draft)  # as an import or an old version could
    services.indexer.notify()

    async def set_aside() -> bool:
        return services.indexer.set_aside_count() == 1

    await eventually(set_aside)
    status = (await client.read_resource("hydra://status"))[0].text
    assert '"set_aside": 1' in status and flood.id in status and "10000 tags" in status


def test_limit_errors_name_argument_limit_and_given_size() -> None:
    with pytest.raises(LimitExceededError, match=r"inputs: 70\d\d\d bytes of JSON given, the limit is 65536"):
        check_structure("inputs", {"blob": "x" * 70_000})
    deep: Any = "leaf"
    for _ in range(40):
        deep = [deep]
    with pytest.raises(LimitExceededError, match="inputs: nested more than 16 levels deep"):
        check_structure("inputs", deep)
    with pytest.raises(LimitExceededError, match=r"tags\[0\]: tag '' has 0 characters"):
        check_tags("tags", [""])
    check_tags("tags", ["a" * MAX_TAG_CHARS] * MAX_TAGS)


async def test_spawn_agent_refuses_oversized_goalsets_inputs_and_globs_naming_each(
    hydra: tuple[Client, Services], tmp_path: Path
) -> None:
    client, services = hydra
    workdir = tmp_path / "repo"
    workdir.mkdir()
    base = {"working_dir": str(workdir)}
    text = await refused(client, "spawn_agent", **base, goalset=["g"] * (MAX_GOALS + 1))
    assert "goalset" in text and str(MAX_GOALS) in text
    text = await refused(client, "spawn_agent", **base, goalset=["g" * (MAX_GOAL_CHARS + 1)])
    assert "goalset" in text and str(MAX_GOAL_CHARS) in text
    text = await refused(client, "spawn_agent", **base, inputs={"blob": "x" * (MAX_INPUT_BYTES + 10)})
    assert "inputs" in text and f"the limit is {MAX_INPUT_BYTES}" in text
    deep: Any = 1
    for _ in range(MAX_INPUT_DEPTH + 5):
        deep = {"d": deep}
    assert f"nested more than {MAX_INPUT_DEPTH} levels" in await refused(client, "spawn_agent", **base, inputs=deep)
    many = {"directory": {"deny": [f"d{i}/**" for i in range(MAX_GLOBS + 1)]}}
    text = await refused(client, "spawn_agent", **base, policy=many)
    assert "policy.directory.deny" in text and f"limit is {MAX_GLOBS}" in text
    long = {"directory": {"deny": ["a" * (MAX_GLOB_CHARS + 1)]}}
    assert f"the limit is {MAX_GLOB_CHARS}" in await refused(client, "spawn_agent", **base, policy=long)
    assert services.manager.list_sessions(OPERATOR, limit=10) == []  # nothing was started


async def test_resume_refuses_a_prompt_over_the_limit(hydra: tuple[Client, Services]) -> None:
    client, _ = hydra
    text = await refused(client, "resume_session", session_id="s-x", prompt="p" * (MAX_PROMPT_CHARS + 1))
    assert "prompt" in text and str(MAX_PROMPT_CHARS) in text


async def flood_session(client: Client, services: Services, workdir: Path, lines: int) -> tuple[str, int]:
    """A finished session that then got ``lines`` tiny output events; its id and its event count."""
    workdir.mkdir()
    session_id = (await call(client, "spawn_agent", working_dir=str(workdir)))["session_id"]
    await call(client, "wait_session", session_id=session_id, timeout_s=30)
    ref = SessionRef(session_id=session_id)
    drafts = [EventDraft(type="message", text=".", tags=["stderr"]) for _ in range(5_000)]
    for _ in range(lines // 5_000):
        services.journal.append_many(ref, drafts)
    return session_id, (services.journal.last_counter(session_id) or 0) + 1


async def test_a_session_resource_of_a_huge_session_is_one_bounded_page_with_a_cursor(
    hydra: tuple[Client, Services], tmp_path: Path
) -> None:
    client, services = hydra
    session_id, total = await flood_session(client, services, tmp_path / "repo", 20_000)
    text = (await client.read_resource(f"hydra://sessions/{session_id}"))[0].text
    body = json.loads(text)
    assert body["session"]["session_id"] == session_id
    assert len(body["timeline"]) == MAX_PAGE_EVENTS and body["timeline_more"] is True
    assert body["timeline_next_since"] == MAX_PAGE_EVENTS and len(text) < 2 * MAX_PAGE_BYTES
    seen, since = 0, 0
    while True:  # tail_logs follows the cursor to the end, every event once, in order
        page = await call(client, "tail_logs", session_id=session_id, since=since, limit=MAX_PAGE_EVENTS)
        assert [e["counter"] for e in page["events"]] == list(range(since, since + len(page["events"])))
        seen += len(page["events"])
        since = page["next_since"]
        if not page["more"]:
            break
    assert seen == total and since == total
    waited = await call(client, "wait_session", session_id=session_id, timeout_s=1)
    assert [e["counter"] for e in waited["last_events"]] == list(range(total - 10, total))


async def test_a_tail_logs_page_ends_early_at_the_byte_limit(hydra: tuple[Client, Services]) -> None:
    _, services = hydra
    ref = SessionRef(session_id="s-big")
    services.journal.append_many(ref, [EventDraft(type="message", text="x" * 300_000) for _ in range(10)])
    events, more = services.journal.page("s-big", 0, MAX_PAGE_EVENTS, MAX_PAGE_BYTES)
    assert len(events) == MAX_PAGE_BYTES // 300_000 and more is True
    huge = EventDraft(type="message", text="y" * (MAX_PAGE_BYTES + 10))
    services.journal.append(SessionRef(session_id="s-huge"), huge)
    events, more = services.journal.page("s-huge", 0, MAX_PAGE_EVENTS, MAX_PAGE_BYTES)
    assert len(events) == 1 and more is False  # one event at least, so the cursor always moves


def test_hydra_search_passes_every_tag_option_to_search_context(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from hydra_sandbox.cli import app, ops_cmd

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((tool, args))
        return {"hits": [], "index_lag": 0}

    monkeypatch.setattr(ops_cmd, "server_call", fake_call)
    result = CliRunner().invoke(app, ["search", "postgres", "--tag", "decision", "--tag", "db", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [("search_context", {"query": "postgres", "limit": 10, "tags": ["decision", "db"]})]
