"""What apply promises about the host side, at each exact boundary: which host edits count as a
conflict, the modes of the directories and files it creates, what it refuses before writing anything,
what it reports, and what it does when the host fails under it (hand-built layers, no Docker)."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

import hydra_sandbox.applying as applying
from hydra_sandbox.applying import ApplyResult, apply_changes, check_reviewed
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import ApplyConflictError, PolicyViolation, WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.preview import DiffPreview, FileChange
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from tests.layer_kit import staged_workspace, whiteout

POLICY = Policy(name="t")


@pytest.fixture
def ws(tmp_path: Path) -> StagedWorkspace:
    src = tmp_path / "host"
    for rel, text in {"app.py": "a = 1\n", "old.txt": "moved\n", "gone.txt": "bye\n", "lib/x.py": "x\n"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return staged_workspace(tmp_path / "session", src, session_id="s-apply")


def test_a_host_file_touched_exactly_at_the_session_start_is_no_conflict_one_nanosecond_later_is(
    ws: StagedWorkspace,
) -> None:
    (ws.upper / "app.py").write_text("a = 2\n")
    host = ws.source / "app.py"
    later = time.time_ns() + 10**9  # in the future, so the ctime the call sets stays below it
    os.utime(host, ns=(later, later))
    assert os.lstat(host).st_ctime_ns < later
    at_start = ws.model_copy(update={"started_at_ns": later})
    assert apply_changes(at_start, POLICY, confirm=True).written == ["app.py"]
    (ws.upper / "app.py").write_text("a = 3\n")
    os.utime(host, ns=(later + 1, later + 1))
    with pytest.raises(ApplyConflictError, match="1 file\\(s\\) changed on the host since the session started: app.py"):
        apply_changes(at_start, POLICY, confirm=True)


def test_a_host_file_whose_ctime_is_at_the_session_start_is_no_conflict_and_past_it_is(ws: StagedWorkspace) -> None:
    (ws.upper / "app.py").write_text("a = 2\n")
    host = ws.source / "app.py"
    os.utime(host, ns=(1, 1))  # an old mtime, but the ctime is now
    ctime = os.lstat(host).st_ctime_ns
    assert apply_changes(ws.model_copy(update={"started_at_ns": ctime}), POLICY, confirm=True).written == ["app.py"]
    (ws.upper / "app.py").write_text("a = 3\n")
    os.utime(host, ns=(1, 1))  # the mtime stays old: only the ctime is past the start below
    just_before = os.lstat(host).st_ctime_ns - 1
    with pytest.raises(ApplyConflictError, match="app.py"):
        apply_changes(ws.model_copy(update={"started_at_ns": just_before}), POLICY, confirm=True)


def test_a_renamed_file_conflicts_when_its_old_host_path_changed(ws: StagedWorkspace) -> None:
    whiteout(ws.upper / "old.txt")
    (ws.upper / "new.txt").write_text("moved\n")
    assert [(f.path, f.old_path) for f in compute_diff(ws, POLICY).files] == [("new.txt", "old.txt")]
    os.utime(ws.source / "old.txt", ns=(ws.started_at_ns + 5, ws.started_at_ns + 5))
    with pytest.raises(ApplyConflictError, match="changed on the host since the session started: old.txt"):
        apply_changes(ws, POLICY, confirm=True)
    assert not (ws.source / "new.txt").exists()


def test_conflicts_are_counted_and_listed_sorted(ws: StagedWorkspace) -> None:
    for name in ("b.txt", "a.txt", "c.txt"):
        (ws.source / name).write_text("host\n")
        (ws.upper / name).write_text("agent\n")
    ws = ws.model_copy(update={"started_at_ns": 0})
    with pytest.raises(ApplyConflictError) as info:
        apply_changes(ws, POLICY, confirm=True)
    assert info.value.message == (
        "session s-apply: 3 file(s) changed on the host since the session started: a.txt, b.txt, c.txt"
    )
    assert info.value.hint == "discard the diff, or resume the session so the agent works on the new files"


def test_new_host_directories_take_the_agents_mode_but_never_group_or_world_write(ws: StagedWorkspace) -> None:
    for rel, mode in {"open": 0o777, "open/private": 0o700, "shared": 0o775}.items():
        (ws.upper / rel).mkdir()
        os.chmod(ws.upper / rel, mode)
    (ws.upper / "open" / "private" / "f.txt").write_text("x\n")
    (ws.upper / "shared" / "g.txt").write_text("y\n")
    apply_changes(ws, POLICY, confirm=True)
    modes = {rel: stat.S_IMODE(os.lstat(ws.source / rel).st_mode) for rel in ("open", "open/private", "shared")}
    assert modes == {"open": 0o755, "open/private": 0o700, "shared": 0o755}
    assert (ws.source / "open" / "private" / "f.txt").read_text() == "x\n"


def test_an_existing_host_directory_keeps_its_mode(ws: StagedWorkspace) -> None:
    os.chmod(ws.source / "lib", 0o750)
    (ws.upper / "lib").mkdir()
    os.chmod(ws.upper / "lib", 0o777)
    (ws.upper / "lib" / "y.py").write_text("y\n")
    apply_changes(ws, POLICY, confirm=True)
    assert stat.S_IMODE(os.lstat(ws.source / "lib").st_mode) == 0o750


def test_written_files_keep_their_permission_bits_and_lose_only_the_special_ones(ws: StagedWorkspace) -> None:
    for name, mode in {"private": 0o600, "group": 0o640, "sticky": 0o1644, "setgid": 0o2750, "tool": 0o6777}.items():
        (ws.upper / name).write_text(name)
        os.chmod(ws.upper / name, mode)
    apply_changes(ws, POLICY, confirm=True)
    modes = {
        name: stat.S_IMODE(os.lstat(ws.source / name).st_mode)
        for name in ("private", "group", "sticky", "setgid", "tool")
    }
    assert modes == {"private": 0o600, "group": 0o640, "sticky": 0o644, "setgid": 0o750, "tool": 0o777}


def test_a_file_larger_than_one_copy_block_arrives_byte_for_byte(ws: StagedWorkspace) -> None:
    data = os.urandom((1 << 20) * 2 + 12345)
    (ws.upper / "blob.bin").write_bytes(data)
    apply_changes(ws, POLICY, confirm=True)
    assert (ws.source / "blob.bin").read_bytes() == data
    assert [p.name for p in ws.source.iterdir() if p.name.startswith(".hydra-")] == []


def test_a_fifo_swapped_in_after_the_preview_is_refused_without_blocking_or_leaving_a_temp_file(
    ws: StagedWorkspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws.upper / "sub").mkdir()
    (ws.upper / "sub" / "data.txt").write_text("ok\n")
    preview = compute_diff(ws, POLICY)
    os.unlink(ws.upper / "sub" / "data.txt")
    os.mkfifo(ws.upper / "sub" / "data.txt")  # no writer: a blocking open would wait for ever
    monkeypatch.setattr(applying, "compute_diff", lambda *_a, **_k: preview)
    with pytest.raises(ApplyConflictError, match="sub/data.txt: no longer a regular file in the session's layer"):
        apply_changes(ws, POLICY, confirm=True)
    assert list((ws.source / "sub").iterdir()) == [], "the temporary file was left behind"


def test_a_host_file_on_the_way_to_a_new_file_refuses_the_apply(ws: StagedWorkspace) -> None:
    (ws.source / "notes").write_text("a file on the host\n")
    ws = ws.model_copy(update={"started_at_ns": time.time_ns()})
    preview = DiffPreview(session_id=ws.session_id, files=[FileChange(path="notes/a.md", status="added")])
    (ws.upper / "notes").mkdir()
    (ws.upper / "notes" / "a.md").write_text("x\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(applying, "compute_diff", lambda *_a, **_k: preview)
        with pytest.raises(ApplyConflictError) as info:
            apply_changes(ws, POLICY, confirm=True)
    assert info.value.message == f"notes/a.md: {ws.source / 'notes'} on the host is not a directory"
    assert (ws.source / "notes").read_text() == "a file on the host\n"


def test_a_host_link_deep_on_the_way_is_refused_too(ws: StagedWorkspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "c").mkdir(parents=True)
    (ws.source / "a").mkdir()
    os.symlink(outside, ws.source / "a" / "b")
    ws = ws.model_copy(update={"started_at_ns": time.time_ns()})
    (ws.upper / "a" / "b" / "c").mkdir(parents=True)
    (ws.upper / "a" / "b" / "c" / "f.txt").write_text("x\n")
    with pytest.raises(ApplyConflictError) as info:
        apply_changes(ws, POLICY, confirm=True)
    assert info.value.message == (
        f"a/b/c/f.txt: {ws.source / 'a/b'} on the host is a symbolic link; Hydra never writes through links"
    )
    assert list((outside / "c").iterdir()) == []


def test_the_preview_lists_writes_and_deletions_apart_and_the_result_counts_them(ws: StagedWorkspace) -> None:
    (ws.upper / "app.py").write_text("a = 2\n")
    (ws.upper / "new.py").write_text("n\n")
    whiteout(ws.upper / "gone.txt")
    (ws.upper / "link").symlink_to("app.py")
    (ws.upper / "out").symlink_to("/etc/passwd")
    preview = apply_changes(ws, POLICY, confirm=False)
    assert (preview.applied, preview.written, preview.deleted) == (False, ["app.py", "link", "new.py"], ["gone.txt"])
    assert [r.path for r in preview.refused] == ["out"] and preview.digest.startswith("sha256:")
    assert preview.message == "nothing written: call again with confirm=true and this digest to apply these changes"
    result = apply_changes(ws, POLICY, confirm=True, digest=preview.digest)
    assert (result.applied, result.written, result.deleted, result.links) == (
        True,
        ["app.py", "new.py"],
        ["gone.txt"],
        ["link"],
    )
    assert result.message == "applied 2 written, 1 deleted, 1 link(s); 1 refused"
    assert result.digest == preview.digest and result.session_id == "s-apply" and result.masked_files == []
    assert not (ws.source / "gone.txt").exists() and os.readlink(ws.source / "link") == "app.py"


def test_a_rename_deletes_the_old_host_file_and_reports_it(ws: StagedWorkspace) -> None:
    whiteout(ws.upper / "old.txt")
    (ws.upper / "new.txt").write_text("moved\n")
    result = apply_changes(ws, POLICY, confirm=True)
    assert (result.written, result.deleted) == (["new.txt"], ["old.txt"])
    assert not (ws.source / "old.txt").exists() and (ws.source / "new.txt").read_text() == "moved\n"


def test_a_deletion_never_removes_a_directory_and_reports_only_what_it_removed(ws: StagedWorkspace) -> None:
    whiteout(ws.upper / "gone.txt")
    whiteout(ws.upper / "app.py")
    preview = compute_diff(ws, POLICY)
    os.unlink(ws.source / "gone.txt")  # already gone on the host when apply runs
    os.unlink(ws.source / "app.py")
    (ws.source / "app.py").mkdir()  # now a directory on the host
    (ws.source / "app.py" / "keep").write_text("k\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(applying, "compute_diff", lambda *_a, **_k: preview)
        result = apply_changes(ws.model_copy(update={"started_at_ns": time.time_ns()}), POLICY, confirm=True)
    assert result.deleted == [] and (ws.source / "app.py" / "keep").read_text() == "k\n"
    assert result.message == "applied 0 written, 0 deleted, 0 link(s); 0 refused"


def test_a_deletion_below_a_missing_host_directory_is_a_no_op(ws: StagedWorkspace) -> None:
    whiteout(ws.upper / "lib" / "x.py")
    preview = compute_diff(ws, POLICY)
    assert [f.path for f in preview.files] == ["lib/x.py"]
    (ws.source / "lib" / "x.py").unlink()
    (ws.source / "lib").rmdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(applying, "compute_diff", lambda *_a, **_k: preview)
        result = apply_changes(ws.model_copy(update={"started_at_ns": time.time_ns()}), POLICY, confirm=True)
    assert result.deleted == [] and not (ws.source / "lib").exists()


@pytest.mark.parametrize(("err", "expected"), [(errno.ENOSPC, WorkspaceError), (errno.ELOOP, ApplyConflictError)])
def test_a_host_failure_while_writing_says_how_much_was_already_written(
    ws: StagedWorkspace, monkeypatch: pytest.MonkeyPatch, err: int, expected: type[Exception]
) -> None:
    (ws.upper / "a.txt").write_text("a\n")
    (ws.upper / "b.txt").write_text("b\n")
    real = applying._write_file

    def failing(upper: object, host: object, rel: str) -> None:
        if rel == "b.txt":
            raise OSError(err, os.strerror(err))
        real(upper, host, rel)  # type: ignore[arg-type]

    monkeypatch.setattr(applying, "_write_file", failing)
    with pytest.raises(expected) as info:
        apply_changes(ws, POLICY, confirm=True)
    message = str(info.value)
    assert message.startswith("session s-apply: ") and "b.txt" in message
    assert "1 file(s) were already written" in message
    if expected is WorkspaceError:
        assert f"({os.strerror(err)})" in message and "check the host directory (space" in message
    else:
        assert "became a symbolic link or a file while applying" in message
        assert message.endswith("(check the host directory, then apply again or discard the diff)")
    assert (ws.source / "a.txt").read_text() == "a\n"


def test_a_reviewed_digest_passes_and_none_skips_the_check() -> None:
    preview = DiffPreview(session_id="s-1", digest="sha256:abc")
    check_reviewed("s-1", preview, "sha256:abc", False)
    check_reviewed("s-1", preview, None, False)
    with pytest.raises(ApplyConflictError) as info:
        check_reviewed("s-1", preview, "sha256:old", False)
    assert info.value.message == (
        "session s-1: digest: the change set is not the one reviewed (sha256:old was given, it is now sha256:abc); "
        "nothing was written"
    )


def test_masked_files_are_counted_with_their_hidden_lines() -> None:
    files = [
        FileChange(path="a.sh", status="modified", masked_lines=3),
        FileChange(path="b.sh", status="added", masked_lines=2),
        FileChange(path="c.txt", status="added"),
    ]
    preview = DiffPreview(session_id="s-1", files=files, masked_files=["a.sh", "b.sh"])
    check_reviewed("s-1", preview, None, True)
    with pytest.raises(PolicyViolation) as info:
        check_reviewed("s-1", preview, None, False)
    assert info.value.message == (
        "session s-1: 2 file(s) hold 5 line(s) that masking hid from the preview: a.sh, b.sh; nothing was written"
    )


def _applied_with(ws: StagedWorkspace, preview: DiffPreview) -> ApplyResult:
    """Apply as if ``preview`` were what compute_diff saw (a layer that changed since, or a stale preview)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(applying, "compute_diff", lambda *_a, **_k: preview)
        return apply_changes(ws, POLICY, confirm=True)


