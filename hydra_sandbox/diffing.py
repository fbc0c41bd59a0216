"""The preview of a session's changes, read from its overlay upper layer.

Nothing here follows a symbolic link in any component: every layer is read through a
:class:`~hydra_sandbox.beneath.Tree` (``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, or a
walk of directory descriptors with ``O_NOFOLLOW``). Overlay whiteouts (character device 0/0) are
deletions, except the ones Hydra placed to hide paths; opaque directories (``trusted.overlay.opaque=y``)
replace what was below them.
Writes the policy does not allow, links that leave the workspace and paths too long to apply are dropped
from the changes and listed in ``refused``, so the preview shows exactly what ``apply`` would write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

from hydra_sandbox.beneath import Tree, is_link_error
from hydra_sandbox.changeset import change_set_digest, link_refusal, size_refusal
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.preview import (
    MAX_DIFF_BYTES,
    DiffPreview,
    DiffStats,
    FileChange,
    FileStatus,
    RefusedWrite,
    detect_renames,
    render,
)
from hydra_sandbox.sandbox.workspace import StagedWorkspace

__all__ = ["DiffPreview", "DiffStats", "FileChange", "RefusedWrite", "compute_diff", "link_inside"]

MAX_PATH_LENGTH = 4096
_NAME_MAX = 255
AGENT_ROOT = PurePosixPath("/workspace")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(tree: Tree, rel_dir: str) -> bool:
    return tree.getxattr(rel_dir, "trusted.overlay.opaque") == b"y"


class LowerView:
    """What the agent saw before its changes: the lower layers, top first, with their whiteouts. Every
    entry is reached through a :class:`~hydra_sandbox.beneath.Tree`, never through a link."""

    def __init__(self, lowers: list[Tree]) -> None:
        self.lowers = lowers

    def lstat(self, rel: str) -> tuple[Tree, os.stat_result] | None:
        parts = rel.split("/")
        for layer in self.lowers:
            blocked = False
            for i in range(1, len(parts)):
                st = layer.lstat("/".join(parts[:i]))
                if st is None:
                    continue
                if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                    blocked = True
                    break
            if blocked:
                return None
            found = layer.lstat(rel)
            if found is None:
                if layer is not self.lowers[-1] and _is_opaque(layer, rel.rpartition("/")[0]):
                    return None
                continue
            return None if _is_whiteout(found) else (layer, found)
        return None

    def walk_files(self, rel_dir: str) -> Iterator[str]:
        """Every non-directory entry below ``rel_dir`` in the lower view."""
        seen: set[str] = set()
        for layer in self.lowers:
            top = layer.lstat(rel_dir)
            if top is None or not stat.S_ISDIR(top.st_mode):
                continue
            for parent, name, st in layer.walk(rel_dir):
                rel = f"{parent}/{name}"
                if not stat.S_ISDIR(st.st_mode) and rel not in seen and self.lstat(rel) is not None:
                    seen.add(rel)
                    yield rel


def _changed(tree: Tree, rel: str, exc: OSError) -> WorkspaceError:
    return WorkspaceError(
        f"{rel}: the layer {tree.root} changed while it was being read ({exc.strerror}); "
        "nothing outside the layer was read",
        hint="take the diff again once the session that owns that layer has finished",
    )


def _read(tree: Tree, rel: str, limit: int | None = None) -> bytes:
    try:
        return tree.read(rel, limit)
    except OSError as exc:
        if is_link_error(exc) or exc.errno in (errno.ENOENT, errno.EINVAL):
            raise _changed(tree, rel, exc) from None
        raise


def _digest(tree: Tree, rel: str) -> str:
    digest = hashlib.sha256()
    try:
        fd = tree.open(rel, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if is_link_error(exc) or exc.errno == errno.ENOENT:
            raise _changed(tree, rel, exc) from None
        raise
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_inside(rel: str, target: str) -> str | None:
    """The link target rewritten relative to the link, or ``None`` when it leaves the workspace."""
    link_dir = PurePosixPath(rel).parent
    if target.startswith("/"):
        absolute = PurePosixPath(os.path.normpath(target))
        if absolute != AGENT_ROOT and AGENT_ROOT not in absolute.parents:
            return None
        resolved = absolute.relative_to(AGENT_ROOT)
    else:
        resolved = PurePosixPath(os.path.normpath(str(link_dir / target)))
    if str(resolved).startswith("..") or str(resolved) == ".":
        return None
    return os.path.relpath(str(resolved), str(link_dir) if str(link_dir) != "." else ".")


def _bad_name(rel: str) -> str | None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return "file name contains control characters"
    if len(os.fsencode(rel)) > MAX_PATH_LENGTH:
        return f"path longer than {MAX_PATH_LENGTH} bytes"
    return None


_TOO_LONG = f"path longer than {MAX_PATH_LENGTH} bytes on the host; nothing below it is applied"


def _upper_entries(ws: StagedWorkspace, upper: Tree) -> Iterator[tuple[str, os.stat_result | None]]:
    """Every entry of the upper layer, relative to it. A directory whose entries could not be named in
    one system call, here or in the host directory, comes as ``rel + "/"`` with no stat and is not
    descended: the agent can nest directories past PATH_MAX, which would otherwise crash the walk.
    An opaque directory also comes as ``rel + "/"`` (with its stat), and is descended."""
    prefix = max(len(os.fsencode(ws.upper)), len(os.fsencode(ws.source)))
    stack = [""]
    while stack:
        rel_base = stack.pop()
        if rel_base and prefix + len(os.fsencode(rel_base)) + 2 + _NAME_MAX >= MAX_PATH_LENGTH:
            yield rel_base + "/", None
            continue
        subdirs = []
        for name, st in upper.scandir(rel_base):
            rel = f"{rel_base}/{name}" if rel_base else name
            if not stat.S_ISDIR(st.st_mode):
                yield rel, st
                continue
            subdirs.append(rel)
            if _is_opaque(upper, rel):
                yield rel + "/", st
        stack.extend(reversed(subdirs))


def compute_diff(
    ws: StagedWorkspace,
    policy: Policy,
    *,
    mask: Callable[[str], str] = lambda s: s,
    detect: Callable[[str], str] | None = None,
) -> DiffPreview:
    """The preview of what ``apply`` would write, against the host's files (never a parent's layer: a
    child's file carrying its parent's unapplied edits shows them), with every path and line passed
    through ``mask``; ``detect`` (default: ``mask``) finds the spans masking hides.

    Every layer is read through a :class:`~hydra_sandbox.beneath.Tree`: a live ancestor layer whose
    directory becomes a link while it is read makes the diff fail with :class:`WorkspaceError`, never
    read through the link."""
    with contextlib.ExitStack() as stack:
        try:
            upper = stack.enter_context(Tree(ws.upper))
        except FileNotFoundError:
            raise WorkspaceError(
                f"session {ws.session_id}: its layer {ws.upper} no longer exists",
                hint="its diff was discarded or the session folder removed; there is nothing to review",
            ) from None
        lowers = []
        for layer in ws.lowers:
            with contextlib.suppress(FileNotFoundError):  # a discarded ancestor's layer shows nothing
                lowers.append(stack.enter_context(Tree(layer)))
        host = lowers[-1:] if ws.lowers and lowers and lowers[-1].root == ws.lowers[-1] else []
        seen = LowerView(lowers) if len(lowers) > len(host) else None
        return _compute(ws, upper, LowerView(host), seen, policy, (mask, detect or mask))


def _compute(
    ws: StagedWorkspace,
    upper: Tree,
    lower: LowerView,
    seen: LowerView | None,
    policy: Policy,
    masks: tuple[Callable[[str], str], Callable[[str], str]],
) -> DiffPreview:
    mask = masks[0]
    matcher = policy.matcher
    ours = ws.hidden()
    raw: list[FileChange] = []
    refused: list[RefusedWrite] = []
    contents: dict[str, tuple[bytes | None, bytes | None]] = {}

    def consider(change: FileChange, before: bytes | None, after: bytes | None) -> None:
        bad = _bad_name(change.path)
        reason = bad or matcher.why_not_writable(change.path)
        if reason is not None:
            refused.append(RefusedWrite(path=mask(change.path if not bad else repr(change.path)), reason=reason))
            return
        if seen is not None:
            change.includes_parent_changes = _inherited(seen, lower, change.path)
        raw.append(change)
        contents[change.path] = (before, after)

    for rel, st in _upper_entries(ws, upper):
        if st is None:
            refused.append(RefusedWrite(path=mask(rel), reason=_TOO_LONG))
            continue
        if rel.endswith("/"):  # an opaque directory: everything below it in the lower view is gone
            rel_dir = rel[:-1]
            for gone in lower.walk_files(rel_dir):
                if upper.lstat(gone) is None:
                    consider(FileChange(path=gone, status="deleted"), _safe_read(lower, gone), None)
            continue
        if _is_whiteout(st):
            if rel in ours:
                continue
            below = lower.lstat(rel)
            if below is None:
                continue
            if stat.S_ISDIR(below[1].st_mode):
                for gone in lower.walk_files(rel):
                    consider(FileChange(path=gone, status="deleted"), _safe_read(lower, gone), None)
            else:
                consider(FileChange(path=rel, status="deleted"), _safe_read(lower, rel), None)
            continue
        below = lower.lstat(rel)
        if stat.S_ISLNK(st.st_mode):
            target = upper.readlink(rel)
            if below is not None and stat.S_ISLNK(below[1].st_mode) and _readlink(below[0], rel) == target:
                continue
            if link_inside(rel, target) is None:
                refused.append(
                    RefusedWrite(path=mask(rel), reason=f"symbolic link to {mask(target)} points outside the workspace")
                )
                continue
            why = link_refusal(rel, target, lower.lowers[0] if lower.lowers else None, matcher)
            if why is not None:
                refused.append(RefusedWrite(path=mask(rel), reason=f"symbolic link to {mask(target)} {why}"))
                continue
            consider(FileChange(path=rel, status="symlink", symlink_target=mask(target)), None, None)
            continue
        if not stat.S_ISREG(st.st_mode):
            refused.append(RefusedWrite(path=mask(rel), reason="not a regular file, directory or link"))
            continue
        new_mode = oct(stat.S_IMODE(st.st_mode))
        old_mode = oct(stat.S_IMODE(below[1].st_mode)) if below and stat.S_ISREG(below[1].st_mode) else None
        same = below is not None and old_mode is not None and _same(below, upper, rel, st)
        if same and old_mode == new_mode:
            continue
        too_big = size_refusal(st.st_size, policy)
        if too_big is not None:
            refused.append(RefusedWrite(path=mask(rel), reason=too_big))
            continue
        change = FileChange(
            path=rel,
            status="added",
            new_mode=new_mode,
            size=st.st_size,
            disk_bytes=st.st_blocks * 512,
            truncated=st.st_size > MAX_DIFF_BYTES,
        )
        if below is None or old_mode is None:
            consider(change, None, _read(upper, rel, MAX_DIFF_BYTES))
            continue
        status: FileStatus = "mode_changed" if same else "modified"
        change = change.model_copy(update={"status": status, "old_mode": old_mode, "old_size": below[1].st_size})
        consider(change, _read(below[0], rel, MAX_DIFF_BYTES), _read(upper, rel, MAX_DIFF_BYTES))

    files = detect_renames(raw, contents)
    digest = change_set_digest(_digest_entries(upper, lower, files))
    preview = render(ws.session_id, files, contents, refused, mask, masks[1])
    return preview.model_copy(update={"digest": digest})


def _same(below: tuple[Tree, os.stat_result], upper: Tree, rel: str, st: os.stat_result) -> bool:
    return below[1].st_size == st.st_size and _digest(below[0], rel) == _digest(upper, rel)


def _entry(tree: Tree | None, rel: str) -> str:
    """What is at ``rel`` in ``tree``, for the digest: nothing, a link and its target, or a file."""
    st = tree.lstat(rel) if tree is not None else None
    if tree is None or st is None:
        return "-"
    if stat.S_ISLNK(st.st_mode):
        return "link:" + tree.readlink(rel)
    if stat.S_ISREG(st.st_mode):
        return f"file:{stat.S_IMODE(st.st_mode):o}:{_digest(tree, rel)}"
    return f"other:{stat.S_IFMT(st.st_mode):o}"


def _digest_entries(upper: Tree, lower: LowerView, files: list[FileChange]) -> Iterator[tuple[str, ...]]:
    for change in files:
        below = lower.lstat(change.path)
        written = "-" if change.status == "deleted" else _entry(upper, change.path)
        yield change.status, change.path, change.old_path or "", written, _entry(below and below[0], change.path)
        if change.old_path:
            old = lower.lstat(change.old_path)
            yield "renamed-from", change.old_path, "", "-", _entry(old and old[0], change.old_path)


def _inherited(seen: LowerView, lower: LowerView, rel: str) -> bool:
    """A parent session changed ``rel`` and that change is not on the host."""
    found, host = seen.lstat(rel), lower.lstat(rel)
    if found is None or host is None:
        return (found is None) != (host is None)
    return found[0] is not host[0] and _entry(found[0], rel) != _entry(host[0], rel)


def _readlink(tree: Tree, rel: str) -> str | None:
    try:
        return tree.readlink(rel)
    except OSError:
        return None


def _safe_read(lower: LowerView, rel: str) -> bytes | None:
    found = lower.lstat(rel)
    if found is None or not stat.S_ISREG(found[1].st_mode):
        return None
    return _read(found[0], rel, MAX_DIFF_BYTES)

