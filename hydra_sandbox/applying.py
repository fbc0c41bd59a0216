"""Applying a session's changes to the host directory, only on request.

Every check happens before anything is written: a target that changed on the host since the session
started is a conflict, and so is a path whose directories on the host include a symbolic link (Hydra
never writes through a link). Files are written atomically (temporary file + rename, ``O_NOFOLLOW``)
without setuid, setgid or sticky bits. Symbolic links made by the agent are recreated as links only
when they point inside the workspace. Nothing is ever committed to git.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from hydra_sandbox.diffing import FileChange, RefusedWrite, compute_diff, link_inside
from hydra_sandbox.errors import ApplyConflictError, WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.workspace import StagedWorkspace


class ApplyResult(BaseModel):
    session_id: str
    applied: bool
    message: str
    written: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)
    refused: list[RefusedWrite] = Field(default_factory=list)


def _host_path(root: Path, rel: str) -> Path:
    """``root/rel`` after checking that no existing directory on the way is a symbolic link."""
    current = root
    parts = rel.split("/")
    if any(p in {"", ".", ".."} for p in parts):
        raise WorkspaceError(f"{rel!r} is not a plain relative path")
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise ApplyConflictError(
                f"{rel}: {current} on the host is a symbolic link; Hydra never writes through links"
            )
        if current.exists() and not current.is_dir():
            raise ApplyConflictError(f"{rel}: {current} on the host is not a directory")
    return current / parts[-1]


def _changed_since(path: Path, since_ns: int) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return st.st_mtime_ns > since_ns or st.st_ctime_ns > since_ns


def _write_file(source: Path, target: Path, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd_in = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    fd_out, tmp = tempfile.mkstemp(dir=target.parent, prefix=".hydra-apply-")
    try:
        with os.fdopen(fd_in, "rb") as src, os.fdopen(fd_out, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _write_link(link_target: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".hydra-link-{os.getpid()}-{target.name}"
    os.symlink(link_target, tmp)
    os.replace(tmp, target)


def apply_changes(ws: StagedWorkspace, policy: Policy, *, confirm: bool) -> ApplyResult:
    preview = compute_diff(ws, policy)
    refused = list(preview.refused)
    if not confirm:
        return ApplyResult(
            session_id=ws.session_id,
            applied=False,
            refused=refused,
            written=[f.path for f in preview.files if f.status != "deleted"],
            deleted=[f.path for f in preview.files if f.status == "deleted"],
            message="nothing written: call again with confirm=true to apply these changes",
        )
    plan: list[tuple[FileChange, Path, str | None]] = []
    conflicts: list[str] = []
    blocked: list[str] = []
    for change in preview.files:
        link: str | None = None
        if change.status == "symlink":
            link = link_inside(change.path, change.symlink_target or "")
            if link is None:
                refused.append(
                    RefusedWrite(
                        path=change.path,
                        reason=f"symbolic link to {change.symlink_target} points outside the workspace",
                    )
                )
                continue
        target = _host_path(ws.source, change.path)
        for rel in filter(None, [change.path, change.old_path]):
            if _changed_since(ws.source / rel, ws.started_at_ns):
                conflicts.append(rel)
        if change.status != "deleted" and target.is_dir() and not target.is_symlink():
            blocked.append(change.path)  # a file or link in place of a host directory
        plan.append((change, target, link))
    if blocked:
        raise ApplyConflictError(
            f"session {ws.session_id}: the agent replaced {len(blocked)} host directorie(s) with a file or link: "
            + ", ".join(sorted(blocked)[:20])
            + "; nothing was written",
            hint="Hydra never deletes a host directory tree; discard the diff or move the directory yourself",
        )
    if conflicts:
        raise ApplyConflictError(
            f"session {ws.session_id}: {len(conflicts)} file(s) changed on the host since the session started: "
            + ", ".join(sorted(conflicts)[:20]),
            hint="discard the diff, or resume the session so the agent works on the new files",
        )
    result = ApplyResult(session_id=ws.session_id, applied=True, refused=refused, message="")
    for change, target, link in plan:
        if change.status == "deleted":
            if target.is_symlink() or target.is_file():
                target.unlink()
                result.deleted.append(change.path)
            continue
        if change.status == "symlink":
            assert link is not None
            _write_link(link, target)
            result.links.append(change.path)
            continue
        source = ws.upper / change.path
        mode = stat.S_IMODE(os.lstat(source).st_mode)
        _write_file(source, target, mode)
        result.written.append(change.path)
        if change.status == "renamed" and change.old_path:
            old = _host_path(ws.source, change.old_path)
            if old.is_file() or old.is_symlink():
                old.unlink()
                result.deleted.append(change.old_path)
    result.message = (
        f"applied {len(result.written)} written, {len(result.deleted)} deleted, "
        f"{len(result.links)} link(s); {len(refused)} refused"
    )
    return result
