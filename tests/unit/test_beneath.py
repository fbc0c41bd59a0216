"""Every path in a layer or on the host is resolved without following a link in any component, with
``openat2`` and with the descriptor-walk fallback alike; and the race a hostile parent can run against
its child's diff (and a hostile host process against apply) never leaks or writes outside."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydra_sandbox.applying import apply_changes
from hydra_sandbox.beneath import Tree, _Openat2
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from tests.layer_kit import staged_workspace

POLICY = Policy(name="t")
SECRET = "TOPSECRET-root-only-0600"


@pytest.fixture(params=["openat2", "fd-walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test once with openat2 and once with the walk of O_NOFOLLOW|O_DIRECTORY descriptors."""
    if request.param == "fd-walk":
        monkeypatch.setattr(_Openat2, "usable", False)
    else:
        with Tree(Path("/")) as probe:
            probe.open_dir("tmp")
        assert _Openat2.usable, "openat2 is not usable on this kernel: only the fallback is tested here"
    yield request.param


def test_a_link_in_a_middle_component_is_never_followed(tmp_path: Path, resolution: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "f").write_text(SECRET)
    (root / "d").symlink_to(outside)
    (root / "real" / "f").write_text("ok")
    with Tree(root) as tree:
        assert tree.read("real/f") == b"ok"
        with pytest.raises(OSError) as caught:
            tree.read("d/f")
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)
        assert tree.lstat("d/f") is None
        assert tree.lstat("d") is not None and stat.S_ISLNK(tree.lstat("d").st_mode)  # type: ignore[union-attr]
        with pytest.raises(OSError):
            tree.make_dirs("d/sub", lambda _rel: 0o755)
    assert sorted(p.name for p in outside.iterdir()) == ["f"]


def test_a_link_as_the_last_component_is_not_opened(tmp_path: Path, resolution: str) -> None:
    (tmp_path / "f").write_text(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path / "f")
    with Tree(root) as tree, pytest.raises(OSError):
        tree.read("link")


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "a//b", ".", "a/./b"])
def test_paths_leaving_the_root_or_not_plain_are_refused(tmp_path: Path, rel: str) -> None:
    with Tree(tmp_path) as tree, pytest.raises(WorkspaceError, match="not a plain relative path"):
        tree.open(rel)


def test_make_dirs_sets_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        with Tree(tmp_path) as tree:
            os.close(tree.make_dirs("a/b", lambda _rel: 0o755))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o755


_SWAPPER = """
import os, shutil, sys
parent, outside, stop = sys.argv[1:]
d, real = os.path.join(parent, "d"), os.path.join(parent, "d.real")
swaps = 0
while not os.path.exists(stop):
    os.rename(d, real)
    try:
        os.symlink(outside, d)
        swaps += 1
        if swaps == 1:
            print("racing", flush=True)
        for _ in range(300):  # hold each state long enough for the victim to step into it
            pass
        os.unlink(d)
    except OSError:
        pass  # the victim created its own d in the gap
    while True:
        try:
            os.rename(real, d)
            break
        except OSError:
            shutil.rmtree(d, ignore_errors=True)
    for _ in range(300):
        pass
print(swaps)
"""


class Swapper:
    """A hostile process on another core: swaps ``parent/d`` between a real directory and a link to
    ``outside`` as fast as it can, until told to stop."""

    def __init__(self, parent: Path, outside: Path) -> None:
        self._stop = parent.parent / f"stop-{parent.name}"
        self._args = [sys.executable, "-c", _SWAPPER, str(parent), str(outside), str(self._stop)]
        self.swaps = 0

    def __enter__(self) -> Swapper:
        self._proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        # the victim's loop starts only once the racer has swapped once (a loaded machine may take
        # seconds to start a Python process; a loop run before that would prove nothing)
        assert self._proc.stdout.readline().strip() == "racing", "the racing process did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.touch()
        out, _ = self._proc.communicate(timeout=60)
        self.swaps = int(out.strip().splitlines()[-1] if out.strip() else 0)