def test_more_than_twenty_conflicts_are_counted_in_full_and_the_first_twenty_named(ws: StagedWorkspace) -> None:
    names = [f"f{i:02d}.txt" for i in range(21)]
    for name in names:
        (ws.source / name).write_text("host\n")
        (ws.upper / name).write_text("agent\n")
    with pytest.raises(ApplyConflictError) as info:
        apply_changes(ws.model_copy(update={"started_at_ns": 0}), POLICY, confirm=True)
    assert info.value.message.endswith(
        "21 file(s) changed on the host since the session started: " + ", ".join(names[:20])
    )


def test_host_directories_replaced_by_files_are_all_named_and_nothing_is_written(ws: StagedWorkspace) -> None:
    dirs = [f"d{i:02d}" for i in range(21)]
    for name in dirs:
        (ws.source / name).mkdir()
    ws = ws.model_copy(update={"started_at_ns": time.time_ns()})
    files = [FileChange(path=name, status="added") for name in reversed(dirs)]
    for name in dirs:
        (ws.upper / name).write_text("now a file\n")
    (ws.upper / "app.py").write_text("a = 2\n")
    preview = DiffPreview(session_id=ws.session_id, files=[FileChange(path="app.py", status="modified"), *files])
    with pytest.raises(ApplyConflictError) as info:
        _applied_with(ws, preview)
    assert info.value.message == (
        "session s-apply: the agent replaced 21 host directorie(s) with a file or link: "
        + ", ".join(dirs[:20])
        + "; nothing was written"
    )
    assert (
        info.value.hint == "Hydra never deletes a host directory tree; discard the diff or move the directory yourself"
    )
    assert (ws.source / "app.py").read_text() == "a = 1\n" and all((ws.source / d).is_dir() for d in dirs)


