"""Applying a session's changes to the host directory, only on request.

Every check happens before anything is written: a target that changed on the host since the session
started is a conflict, and so is a path whose directories on the host include a symbolic link (Hydra
never writes through a link). Files are written atomically (temporary file + rename, ``O_NOFOLLOW``)
without setuid, setgid or sticky bits. Symbolic links made by the agent are recreated as links only
when they point inside the workspace. Nothing is ever committed to git.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator

from pydantic import BaseModel, Field

from hydra_sandbox.beneath import Tree, is_link_error, split_relative, temp_name
from hydra_sandbox.diffing import DiffPreview, FileChange, RefusedWrite, compute_diff, link_inside
from hydra_sandbox.errors import ApplyConflictError, PolicyViolation, WorkspaceError
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
    digest: str = Field(default="", description="Of the change set this call saw (see get_diff).")
    masked_files: list[str] = Field(default_factory=list)


def check_reviewed(session_id: str, preview: DiffPreview, digest: str | None, acknowledge_masked: bool) -> None:
    """Refuse a change set other than the reviewed one, and masked spans nobody acknowledged."""
    if digest is not None and digest != preview.digest:
        raise ApplyConflictError(
            f"session {session_id}: digest: the change set is not the one reviewed ({digest} was given, "
            f"it is now {preview.digest}); nothing was written",
            hint="call get_diff again, review what changed, and pass its digest",
        )
    if preview.masked_files and not acknowledge_masked:
        hidden = sum(f.masked_lines for f in preview.files)
        raise PolicyViolation(
            f"session {session_id}: {len(preview.masked_files)} file(s) hold {hidden} line(s) that masking hid "
            f"from the preview: {', '.join(preview.masked_files[:10])}; nothing was written",
            hint="read those files in the session's layer yourself; pass acknowledge_masked=true to apply them "
            "as they are, or discard the diff",
        )


def _check_host_dirs(host: Tree, rel: str) -> None:
    """Refuse ``rel`` when an existing directory on its way on the host is a link or not a directory."""
    parts = split_relative(rel)
    for i in range(1, len(parts)):
        sub = "/".join(parts[:i])
        st = host.lstat(sub)
        if st is None:
            return  # missing from here on: created by apply, without following anything
        if stat.S_ISLNK(st.st_mode):
            raise ApplyConflictError(
                f"{rel}: {host.root / sub} on the host is a symbolic link; Hydra never writes through links"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise ApplyConflictError(f"{rel}: {host.root / sub} on the host is not a directory")


def _changed_since(host: Tree, rel: str, since_ns: int) -> bool:
    st = host.lstat(rel)
    return st is not None and (st.st_mtime_ns > since_ns or st.st_ctime_ns > since_ns)


def _dir_modes(upper: Tree) -> Callable[[str], int]:
    """The mode of a directory apply creates on the host: the agent's, never group- or world-writable."""

    def mode_of(rel: str) -> int:
        st = upper.lstat(rel)
        return stat.S_IMODE(st.st_mode) & 0o755 if st is not None and stat.S_ISDIR(st.st_mode) else 0o755

    return mode_of


@contextlib.contextmanager
def _into_place(upper: Tree, host: Tree, rel: str, prefix: str) -> Iterator[tuple[int, str]]:
    """The host directory of ``rel`` (made as in the layer) and a fresh temporary name in it, for the
    caller to create; moved over ``rel`` when the block ends, removed if it fails."""
    parent, _, name = rel.rpartition("/")
    dir_fd = host.make_dirs(parent, _dir_modes(upper))
    tmp = temp_name(prefix)
    try:
        yield dir_fd, tmp
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    finally:
        os.close(dir_fd)


def _write_file(upper: Tree, host: Tree, rel: str) -> None:
    """Copy the upper layer's regular file ``rel`` to the host atomically, without setuid/setgid/sticky."""
    with (
        _into_place(upper, host, rel, ".hydra-apply-") as (dir_fd, tmp),
        os.fdopen(upper.open(rel, os.O_RDONLY | os.O_NONBLOCK), "rb") as src,
    ):
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ApplyConflictError(f"{rel}: no longer a regular file in the session's layer; nothing written")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o600, dir_fd=dir_fd), "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
            dst.flush()
            os.chmod(dst.fileno(), stat.S_IMODE(st.st_mode) & 0o777)
            os.fsync(dst.fileno())