def _layered_ws(tmp_path: Path) -> tuple[StagedWorkspace, Path, Path]:
    """A child staged on its parent's live upper layer; ``outside`` holds a root-only host file."""
    base, parent_upper, outside = tmp_path / "base", tmp_path / "parent-upper", tmp_path / "outside"
    for d in (base, parent_upper / "d", outside):
        d.mkdir(parents=True)
    (base / "README").write_text("base\n")
    (parent_upper / "d" / "f").write_text("public\n")
    (outside / "f").write_text(SECRET + "\n")
    os.chmod(outside / "f", 0o600)
    session = tmp_path / "child"
    (session / "upper" / "d").mkdir(parents=True)
    (session / "work").mkdir()
    (session / "upper" / "d" / "f").write_text("child edit\n")
    ws = staged_workspace(session, base, parent_upper, session_id="s-000000000001")
    return ws, parent_upper, outside


def test_a_parent_swapping_a_directory_for_a_link_never_leaks_a_host_file_into_the_childs_diff(
    tmp_path: Path, resolution: str
) -> None:
    ws, parent_upper, outside = _layered_ws(tmp_path)
    preview = compute_diff(ws, POLICY)  # against the host; the parent's file is read to flag what it carries
    assert "child edit" in preview.unified and preview.files[0].includes_parent_changes
    leaks = refused = raw = 0
    with Swapper(parent_upper, outside) as swapper:
        for _ in range(1500):
            try:
                preview = compute_diff(ws, POLICY)
            except WorkspaceError:
                refused += 1
                continue
            except OSError:
                raw += 1
                continue
            leaks += SECRET in preview.unified
    assert swapper.swaps > 100, "the racing thread hardly ran: the test proved nothing"
    assert leaks == 0, f"{leaks} of 1500 previews held the root-only host file ({refused} refused)"
    assert raw == 0, f"{raw} diffs failed with a bare OSError instead of a WorkspaceError naming the layer"


def test_a_host_directory_swapped_for_a_link_during_apply_is_never_written_through(
    tmp_path: Path, resolution: str
) -> None:
    source, outside, upper = tmp_path / "src", tmp_path / "outside", tmp_path / "s" / "upper"
    for d in (source / "d", outside, upper / "d", tmp_path / "s" / "work"):
        d.mkdir(parents=True)
    (upper / "d" / "f").write_text("agent\n")
    # started in the future: never a conflict, only the link matters here
    ws = staged_workspace(tmp_path / "s", source, session_id="s-000000000002", started_at_ns=time.time_ns() + 10**15)
    applied = raw = 0
    with Swapper(source, outside) as swapper:
        for _ in range(400):
            try:
                applied += apply_changes(ws, POLICY, confirm=True).applied
            except WorkspaceError:  # a conflict (a link on the way), or the racer removed apply's directory
                continue
            except OSError:
                raw += 1
    assert swapper.swaps > 50, "the racing thread hardly ran: the test proved nothing"
    assert list(outside.iterdir()) == [], "apply wrote through a link into the outside directory"
    assert raw == 0, f"{raw} applies failed with a bare OSError instead of a WorkspaceError"
    assert applied > 0


def test_removing_a_layer_never_enters_a_link_to_a_host_directory(tmp_path: Path) -> None:
    from hydra_sandbox.sandbox.workspace import remove_layer

    ws, _parent, outside = _layered_ws(tmp_path)
    (ws.upper / "d" / "escape").symlink_to(outside)
    (ws.upper / "to-outside").symlink_to(outside)
    remove_layer(ws)
    assert not ws.session_dir.exists()
    assert (outside / "f").read_text() == SECRET + "\n"


def test_disk_usage_counts_a_layer_without_following_its_links(tmp_path: Path) -> None:
    from hydra_sandbox.maintenance import _tree_bytes

    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob").write_bytes(b"x" * 100_000)
    layer = tmp_path / "layer"
    (layer / "d").mkdir(parents=True)
    (layer / "d" / "f").write_bytes(b"y" * 10)
    (layer / "link").symlink_to(tmp_path / "big")
    assert 10 <= _tree_bytes(layer) < 100_000  # the file and at most the link itself, never what it names


def test_a_discarded_ancestor_layer_reads_as_empty_and_a_missing_layer_is_named(tmp_path: Path) -> None:
    ws, parent_upper, _outside = _layered_ws(tmp_path)
    shutil.rmtree(parent_upper)
    preview = compute_diff(ws, POLICY)
    assert [(f.path, f.status) for f in preview.files] == [("d/f", "added")]
    shutil.rmtree(ws.upper)
    with pytest.raises(WorkspaceError, match=r"s-000000000001: its layer .* no longer exists"):
        compute_diff(ws, POLICY)
