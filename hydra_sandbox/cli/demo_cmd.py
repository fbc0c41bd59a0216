"""``hydra demo``: the whole loop on this machine, with no network and no API key.

It creates a small project with a failing test, starts Hydra in-process (the same MCP server, through
an in-memory MCP client), spawns an agent in a real sandbox, and shows its progress, the diff, the
checklist and a semantic search hit; then it applies the diff to the demo project and cleans up.
Without ``HYDRA_MODEL_API_KEY`` or ``HYDRA_MODEL_BASE_URL`` the agent is driven by a bundled *scripted
model*: a fixed list of replies, not a language model, so the demo needs no account.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hydra_sandbox.cli.output import console, shown, visible
from hydra_sandbox.model_credentials import find_model_key
from hydra_sandbox.settings import load_settings

PROJECT = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "README.md": "# calc\n\nA tiny project for the Hydra demo.\n",
}
DEMO_SCRIPT = {
    "label": "scripted demo model (not a real model)",
    "turns": [
        [{"exec": "python3 -m pytest -q || true"}],
        [{"exec": "sed -i 's/a - b/a + b/' calc.py && python3 -m pytest -q"}],
        [{"message": "Decision: the sign in add() was wrong. Summary: fixed calc.py; the test passes now."}],
    ],
}
TASK = "The test in test_calc.py fails. Find the bug, fix it, and run the tests."


async def _call(client: Any, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args, raise_on_error=False)
    if result.is_error:
        text = " ".join(getattr(b, "text", "") for b in result.content)
        raise typer.BadParameter(f"{tool} failed: {text}")
    return dict(result.structured_content or {})


async def _watch(client: Any, session_id: str) -> dict[str, Any]:
    """Print the agent's commands, tests and decisions as they happen; the finished session."""
    seen = 0
    with console.status("agent running…") as status:

        async def progress(value: float, total: float | None, message: str | None) -> None:
            status.update(message or "")

        waiting = asyncio.create_task(
            client.call_tool("wait_session", {"session_id": session_id, "timeout_s": 600}, progress_handler=progress)
        )
        while True:
            finished = waiting.done()  # one more read after the end shows the last events too
            tail = await _call(client, "tail_logs", session_id=session_id, since=seen)
            for event in tail["events"]:
                if event["type"] in {"command", "test", "decision", "checklist", "diff"}:
                    text = shown(event["text"][:110].replace("\n", " ⏎ "))
                    console.print(f"  [cyan]{shown(event['type']):<9}[/] {text}")
            seen = tail["next_since"]
            if finished and not tail["events"]:
                return dict((await waiting).structured_content or {})
            await asyncio.sleep(0.3)


async def _search(client: Any) -> None:
    """One semantic search; without the embedding model the server says what to install, and the demo
    goes on (search is the only part that needs the model)."""
    hits: list[dict[str, Any]] = []
    for _ in range(50):
        result = await client.call_tool(
            "search_context", {"query": "why did the add test fail?", "limit": 3}, raise_on_error=False
        )
        if result.is_error:
            text = " ".join(getattr(b, "text", "") for b in result.content)
            console.print(f"[yellow]search unavailable:[/] {escape(text)}", markup=True, highlight=False)
            return
        hits = (result.structured_content or {}).get("hits", [])
        if hits:
            break
        await asyncio.sleep(0.2)
    for hit in hits:
        text = shown(hit["text"][:100].replace("\n", " ⏎ "))
        console.print(f"  {hit['distance']:.3f}  {shown(hit['type']):<9} {text}")


async def _run(root: Path, base_url: str | None, model: str | None) -> None:
    from fastmcp import Client

    from hydra_sandbox.gc import collect_garbage
    from hydra_sandbox.mcp.app import build_server
    from hydra_sandbox.sandbox.backends import open_runtime
    from hydra_sandbox.sandbox.spec import home_label

    overrides: dict[str, Any] = {"data_home": root / "data"}
    if base_url:
        overrides["model_base_url"] = base_url
    if model:
        overrides["model"] = model
    settings = load_settings(**overrides)
    project = root / "project"
    try:
        async with Client(build_server(settings)) as client:
            console.rule("[bold]1. spawn an agent")
            spawned = await _call(client, "spawn_agent", working_dir=str(project), custom_prompt=TASK)
            session_id = spawned["session_id"]
            console.print(f"session [bold]{session_id}[/] {spawned['status']}; profile default, policy default")
            console.rule("[bold]2. watch it work")
            finished = await _watch(client, session_id)
            console.print(f"session ended: [bold]{finished['status']}[/]")
            console.rule("[bold]3. review the diff (nothing is written yet)")
            diff = await _call(client, "get_diff", session_id=session_id)
            console.print(visible(diff["unified"]) or "(no changes)", markup=False, highlight=False)
            console.rule("[bold]4. checklist and summary")
            for item in finished["session"].get("checklist", {}).get("items", []):
                mark = "[green]✓[/]" if item["done"] else "[red]✗[/]"
                console.print(f"  {mark} {shown(item['id'])}: {shown(item['description'])}")
            summary = (await _call(client, "summarize_session", session_id=session_id))["summary"]
            tests, files = summary.get("tests", {}), summary.get("files_changed", [])
            console.print(
                f"  tests: passed {tests.get('passed', 0)} time(s), failed {tests.get('failed', 0)} time(s); "
                f"files changed: {summary.get('files_changed_total', 0)} ({visible(', '.join(files))})",
                markup=False,
                highlight=False,
            )
            console.rule("[bold]5. semantic search over the record")
            await _search(client)
            if diff["files"]:
                console.rule("[bold]6. apply the diff to the demo project")
                applied = await _call(
                    client, "apply_diff", session_id=session_id, confirm=True, digest=diff["digest"]
                )
                console.print(visible(applied["message"]), markup=False)
                console.print((project / "calc.py").read_text(), markup=False)
    finally:
        report = await collect_garbage(open_runtime(settings), set(), home=home_label(settings.data_home))
        console.print(f"cleaned up: {report.total} Docker object(s) removed")


def demo(keep: bool = typer.Option(False, help="Keep the demo directory (project, journal, index).")) -> None:
    """Run the whole loop offline: spawn, progress, diff, checklist, search hit, apply, clean up."""
    from hydra_sandbox.scripted_model import Script, ScriptedModel

    root = Path(tempfile.mkdtemp(prefix="hydra-demo-"))
    os.chmod(root, 0o755)
    project = root / "project"
    project.mkdir()
    for name, text in PROJECT.items():
        (project / name).write_text(text)
    settings = load_settings()
    key = find_model_key(settings)
    real = key is not None or settings.model_base_url is not None

    async def main() -> None:
        if real:
            source = f"key from {key.source}" if key is not None else "no key"
            console.print(f"[bold]model:[/] the configured model ({source}; HYDRA_MODEL_BASE_URL to change it)")
            await _run(root, None, None)
            return
        script = Script.model_validate(DEMO_SCRIPT)
        console.print(f"[bold yellow]model: {script.label}[/] — set HYDRA_MODEL_API_KEY to use a real model")
        async with ScriptedModel(script) as model:
            await _run(root, model.base_url, "scripted-demo")

    try:
        asyncio.run(main())
    finally:
        if keep:
            console.print(f"demo files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
