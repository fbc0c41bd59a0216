"""Diff and apply over a hand-built overlay upper layer (whiteouts, opaque dirs, links), no Docker."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from hydra_sandbox.applying import apply_changes, link_inside
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import ApplyConflictError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.workspace import StagedWorkspace, hidden_paths
from tests.layer_kit import whiteout

POLICY = Policy(name="t", directory={"deny": ["secrets/**"]})


@pytest.fixture
def ws(tmp_path: Path) -> StagedWorkspace:
    src = tmp_path / "src"
    for rel, text in {
        "app.py": "a = 1\n",
        "old.txt": "same content\n",
        "gone.txt": "bye\n",
        "lib/x.py": "x\n",
        "lib/y.py": "y\n",
        ".env": "K=v\n",
        "run.sh": "echo\n",
    }.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    session = tmp_path / "session"
    upper = session / "upper"
    upper.mkdir(parents=True)
    (session / "work").mkdir()
    hidden = hidden_paths(src, POLICY.matcher)
    (session / "hidden.txt").write_text("\n".join(hidden))
    for rel in hidden:
        whiteout(upper / rel)
    started = time.time_ns()
    return StagedWorkspace(
        session_id="s1",
        source=src,
        lowers=[src],
        upper=upper,
        work=session / "work",
        volume_name="v",
        mode="overlay",
        agent_uid=os.getuid(),
        agent_gid=os.getgid(),
        started_at_ns=started,
    )


def agent_writes(ws: StagedWorkspace) -> None:
    up = ws.upper
    (up / "app.py").write_text("a = 2\n")  # modified
    (up / "new.py").write_text("print('new')\n")  # added
    whiteout(up / "gone.txt")  # deleted
    whiteout(up / "old.txt")  # renamed ...
    (up / "renamed.txt").write_text("same content\n")  # ... to here
    (up / "lib").mkdir()
    os.setxattr(up / "lib", "trusted.overlay.opaque", b"y")  # lib/ replaced wholesale
    (up / "lib" / "z.py").write_text("z\n")
    (up / "run.sh").write_text("echo\n")
    os.chmod(up / "run.sh", 0o755)  # mode change only
    (up / "inside").symlink_to("app.py")  # link inside the workspace
    (up / "passwd").symlink_to("/etc/passwd")  # link outside
    (up / "escape").symlink_to("../../outside")  # relative escape
    (up / ".env").unlink()  # the agent's write replaces the whiteout
    (up / ".env").write_text("K=stolen\n")  # protected
    (up / ".git").mkdir()
    (up / ".git" / "config").write_text("[core]\n")  # protected
    (up / "secrets").mkdir()
    (up / "secrets" / "k").write_text("no\n")  # denied


def test_diff_reports_each_kind_of_change(ws: StagedWorkspace) -> None:
    agent_writes(ws)
    preview = compute_diff(ws, POLICY)
    status = {f.path: f.status for f in preview.files}
    assert status["app.py"] == "modified" and status["new.py"] == "added" and status["gone.txt"] == "deleted"
    assert status["renamed.txt"] == "renamed"
    assert next(f for f in preview.files if f.path == "renamed.txt").old_path == "old.txt"
    assert "old.txt" not in status
    assert status["lib/z.py"] == "added" and status["lib/x.py"] == status["lib/y.py"] == "deleted"
    assert status["run.sh"] == "mode_changed" and status["inside"] == "symlink"
    assert "+a = 2" in preview.unified and "-a = 1" in preview.unified
    refused = {r.path: r.reason for r in preview.refused}
    assert refused[".env"] == "protected path" and refused[".git/config"] == "protected path"
    assert refused["secrets/k"] in {"denied by policy", "protected path"}
    assert preview.stats.files_changed == len(preview.files)


def test_hydras_own_whiteouts_are_not_deletions(ws: StagedWorkspace) -> None:
    assert ".env" in ws.hidden()
    preview = compute_diff(ws, POLICY)
    assert preview.files == [] and preview.refused == []


def test_secrets_in_paths_and_content_are_masked(ws: StagedWorkspace) -> None:
    (ws.upper / "sk-proj-NAMEINFILE.txt").write_text("token=sk-proj-CONTENT\n")
    preview = compute_diff(
        ws, POLICY, mask=lambda s: s.replace("sk-proj-NAMEINFILE", "[M]").replace("sk-proj-CONTENT", "[M]")
    )
    assert "sk-proj" not in preview.model_dump_json()


def test_apply_without_confirm_writes_nothing(ws: StagedWorkspace) -> None:
    agent_writes(ws)
    result = apply_changes(ws, POLICY, confirm=False)
    assert result.applied is False and "confirm=true" in result.message
    assert (ws.source / "app.py").read_text() == "a = 1\n"


def test_apply_writes_allowed_changes_and_refuses_escaping_links(ws: StagedWorkspace) -> None:
    agent_writes(ws)
    result = apply_changes(ws, POLICY, confirm=True)
    src = ws.source
    assert (src / "app.py").read_text() == "a = 2\n" and (src / "new.py").exists()
    assert not (src / "gone.txt").exists() and not (src / "old.txt").exists()
    assert (src / "renamed.txt").read_text() == "same content\n"
    assert os.readlink(src / "inside") == "app.py"
    assert not os.path.lexists(src / "passwd") and not os.path.lexists(src / "escape")
    assert (src / ".env").read_text() == "K=v\n" and not (src / "secrets").exists()
    assert stat.S_IMODE((src / "run.sh").stat().st_mode) == 0o755
    refused = {r.path for r in result.refused}
    assert {"passwd", "escape", ".env"} <= refused


def test_apply_strips_setuid_bits(ws: StagedWorkspace) -> None:
    (ws.upper / "tool").write_text("#!/bin/sh\n")
    os.chmod(ws.upper / "tool", 0o4755)
    apply_changes(ws, POLICY, confirm=True)
    assert stat.S_IMODE((ws.source / "tool").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    ("rel", "kind"), [(".git", "file"), ("lib/.git", "file"), (".vscode", "link"), (".codex", "link")]
)
def test_a_file_or_link_in_place_of_a_protected_directory_is_refused(ws: StagedWorkspace, rel: str, kind: str) -> None:
    """A ``.git`` file saying ``gitdir: evil`` (or a ``.vscode`` link) would hand host tools the agent's config."""
    (ws.upper / "evil").mkdir()
    (ws.upper / "evil" / "config").write_text("[core]\n\tfsmonitor = sh evil.sh\n")
    (ws.upper / rel).parent.mkdir(exist_ok=True)
    if kind == "file":
        (ws.upper / rel).write_text("gitdir: evil\n")
    else:
        (ws.upper / rel).symlink_to("evil")
    assert rel in {r.path for r in compute_diff(ws, POLICY).refused}
    result = apply_changes(ws, POLICY, confirm=True)
    assert rel in {r.path for r in result.refused} and not os.path.lexists(ws.source / rel)