def _write_link(upper: Tree, host: Tree, rel: str, link_target: str) -> None:
    with _into_place(upper, host, rel, ".hydra-link-") as (dir_fd, tmp):
        os.symlink(link_target, tmp, dir_fd=dir_fd)


def _delete(host: Tree, rel: str) -> bool:
    """Remove the host file or link ``rel`` (never a directory); whether something was removed."""
    parent, _, name = rel.rpartition("/")
    try:
        dir_fd = host.open_dir(parent)
    except FileNotFoundError:
        return False
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            return True
        return False
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)


def apply_changes(
    ws: StagedWorkspace,
    policy: Policy,
    *,
    confirm: bool,
    digest: str | None = None,
    acknowledge_masked: bool = False,
    detect: Callable[[str], str] = lambda s: s,
) -> ApplyResult:
    """Write the change set. With ``digest``, only the change set of that digest (the preview the
    operator read); files with spans ``detect`` masks only with ``acknowledge_masked``."""
    preview = compute_diff(ws, policy, detect=detect)
    refused = list(preview.refused)
    if not confirm:
        return ApplyResult(
            session_id=ws.session_id,
            applied=False,
            refused=refused,
            written=[f.path for f in preview.files if f.status != "deleted"],
            deleted=[f.path for f in preview.files if f.status == "deleted"],
            digest=preview.digest,
            masked_files=preview.masked_files,
            message="nothing written: call again with confirm=true and this digest to apply these changes",
        )
    check_reviewed(ws.session_id, preview, digest, acknowledge_masked)
    with Tree(ws.source) as host, Tree(ws.upper) as upper:
        result = _apply(ws, preview.files, refused, host, upper)
    return result.model_copy(update={"digest": preview.digest, "masked_files": preview.masked_files})


def _apply(
    ws: StagedWorkspace, files: list[FileChange], refused: list[RefusedWrite], host: Tree, upper: Tree
) -> ApplyResult:
    plan: list[tuple[FileChange, str | None]] = []
    conflicts: list[str] = []
    blocked: list[str] = []
    for change in files:
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
        _check_host_dirs(host, change.path)
        for rel in filter(None, [change.path, change.old_path]):
            if _changed_since(host, rel, ws.started_at_ns):
                conflicts.append(rel)
        there = host.lstat(change.path)
        if change.status != "deleted" and there is not None and stat.S_ISDIR(there.st_mode):
            blocked.append(change.path)  # a file or link in place of a host directory
        plan.append((change, link))
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
    for change, link in plan:
        try:
            _apply_one(change, link, host, upper, result)
        except OSError as exc:
            if not is_link_error(exc):
                raise WorkspaceError(
                    f"session {ws.session_id}: writing {change.path} on the host failed ({exc.strerror}); "
                    f"{len(result.written)} file(s) were already written",
                    hint="check the host directory (space, permissions, other writers), then apply again",
                ) from exc
            raise ApplyConflictError(
                f"session {ws.session_id}: {change.path}: a directory on its way on the host became a symbolic "
                f"link or a file while applying; Hydra never writes through links ({len(result.written)} file(s) "
                "were already written)",
                hint="check the host directory, then apply again or discard the diff",
            ) from None
    result.message = (
        f"applied {len(result.written)} written, {len(result.deleted)} deleted, "
        f"{len(result.links)} link(s); {len(refused)} refused"
    )
    return result


def _apply_one(change: FileChange, link: str | None, host: Tree, upper: Tree, result: ApplyResult) -> None:
    if change.status == "deleted":
        if _delete(host, change.path):
            result.deleted.append(change.path)
        return
    if change.status == "symlink":
        assert link is not None
        _write_link(upper, host, change.path, link)
        result.links.append(change.path)
        return
    _write_file(upper, host, change.path)
    result.written.append(change.path)
    if change.status == "renamed" and change.old_path:
        _check_host_dirs(host, change.old_path)
        if _delete(host, change.old_path):
            result.deleted.append(change.old_path)
