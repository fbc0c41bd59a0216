"""The workspace as an archive (sandbox/archive.py, archive_changes.py): what is packed, and the agent's
hostile tree read back into the overlay form the diff and apply code read unchanged. No Docker: the
"agent" edits a folder extracted from the packed archive, and its tree goes back as ``tar -C dir .``."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from hydra_sandbox.applying import apply_changes
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.archive import ROOT_MEMBER, Manifest, pack_workspace
from hydra_sandbox.sandbox.archive_changes import NEW_MEMBERS, UnpackBounds, bounds_for, unpack_changes
from hydra_sandbox.sandbox.workspace import StagedWorkspace, prepare_layer
from tests.layer_kit import staged_workspace, whiteout

POLICY = Policy(name="t", directory={"deny": ["secrets/**"]})
HOST = {
    "app.py": "a = 1\n",
    "old.txt": "same content\n",
    "gone.txt": "bye\n",
    "lib/x.py": "x\n",
    "lib/y.py": "y\n",
    ".env": "K=HIDDEN-ENV\n",
    "id_ed25519": "HIDDEN-KEY\n",
    "secrets/k": "HIDDEN-DIR\n",
    "run.sh": "echo\n",
}


def host(tmp_path: Path, files: dict[str, str] = HOST) -> Path:
    src = tmp_path / "src"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    src.mkdir(exist_ok=True)
    return src


def staged(tmp_path: Path, src: Path, name: str = "sessions") -> StagedWorkspace:
    return prepare_layer("s-0123456789ab", src, POLICY, tmp_path / name, {}, agent_uid=os.getuid())


def pack(ws: StagedWorkspace) -> tuple[bytes, Manifest]:
    out = io.BytesIO()
    manifest = pack_workspace(ws, out)
    return out.getvalue(), manifest


def agent_copy(data: bytes, dest: Path) -> Path:
    """What the agent's container holds after the archive was put in: the tree below ROOT_MEMBER."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="tar")
    return dest / ROOT_MEMBER