def test_apply_checks_each_link_itself_even_when_a_stale_preview_offered_an_escaping_one(ws: StagedWorkspace) -> None:
    (ws.upper / "out").symlink_to("/etc/passwd")
    (ws.upper / "in").symlink_to("app.py")
    preview = DiffPreview(
        session_id=ws.session_id,
        files=[
            FileChange(path="in", status="symlink", symlink_target="app.py"),
            FileChange(path="out", status="symlink", symlink_target="/etc/passwd"),
        ],
    )
    result = _applied_with(ws, preview)
    assert [(r.path, r.reason) for r in result.refused] == [
        ("out", "symbolic link to /etc/passwd points outside the workspace")
    ]
    assert result.links == ["in"] and not os.path.lexists(ws.source / "out")


def test_deleting_a_host_link_to_a_directory_removes_the_link_not_the_directory(ws: StagedWorkspace) -> None:
    os.symlink("lib", ws.source / "shortcut")
    os.symlink("nowhere", ws.source / "dangling")
    ws = ws.model_copy(update={"started_at_ns": time.time_ns()})
    whiteout(ws.upper / "shortcut")
    whiteout(ws.upper / "dangling")
    result = apply_changes(ws, POLICY, confirm=True)
    assert result.deleted == ["dangling", "shortcut"]
    assert not os.path.lexists(ws.source / "shortcut") and not os.path.lexists(ws.source / "dangling")
    assert (ws.source / "lib" / "x.py").read_text() == "x\n"


