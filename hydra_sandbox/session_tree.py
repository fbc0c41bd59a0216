"""The delegation tree of a session: each node's status, test verdicts, checklist and changed files.

Built from session records (the manager's, or the journal's sessions table for the CLI) and the
journal's ``test`` events, so ``hydra://sessions/{id}/tree`` and ``hydra sessions tree ID`` agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from hydra_sandbox.journal import Journal

MAX_NODES = 500


class TestVerdicts(BaseModel):
    """A session's test runs: how many passed and failed, and the verdict of the last one."""

    __test__ = False

    passed: int = 0
    failed: int = 0
    last: str | None = None


class TreeNode(BaseModel):
    session_id: str
    status: str
    profile_id: str
    relationship: str | None = None
    depth: int = 0
    task: str | None = None
    tests: TestVerdicts = Field(default_factory=TestVerdicts)
    checklist_done: int = 0
    checklist_total: int = 0
    files_changed: list[str] = Field(default_factory=list)
    children: list[TreeNode] = Field(default_factory=list)
    children_not_shown: int = Field(default=0, description="Children left out past the tree's size limit.")


def test_verdicts(journal: Journal, session_id: str) -> TestVerdicts:
    verdicts = TestVerdicts()
    for event in journal.events_of_type(session_id, "test"):
        passed = event.data.get("passed") is True
        verdicts.passed += passed
        verdicts.failed += not passed
        verdicts.last = str(event.data.get("verdict") or ("passed" if passed else "failed"))
    return verdicts


def _node(record: dict[str, Any], journal: Journal) -> TreeNode:
    items = (record.get("checklist") or {}).get("items") or []
    return TreeNode(
        session_id=record["session_id"],
        status=str(record.get("status")),
        profile_id=str(record.get("profile_id")),
        relationship=record.get("relationship"),
        depth=int(record.get("depth") or 0),
        task=(record.get("task") or "")[:200] or None,
        tests=test_verdicts(journal, record["session_id"]),
        checklist_done=sum(1 for i in items if isinstance(i, dict) and i.get("done")),
        checklist_total=len(items),
        files_changed=list(record.get("files_changed") or []),
    )


def build_tree(session_id: str, load: Callable[[str], dict[str, Any] | None], journal: Journal) -> TreeNode | None:
    """The tree under ``session_id`` (``load`` gives a session record as a dict), breadth first, at
    most :data:`MAX_NODES` nodes; ``None`` if the session is unknown."""
    record = load(session_id)
    if record is None:
        return None
    root = _node(record, journal)
    queue: list[tuple[TreeNode, dict[str, Any]]] = [(root, record)]
    seen, count = {session_id}, 1
    while queue:
        node, data = queue.pop(0)
        for child_id in data.get("children") or []:
            child = load(child_id) if child_id not in seen else None
            if child is None:
                continue
            if count >= MAX_NODES:
                node.children_not_shown += 1
                continue
            seen.add(child_id)
            count += 1
            child_node = _node(child, journal)
            node.children.append(child_node)
            queue.append((child_node, child))
    return root


def render_lines(node: TreeNode, prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    """The tree as text lines (``hydra sessions tree``)."""
    tests = node.tests
    verdict = f"tests {tests.passed} passed/{tests.failed} failed" + (f", last {tests.last}" if tests.last else "")
    files = f"{len(node.files_changed)} file(s) changed"
    line = (
        f"{node.session_id} [{node.status}] {node.profile_id}: {verdict}; "
        f"checklist {node.checklist_done}/{node.checklist_total}; {files}"
    )
    lines = [line if top else f"{prefix}{'└── ' if last else '├── '}{line}"]
    child_prefix = "" if top else prefix + ("    " if last else "│   ")
    for index, child in enumerate(node.children):
        lines += render_lines(child, child_prefix, index == len(node.children) - 1, top=False)
    if node.children_not_shown:
        lines.append(f"{child_prefix}└── … {node.children_not_shown} more child session(s) not shown")
    return lines
