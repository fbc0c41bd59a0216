"""The preview read from overlay layers, at its edges: parent layers, sizes, odd entries, the path limit and
the change-set digest. Hand-built layers, no Docker (test_diff_apply.py covers the ordinary kinds)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from hydra_sandbox import diffing
from hydra_sandbox.beneath import Tree
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.preview import MAX_DIFF_BYTES, RefusedWrite
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from tests.layer_kit import staged_workspace, whiteout

POLICY = Policy(name="t")


def opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def workspace(tmp_path: Path, files: dict[str, str], parents: int = 0) -> StagedWorkspace:
    """A session over a host folder holding ``files``, below ``parents`` parent-session layers (top first)."""
    src = tmp_path / "src"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    src.mkdir(exist_ok=True)
    layers = [tmp_path / f"parent{n}" for n in range(parents)]
    for layer in layers:
        layer.mkdir()
    return staged_workspace(tmp_path / "session", src, *layers, session_id="s1")


def test_a_file_a_parent_session_deleted_is_marked_as_carrying_the_parents_change(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"lib/x.py": "x\n", "lib/y.py": "y\n", "app.py": "a = 1\n"}, parents=1)
    whiteout(ws.lowers[0] / "lib")  # the parent removed lib/ (not applied to the host)
    opaque(ws.upper / "lib")  # the child made lib/ again: overlay marks it opaque over the whiteout
    (ws.upper / "lib" / "x.py").write_text("x again\n")
    (ws.upper / "app.py").write_text("a = 2\n")  # the child's own change to a file the parent never touched
    files = {f.path: f for f in compute_diff(ws, POLICY).files}
    statuses = {p: f.status for p, f in files.items()}
    assert statuses == {"app.py": "modified", "lib/x.py": "modified", "lib/y.py": "deleted"}
    assert files["lib/x.py"].includes_parent_changes and files["lib/y.py"].includes_parent_changes
    assert not files["app.py"].includes_parent_changes


def test_a_fifo_in_the_layer_is_refused_as_neither_file_directory_nor_link(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {})
    os.mkfifo(ws.upper / "pipe")
    preview = compute_diff(ws, POLICY, mask=str.upper)
    assert preview.files == []
    assert preview.refused == [RefusedWrite(path="PIPE", reason="not a regular file, directory or link")]


def test_a_deleted_file_larger_than_the_preview_limit_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    line = "123456789\n"
    ws = workspace(tmp_path, {"big.txt": line * (2 * MAX_DIFF_BYTES // len(line))})
    whiteout(ws.upper / "big.txt")
    preview = compute_diff(ws, POLICY)
    assert [(f.path, f.status) for f in preview.files] == [("big.txt", "deleted")]
    assert preview.stats.deletions == MAX_DIFF_BYTES // len(line)


def test_a_file_vanishing_while_its_layer_is_read_fails_naming_the_file_with_a_hint(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {})
    with Tree(ws.upper) as upper, pytest.raises(WorkspaceError) as changed:
        diffing._read(upper, "gone.py")  # the race is not reproducible from outside
    assert str(changed.value.message).startswith(f"gone.py: the layer {ws.upper} changed while it was being read")
    assert changed.value.hint == "take the diff again once the session that owns that layer has finished"


def nest(root: Path, total: int) -> str:
    """Directories below ``root`` whose relative path is exactly ``total`` bytes, made with *at calls."""
    names, left = [], total
    while left > 0:
        size = min(200, left) if left - min(200, left) != 1 else 199  # never leave a lone "/" to fill
        names.append("d" * size)
        left -= size + (1 if left - size > 0 else 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("f.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    rel = "/".join(names)
    assert len(rel) == total
    return rel


@pytest.mark.parametrize("spare", [0, 1])
def test_a_directory_is_descended_only_while_a_longest_name_below_it_fits_the_host_path_limit(
    tmp_path: Path, spare: int
) -> None:
    ws = workspace(tmp_path, {})
    prefix = max(len(os.fsencode(ws.upper)), len(os.fsencode(ws.source)))
    # prefix + "/" + rel + "/" + a 255-byte name must stay under PATH_MAX (4096, counting the NUL)
    rel = nest(ws.upper, diffing.MAX_PATH_LENGTH - prefix - 2 - 255 - spare)
    preview = compute_diff(ws, POLICY)
    if spare:
        assert [f.path for f in preview.files] == [f"{rel}/f.py"] and preview.refused == []
    else:
        assert preview.files == [] and [r.path for r in preview.refused] == [rel + "/"]


def test_the_change_set_digest_is_the_documented_record_of_each_change(tmp_path: Path) -> None:
    ws = workspace(tmp_path, {"gone.txt": "bye\n", "app.py": "a = 1\n", "old.txt": "kept\n"})
    whiteout(ws.upper / "gone.txt")
    whiteout(ws.upper / "old.txt")
    (ws.upper / "new.txt").write_text("kept\n")  # old.txt renamed
    (ws.upper / "app.py").write_text("a = 2\n")
    os.chmod(ws.upper / "app.py", 0o640)
    (ws.upper / "inside").symlink_to("app.py")

    def file(data: bytes, mode: int) -> str:
        return f"file:{mode:o}:{hashlib.sha256(data).hexdigest()}"

    host_mode = stat.S_IMODE((ws.source / "app.py").stat().st_mode)
    new_mode = stat.S_IMODE((ws.upper / "new.txt").stat().st_mode)
    records = [
        ("modified", "app.py", "", file(b"a = 2\n", 0o640), file(b"a = 1\n", host_mode)),
        ("deleted", "gone.txt", "", "-", file(b"bye\n", host_mode)),
        ("symlink", "inside", "", "link:app.py", "-"),
        ("renamed", "new.txt", "old.txt", file(b"kept\n", new_mode), "-"),
        ("renamed-from", "old.txt", "", "-", file(b"kept\n", host_mode)),
    ]  # in path order
    digest = hashlib.sha256(b"hydra-change-set-v1\0")
    for record in records:
        digest.update("\0".join(record).encode() + b"\n")
    preview = compute_diff(ws, POLICY)
    assert preview.digest == "sha256:" + digest.hexdigest()
    app = next(f for f in preview.files if f.path == "app.py")
    assert (app.status, app.old_mode, app.new_mode) == ("modified", oct(host_mode), "0o640")
    assert (app.old_size, app.size) == (6, 6)