def test_a_file_gone_from_the_layer_since_the_preview_fails_as_a_workspace_error(ws: StagedWorkspace) -> None:
    preview = DiffPreview(session_id=ws.session_id, files=[FileChange(path="made/new.txt", status="added")])
    with pytest.raises(
        WorkspaceError, match=r"writing made/new.txt on the host failed .*0 file\(s\) were already written"
    ):
        _applied_with(ws, preview)
    assert stat.S_IMODE(os.lstat(ws.source / "made").st_mode) == 0o755, "a directory the layer lacks is made 0755"
    assert list((ws.source / "made").iterdir()) == []


def test_masked_files_are_reported_by_the_preview_and_by_the_acknowledged_apply(ws: StagedWorkspace) -> None:
    (ws.upper / "deploy.sh").write_text("echo SECRET-TOKEN\n")
    (ws.upper / "plain.txt").write_text("nothing to hide\n")
    detect = lambda s: s.replace("SECRET-TOKEN", "[masked]")  # noqa: E731
    preview = apply_changes(ws, POLICY, confirm=False, detect=detect)
    assert preview.masked_files == ["deploy.sh"] and preview.written == ["deploy.sh", "plain.txt"]
    with pytest.raises(PolicyViolation) as info:
        apply_changes(ws, POLICY, confirm=True, digest=preview.digest, detect=detect)
    assert (info.value.hint or "").endswith(
        "pass acknowledge_masked=true to apply them as they are, or discard the diff"
    )
    result = apply_changes(ws, POLICY, confirm=True, digest=preview.digest, acknowledge_masked=True, detect=detect)
    assert result.masked_files == ["deploy.sh"] and result.digest == preview.digest
    assert (ws.source / "deploy.sh").read_text() == "echo SECRET-TOKEN\n"


def test_a_link_planted_at_the_temporary_name_is_never_written_through(
    ws: StagedWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "outside.txt"
    target.write_text("untouched\n")
    monkeypatch.setattr(applying, "temp_name", lambda prefix: f"{prefix}guessed")
    os.symlink(target, ws.source / ".hydra-apply-guessed")
    (ws.upper / "new.txt").write_text("agent\n")
    with pytest.raises(WorkspaceError, match=r"writing new.txt on the host failed \(File exists\)"):
        apply_changes(ws, POLICY, confirm=True)
    assert target.read_text() == "untouched\n" and not (ws.source / "new.txt").exists()
