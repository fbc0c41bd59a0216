"""Files changed come from the session's change set (what the diff preview shows), not from what the
agent's events claim: summaries, the ``file_changed`` checklist rule and the session view."""

from __future__ import annotations

from pathlib import Path

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.events import EventDraft
from hydra_sandbox.orchestration.spawning import SpawnRequest
from tests.fake_sandbox import FakeRun, FakeSandbox, command
from tests.manager_kit import finish, manager_over

PROFILE = """
id: file_watcher
title: File watcher
description: Proves a change to calc.py.
persona: p
system_prompt: s
checklist_template:
  - id: calc_changed
    description: calc.py was changed.
    rule: {kind: file_changed, glob: "calc.py"}
  - id: ghost_changed
    description: ghost.py was changed.
    rule: {kind: file_changed, glob: "ghost.py"}
"""


def _claimed(path: str) -> EventDraft:
    """What Codex says it wrote (a ``file_change`` item), true or not."""
    return EventDraft(type="diff", text=f"files changed: {path}", related_files=[path], data={"changes": []})


async def test_files_changed_by_commands_count_and_claimed_files_that_did_not_change_do_not(
    tmp_path: Path,
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "file_watcher.yaml").write_text(PROFILE)
    workdir = tmp_path / "repo"
    workdir.mkdir()
    (workdir / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (tmp_path / "layers").mkdir()
    sandbox = FakeSandbox(layers=tmp_path / "layers")
    # The agent changes calc.py with sed (no file_change item) and claims a write to ghost.py it never made.
    sandbox.script(
        "SED",
        FakeRun(
            drafts=[command("sed -i 's/-/+/' calc.py"), _claimed("ghost.py")],
            files={"calc.py": "def add(a, b):\n    return a + b\n"},
        ),
    )
    manager = manager_over(tmp_path / "data", sandbox, profile_dirs=[profiles])
    await manager.start()
    try:
        spawned = await manager.spawn(
            SpawnRequest(working_dir=str(workdir), profile_id="file_watcher", custom_prompt="SED"), principal=OPERATOR
        )
        session_id = spawned.session["session_id"]
        await finish(manager, session_id)
        events = await manager.events(session_id)
        change_set = next(e for e in events if e.type == "diff" and e.data.get("change_set"))
        assert change_set.related_files == ["calc.py"] and change_set.data["files_total"] == 1
        final = next(e for e in events if e.type == "summary" and e.data["final"])
        assert final.data["files_changed"] == ["calc.py"] and final.data["files_changed_total"] == 1
        assert "1 file(s) changed" in final.text
        checklist = manager.recorder.checklist(session_id)
        assert checklist is not None
        assert checklist.is_done("calc_changed") and not checklist.is_done("ghost_changed")
        assert manager.get(session_id, OPERATOR).public()["files_changed"] == ["calc.py"]
    finally:
        await manager.close()