def test_preview_refuses_links_leaving_the_workspace(ws: StagedWorkspace) -> None:
    """The preview shows what apply writes: an escaping link is refused there, not offered as a change."""
    (ws.upper / "passwd").symlink_to("/etc/passwd")
    (ws.upper / "escape").symlink_to("../../outside")
    (ws.upper / "inside").symlink_to("app.py")
    preview = compute_diff(ws, POLICY)
    assert [f.path for f in preview.files] == ["inside"]
    reasons = {r.path: r.reason for r in preview.refused}
    assert "outside the workspace" in reasons["passwd"] and "outside the workspace" in reasons["escape"]
    assert apply_changes(ws, POLICY, confirm=False).written == ["inside"]


def test_directories_nested_past_path_max_are_refused_not_crashed_on(ws: StagedWorkspace) -> None:
    fd = os.open(ws.upper, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(22):  # built with *at calls: no single call sees the whole path
        os.mkdir(f"d{i:02d}" + "x" * 200, dir_fd=fd)
        child = os.open(f"d{i:02d}" + "x" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("deep.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    preview = compute_diff(ws, POLICY)
    assert preview.files == [] and any("longer than" in r.reason for r in preview.refused)
    assert apply_changes(ws, POLICY, confirm=True).written == []
    assert not any(p.name.startswith("d00") for p in ws.source.iterdir())


def test_apply_refuses_when_the_host_file_changed_since_start(ws: StagedWorkspace) -> None:
    agent_writes(ws)
    time.sleep(0.01)  # mtime granularity: the host edit must be strictly after the session start
    (ws.source / "app.py").write_text("a = 100\n")
    with pytest.raises(ApplyConflictError, match="app.py"):
        apply_changes(ws, POLICY, confirm=True)
    assert not (ws.source / "new.py").exists(), "nothing is written when any file conflicts"


def test_apply_never_writes_through_a_host_symlinked_directory(ws: StagedWorkspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.upper / "docs").mkdir()
    (ws.upper / "docs" / "a.md").write_text("x\n")
    os.symlink(outside, ws.source / "docs")
    os.utime(ws.source / "docs", ns=(ws.started_at_ns - 10, ws.started_at_ns - 10), follow_symlinks=False)
    with pytest.raises(ApplyConflictError, match="symbolic link"):
        apply_changes(ws, POLICY, confirm=True)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("rel", "target", "expected"),
    [
        ("a/link", "../b.txt", "../b.txt"),
        ("link", "/workspace/src/x", "src/x"),
        ("link", "/etc/passwd", None),
        ("a/link", "../../x", None),
        ("link", "/workspace/../etc", None),
        ("link", ".", None),
    ],
)
def test_link_targets_must_stay_inside_the_workspace(rel: str, target: str, expected: str | None) -> None:
    assert link_inside(rel, target) == expected


def test_a_file_in_place_of_a_host_directory_refuses_the_whole_apply_before_writing(ws: StagedWorkspace) -> None:
    (ws.upper / "app.py").write_text("a = 2\n")  # an ordinary change that must not be half-applied
    (ws.upper / "lib").write_text("now a file\n")  # the agent replaced the directory lib/ with a file
    with pytest.raises(ApplyConflictError, match=r"replaced 1 host directorie\(s\) with a file or link: lib"):
        apply_changes(ws, POLICY, confirm=True)
    assert (ws.source / "app.py").read_text() == "a = 1\n", "something was written before the refusal"
    assert (ws.source / "lib" / "x.py").read_text() == "x\n"