def tree_tar(root: Path) -> io.BytesIO:
    """The agent's tree as the engine returns it (``./`` names, parents first, links as links)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".")
    out.seek(0)
    return out


def listing(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else os.fsencode(str(st.st_rdev))
            out[str(path.relative_to(root))] = (st.st_mode, content)
    return out


def test_hidden_and_denied_paths_and_links_to_them_never_reach_the_archive(tmp_path: Path) -> None:
    src = host(tmp_path)
    os.link(src / ".env", src / "notes.txt")  # a visible name for the hidden file's bytes
    (src / "shortcut").symlink_to("/etc/passwd")
    os.mkfifo(src / "pipe")
    data, manifest = pack(staged(tmp_path, src))
    assert b"HIDDEN" not in data
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    names = {n.removeprefix(f"{ROOT_MEMBER}/") for n in members} - {ROOT_MEMBER}
    assert names == {"app.py", "old.txt", "gone.txt", "lib", "lib/x.py", "lib/y.py", "run.sh", "shortcut"}
    assert members[f"{ROOT_MEMBER}/shortcut"].issym() and members[f"{ROOT_MEMBER}/shortcut"].linkname == "/etc/passwd"
    assert set(manifest.entries) == names
    assert manifest.entries["shortcut"].target == "/etc/passwd" and manifest.entries["lib"].type == "dir"
    assert manifest.entries["app.py"].size == 6 and manifest.entries["app.py"].sha256 is not None


def test_the_archive_is_the_merged_view_of_parent_layers_and_a_resumed_upper(tmp_path: Path) -> None:
    src = host(tmp_path, {"a.txt": "host\n", "b.txt": "b\n", "lib/x.py": "x\n", "lib/y.py": "y\n"})
    parent = tmp_path / "parent"
    (parent / "lib").mkdir(parents=True)
    os.setxattr(parent / "lib", "trusted.overlay.opaque", b"y")  # the parent replaced lib/ wholesale
    (parent / "lib" / "z.py").write_text("z\n")
    whiteout(parent / "b.txt")  # the parent deleted b.txt
    ws = staged_workspace(tmp_path / "session", src, parent)
    (ws.upper / "a.txt").write_text("resumed\n")  # the session's own earlier run
    data, manifest = pack(ws)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]
    assert files == {f"{ROOT_MEMBER}/a.txt": b"resumed\n", f"{ROOT_MEMBER}/lib/z.py": b"z\n"}
    assert set(manifest.entries) == {"a.txt", "lib", "lib/z.py"}


def edit_as_agent(tree: Path) -> None:
    """The same edits as tests/unit/test_diff_apply.py's agent_writes, made in the agent's own tree."""
    (tree / "app.py").write_text("a = 2\n")
    (tree / "new.py").write_text("print('new')\n")
    (tree / "gone.txt").unlink()
    (tree / "old.txt").rename(tree / "renamed.txt")
    for name in ("x.py", "y.py"):
        (tree / "lib" / name).unlink()
    (tree / "lib" / "z.py").write_text("z\n")
    os.chmod(tree / "run.sh", 0o755)
    (tree / "inside").symlink_to("app.py")
    (tree / "passwd").symlink_to("/etc/passwd")
    (tree / ".env").write_text("K=stolen\n")  # a hidden path re-created
    (tree / ".git").mkdir()
    (tree / ".git" / "config").write_text("[core]\n")
    (tree / "secrets").mkdir()
    (tree / "secrets" / "k").write_text("no\n")


def edit_as_overlay(ws: StagedWorkspace) -> None:
    """What overlayfs writes in the upper layer for the same edits."""
    up = ws.upper
    (up / "app.py").write_text("a = 2\n")
    (up / "new.py").write_text("print('new')\n")
    whiteout(up / "gone.txt")
    whiteout(up / "old.txt")
    (up / "renamed.txt").write_text("same content\n")
    (up / "lib").mkdir()
    whiteout(up / "lib" / "x.py")
    whiteout(up / "lib" / "y.py")
    (up / "lib" / "z.py").write_text("z\n")
    (up / "run.sh").write_text("echo\n")
    os.chmod(up / "run.sh", 0o755)
    (up / "inside").symlink_to("app.py")
    (up / "passwd").symlink_to("/etc/passwd")
    (up / ".env").unlink()
    (up / ".env").write_text("K=stolen\n")
    (up / ".git").mkdir()
    (up / ".git" / "config").write_text("[core]\n")
    (up / "secrets").unlink()
    (up / "secrets").mkdir()
    os.setxattr(up / "secrets", "trusted.overlay.opaque", b"y")
    (up / "secrets" / "k").write_text("no\n")


def test_changes_read_back_give_the_same_preview_and_digest_as_the_overlay(tmp_path: Path) -> None:
    src = host(tmp_path)
    via_archive, via_overlay = staged(tmp_path, src), staged(tmp_path, src, "sessions2")
    data, manifest = pack(via_archive)
    tree = agent_copy(data, tmp_path / "agent")
    edit_as_agent(tree)
    result = unpack_changes(tree_tar(tree), manifest, via_archive)
    edit_as_overlay(via_overlay)
    archive_preview, overlay_preview = compute_diff(via_archive, POLICY), compute_diff(via_overlay, POLICY)
    statuses = {f.path: f.status for f in archive_preview.files}
    assert statuses == {f.path: f.status for f in overlay_preview.files}
    assert statuses["renamed.txt"] == "renamed" and statuses["gone.txt"] == "deleted"
    assert statuses["run.sh"] == "mode_changed" and statuses["lib/x.py"] == "deleted"
    assert archive_preview.refused == overlay_preview.refused
    assert {r.path for r in archive_preview.refused} >= {".env", ".git/config", "secrets/k", "passwd"}
    assert archive_preview.digest == overlay_preview.digest
    assert result.changed == 12 and result.deleted == 4  # gone.txt, old.txt, lib/x.py, lib/y.py


def test_apply_writes_what_the_archive_brought_back(tmp_path: Path) -> None:
    src = host(tmp_path)
    ws = staged(tmp_path, src)
    data, manifest = pack(ws)
    tree = agent_copy(data, tmp_path / "agent")
    edit_as_agent(tree)
    unpack_changes(tree_tar(tree), manifest, ws)
    preview = compute_diff(ws, POLICY)
    apply_changes(ws, POLICY, confirm=True, digest=preview.digest)
    assert (src / "app.py").read_text() == "a = 2\n" and (src / "new.py").exists()
    assert not (src / "gone.txt").exists() and (src / ".env").read_text() == "K=HIDDEN-ENV\n"


def test_an_untouched_tree_brings_back_no_changes(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path))
    before = listing(ws.upper)
    data, manifest = pack(ws)
    result = unpack_changes(tree_tar(agent_copy(data, tmp_path / "agent")), manifest, ws)
    assert result.changed == result.deleted == 0 and listing(ws.upper) == before
    assert compute_diff(ws, POLICY).files == []


def test_a_resumed_run_can_delete_what_the_first_run_added(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    for run in range(2):
        data, manifest = pack(ws)
        tree = agent_copy(data, tmp_path / f"agent{run}")
        if run == 0:
            (tree / "added").mkdir()
            (tree / "added" / "f.txt").write_text("first run\n")
        else:
            assert (tree / "added" / "f.txt").read_text() == "first run\n"
            (tree / "added" / "f.txt").unlink()
            (tree / "a.txt").unlink()
        unpack_changes(tree_tar(tree), manifest, ws)
    assert {f.path: f.status for f in compute_diff(ws, POLICY).files} == {"a.txt": "deleted"}


def test_a_link_left_in_the_layer_is_replaced_never_written_through(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    outside = tmp_path / "outside"
    outside.mkdir()
    data, manifest = pack(ws)
    (ws.upper / "d").symlink_to(outside)  # e.g. left by an earlier run, where the agent now makes a directory
    tree = agent_copy(data, tmp_path / "agent")
    (tree / "d").mkdir()
    (tree / "d" / "f.txt").write_text("inside\n")
    unpack_changes(tree_tar(tree), manifest, ws)
    assert list(outside.iterdir()) == [] and (ws.upper / "d" / "f.txt").read_text() == "inside\n"


def hostile(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    out.seek(0)
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if kind == tarfile.REGTYPE:
        data = data if data is not None else b"x"
        info.size = len(data)
    return info, data


def padded(name: str) -> tuple:
    """A member whose PAX header is 100 KiB (tarfile reads such a header whole)."""
    info, data = member(name)
    info.pax_headers = {"comment": "p" * 100_000}
    return info, data


def nul_named() -> tuple:
    info, data = member("./a")
    info.pax_headers = {"path": "./a\0b"}
    return info, data


DIR, SYM = tarfile.DIRTYPE, tarfile.SYMTYPE
HOSTILE = {
    "absolute name": ([member("/etc/cron.d/x")], "absolute name"),
    "dot-dot": ([member("./../escape")], r"'\.\.' component"),
    "not under ./": ([member("a.txt")], "not under './'"),
    "under a link": ([member("./l", SYM, link="/tmp"), member("./l/f")], "'l', an earlier link"),
    "before its directory": ([member("./nodir/f")], "does not follow its directory"),
    "under a file": ([member("./f"), member("./f/g")], "does not follow its directory"),
    "hard link": ([member("./h", tarfile.LNKTYPE, link="a.txt")], "hard link"),
    "character device": ([member("./c", tarfile.CHRTYPE)], "device, fifo"),
    "fifo": ([member("./p", tarfile.FIFOTYPE)], "device, fifo"),
    "long name": ([member("./" + "d" * 5000)], "over 4096 bytes"),
    "twice": ([member("./f"), member("./f")], "comes twice"),
    "too many members": ([member(f"./f{n}") for n in range(5)], "past 4 members"),
    "file over the limit": ([member("./big", data=b"y" * 2000)], "2000 bytes"),
    "too many bytes": ([member(f"./f{n}", data=b"z" * 900) for n in range(3)], "past the bytes allowed"),
    "huge extended header": ([padded("./f")], "extended header of 100"),
    "NUL in a name": ([nul_named()], "holds a NUL character"),
    "long link target": ([member("./l", SYM, link="t" * 5000)], "target with NUL or over 4095 bytes"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_archive_is_refused_naming_the_member_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    _, manifest = pack(ws)
    before = listing(ws.upper)
    members, message = HOSTILE[case]
    bounds = UnpackBounds(max_members=4, max_file_bytes=1000, max_total_bytes=2000)
    with pytest.raises(WorkspaceError, match=message):
        unpack_changes(hostile(members), manifest, ws, bounds)
    assert listing(ws.upper) == before
    assert [p.name for p in ws.upper.parent.iterdir() if p.name.startswith("incoming-")] == []


def test_the_member_bound_grows_with_the_baseline(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {f"f{n}": "x" for n in range(50)}))
    _, manifest = pack(ws)
    assert bounds_for(ws, manifest).max_members == 50 + NEW_MEMBERS


def test_garbage_instead_of_a_tar_is_refused(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    _, manifest = pack(ws)
    with pytest.raises(WorkspaceError, match="not a valid tar"):
        unpack_changes(io.BytesIO(b"\x01" * 1024), manifest, ws)
