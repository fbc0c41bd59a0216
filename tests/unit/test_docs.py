"""The docs cannot drift: every tool-call example in docs/tool_catalog.md runs against the server,
and the catalog names every tool, argument, resource and prompt the server really has."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from hydra_sandbox.settings import REPO_ROOT, load_settings
from tests.hydra_server import serve

CATALOG = REPO_ROOT / "docs" / "tool_catalog.md"
JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.S)


def tool_examples(text: str) -> list[dict[str, Any]]:
    examples = [json.loads(block) for block in JSON_BLOCK.findall(text)]
    return [e for e in examples if "tool" in e]


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    async with serve(load_settings()) as hydra:
        yield hydra.client


def _fill(value: Any, known: dict[str, str]) -> Any:
    """``<working_dir>``, ``<session_id>`` and ``<digest>`` (of the last get_diff) filled in."""
    if isinstance(value, str):
        for name in ("working_dir", "session_id", "digest"):
            if f"<{name}>" in value:
                assert name in known, f"an example uses <{name}> before any example returned one"
                value = value.replace(f"<{name}>", known[name])
        return value
    if isinstance(value, dict):
        return {k: _fill(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, known) for v in value]
    return value


async def test_every_tool_call_example_in_the_catalog_runs_as_documented(client: Client, tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "app.py").write_text("x = 1\n")
    examples = tool_examples(CATALOG.read_text())
    assert len(examples) >= 12
    known = {"working_dir": str(workdir)}
    for example in examples:
        args = _fill(example["arguments"], known)
        if example["tool"] == "apply_diff" or example["tool"] == "get_diff":
            await client.call_tool("wait_session", {"session_id": args["session_id"], "timeout_s": 30})
        result = await client.call_tool(example["tool"], args, raise_on_error=False)
        text = " ".join(getattr(b, "text", "") for b in result.content)
        if "expect_error" in example:
            assert result.is_error and example["expect_error"] in text, (example, text)
            continue
        assert not result.is_error, (example, text)
        structured = result.structured_content or {}
        if example["tool"] == "spawn_agent":
            known["session_id"] = structured["session_id"]
        if example["tool"] == "get_diff":
            known["digest"] = structured["digest"]


async def test_the_catalog_names_every_tool_argument_resource_and_prompt(client: Client) -> None:
    text = CATALOG.read_text()
    for tool in await client.list_tools():
        assert f"### `{tool.name}`" in text, f"tool {tool.name} is not in {CATALOG.name}"
        section = text.split(f"### `{tool.name}`", 1)[1].split("\n### ", 1)[0]
        for argument in tool.input_schema.get("properties", {}):
            shown = f"`{argument}`" in section or f'"{argument}":' in section
            assert shown, f"{tool.name}({argument}) is not documented"
    for resource in await client.list_resources():
        assert f"`{resource.uri}`" in text
    for template in await client.list_resource_templates():
        assert f"`{template.uri_template}`" in text
    for prompt in await client.list_prompts():
        assert f"`{prompt.name}" in text, f"prompt {prompt.name} is not documented"


def authority_table() -> str:
    """The principal x component table as the docs must show it, rendered from the authority module."""
    from hydra_sandbox.authority import COMPONENTS, Role

    lines = ["| component | kind | action | operator | agent | what an agent reaches |", "|---|---|---|---|---|---|"]
    for c in COMPONENTS:
        operator = "yes" if Role.OPERATOR in c.roles else "no"
        agent = "yes" if Role.AGENT in c.roles else "**no**"
        lines.append(f"| `{c.key}` | {c.kind.value} | {c.action.value} | {operator} | {agent} | {c.agent_scope} |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("doc", ["security.md", "architecture.md"])
def test_the_docs_show_the_authority_table_the_code_enforces(doc: str) -> None:
    text = (REPO_ROOT / "docs" / doc).read_text()
    assert authority_table() in text, f"docs/{doc}: the principal x component table differs from authority.COMPONENTS"
