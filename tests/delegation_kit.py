"""What the Docker tests of a parent agent and its child share: a byte-exact picture of the host tree,
and running the parent (which spawns one child) to its end through the operator's tools."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from fastmcp import Client

from tests.mcp_calls import call

TreeSnapshot = dict[str, tuple[int, bytes | str]]


def snapshot(root: Path) -> TreeSnapshot:
    """Every path under ``root``: its mode, and its bytes (a file) or target (a link)."""
    out: TreeSnapshot = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content: bytes | str = b""
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            content = path.read_bytes()
        out[str(path.relative_to(root))] = (st.st_mode, content)
    return out


async def parent_and_its_one_child(
    client: Client, repo: Path, prompt: str
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Spawn the parent with ``prompt`` and wait for its end; its id, its timeline, and its one child
    (which must be awaiting approval with its diff pending)."""
    parent = await call(client, "spawn_agent", working_dir=str(repo), custom_prompt=prompt)
    waited = await call(client, "wait_session", session_id=parent["session_id"], timeout_s=400)
    assert waited["session"]["status"] not in {"queued", "starting", "running"}, json.dumps(waited)[:2000]
    timeline = (await call(client, "tail_logs", session_id=parent["session_id"], limit=1000))["events"]
    children = (await call(client, "list_sessions", parent_session_id=parent["session_id"]))["sessions"]
    assert len(children) == 1, json.dumps(timeline)[-4000:]
    child = children[0]
    assert child["status"] == "awaiting_approval" and child["diff_state"] == "pending", child
    return str(parent["session_id"]), timeline, child
