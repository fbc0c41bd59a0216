"""Delegate a change to a `coder` agent, let it ask a `code_reviewer` for a review, and apply the
change only when the review approved it: the manager / coder / reviewer loop of
docs/multiagent_workflow.md, as an MCP client script.

    python examples/delegate_and_review.py /abs/path/to/project "Fix add() in src/calc.py" [--apply]

By default it starts Hydra itself over stdio (`python -m hydra_sandbox serve`, configured by the
HYDRA_* environment as usual). With --url it talks to a running server over streamable HTTP and takes
the bearer token from HYDRA_HTTP_TOKEN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise SystemExit(f"{tool} failed: {text}")
    return result.structured_content or {}


async def progress(value: float, total: float | None, message: str | None) -> None:
    print(f"  … {message}", flush=True)


async def run(client: Client, working_dir: str, task: str, apply: bool) -> int:
    coder = await call(client, "spawn_agent", working_dir=working_dir, profile_id="coder", custom_prompt=task)
    coder_id = coder["session_id"]
    print(f"spawned coder {coder_id} ({coder['status']})")
    waited = await client.call_tool(
        "wait_session", {"session_id": coder_id, "timeout_s": 900}, progress_handler=progress
    )
    status = (waited.structured_content or {}).get("status")
    print(f"coder {coder_id}: {status}")
    if status != "awaiting_approval":
        print("the coder did not finish with a change; see `hydra sessions logs " + coder_id + "`")
        return 1

    for event in (await call(client, "tail_logs", session_id=coder_id, limit=1000))["events"]:
        if "mcp" in event.get("tags", []) and event["data"].get("mcp"):
            try:
                item = json.loads(event["data"]["mcp"])
            except json.JSONDecodeError:  # a very long call is recorded truncated
                continue
            error = (item.get("error") or {}).get("message")
            if not error and item.get("status") == "failed":
                content = (item.get("result") or {}).get("content") or []
                error = " ".join(str(block.get("text", "")) for block in content)
            outcome = f"refused: {error}" if error else item.get("status")
            print(f"  coder called hydra.{item.get('tool')}: {outcome}")

    reviews = (await call(client, "list_sessions", parent_session_id=coder_id, profile_id="code_reviewer"))["sessions"]
    for review in reviews:
        done = await call(client, "wait_session", session_id=review["session_id"], timeout_s=900)
        items = done["session"].get("checklist", {}).get("items", [])
        marks = ", ".join(f"{i['id']}={'yes' if i['done'] else 'no'}" for i in items)
        print(f"reviewer {review['session_id']}: {done['status']} ({marks})")

    diff = await call(client, "get_diff", session_id=coder_id)
    print(f"diff: {len(diff['files'])} file(s), {len(diff['refused'])} refused write(s)")
    for change in diff["files"]:
        print(f"  {change['status']:>9}  {change['path']}")
    print(diff["unified"])
    if not apply:
        print("not applied; run again with --apply, or `hydra sessions apply " + coder_id + "`")
        return 0
    applied = await client.call_tool(
        "apply_diff", {"session_id": coder_id, "confirm": True, "digest": diff["digest"]}, raise_on_error=False
    )
    if applied.is_error:
        print("apply refused: " + " ".join(getattr(b, "text", "") for b in applied.content))
        return 2
    result = applied.structured_content or {}
    print(f"applied: {result.get('message')} (written: {', '.join(result.get('written', []))})")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("working_dir")
    parser.add_argument("task")
    parser.add_argument("--apply", action="store_true", help="apply the diff when the review approved it")
    parser.add_argument("--url", help="a running server's streamable HTTP URL, e.g. http://127.0.0.1:8765/mcp")
    args = parser.parse_args()
    if args.url:
        transport: Any = StreamableHttpTransport(args.url, auth=os.environ.get("HYDRA_HTTP_TOKEN"))
    else:
        transport = StdioTransport(command=sys.executable, args=["-m", "hydra_sandbox", "serve"], env=dict(os.environ))

    async def session() -> int:
        async with Client(transport, timeout=1200) as client:
            return await run(client, os.path.abspath(args.working_dir), args.task, args.apply)

    sys.exit(asyncio.run(session()))


if __name__ == "__main__":
    main()
