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
import difflib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field

from hydra_sandbox.beneath import Tree, is_link_error
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.workspace import StagedWorkspace

MAX_DIFF_BYTES = 1_000_000
MAX_PATH_LENGTH = 4096
_NAME_MAX = 255
AGENT_ROOT = PurePosixPath("/workspace")
FileStatus = Literal["added", "modified", "deleted", "renamed", "symlink", "mode_changed"]


class FileChange(BaseModel):
    path: str
    status: FileStatus
    old_path: str | None = None
    binary: bool = False
    symlink_target: str | None = None
    old_mode: str | None = None
    new_mode: str | None = None
    additions: int = 0
    deletions: int = 0


class RefusedWrite(BaseModel):
    path: str
    reason: str


class DiffStats(BaseModel):
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0


class DiffPreview(BaseModel):
    session_id: str
    files: list[FileChange] = Field(default_factory=list)
    unified: str = ""
    stats: DiffStats = Field(default_factory=DiffStats)
    refused: list[RefusedWrite] = Field(default_factory=list)


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


def _text(data: bytes) -> list[str] | None:
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


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


def compute_diff(ws: StagedWorkspace, policy: Policy, *, mask: Callable[[str], str] = lambda s: s) -> DiffPreview:
    """The preview of what ``apply`` would write, with every path and line passed through ``mask``.

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
        return _compute(ws, upper, LowerView(lowers), policy, mask)


def _compute(
    ws: StagedWorkspace, upper: Tree, lower: LowerView, policy: Policy, mask: Callable[[str], str]
) -> DiffPreview:
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
            consider(FileChange(path=rel, status="symlink", symlink_target=mask(target)), None, None)
            continue
        if not stat.S_ISREG(st.st_mode):
            refused.append(RefusedWrite(path=mask(rel), reason="not a regular file, directory or link"))
            continue
        new_mode = oct(stat.S_IMODE(st.st_mode))
        if below is None or not stat.S_ISREG(below[1].st_mode):
            consider(FileChange(path=rel, status="added", new_mode=new_mode), None, _read(upper, rel, MAX_DIFF_BYTES))
            continue
        old_mode = oct(stat.S_IMODE(below[1].st_mode))
        same = below[1].st_size == st.st_size and _digest(below[0], rel) == _digest(upper, rel)
        if same and old_mode == new_mode:
            continue
        status: FileStatus = "mode_changed" if same else "modified"
        consider(
            FileChange(path=rel, status=status, old_mode=old_mode, new_mode=new_mode),
            _read(below[0], rel, MAX_DIFF_BYTES),
            _read(upper, rel, MAX_DIFF_BYTES),
        )

    files = _detect_renames(raw, contents)
    return _render(ws.session_id, files, contents, refused, mask)


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


def _detect_renames(
    changes: list[FileChange], contents: dict[str, tuple[bytes | None, bytes | None]]
) -> list[FileChange]:
    deleted = {contents[c.path][0]: c for c in changes if c.status == "deleted" and contents[c.path][0]}
    out, used = [], set()
    for change in changes:
        if change.status == "added":
            after = contents[change.path][1]
            old = deleted.get(after) if after else None
            if old is not None and old.path not in used:
                used.add(old.path)
                out.append(change.model_copy(update={"status": "renamed", "old_path": old.path}))
                contents[change.path] = (after, after)
                continue
        out.append(change)
    return [c for c in out if not (c.status == "deleted" and c.path in used)]


def _render(
    session_id: str,
    files: list[FileChange],
    contents: dict[str, tuple[bytes | None, bytes | None]],
    refused: list[RefusedWrite],
    mask: Callable[[str], str],
) -> DiffPreview:
    chunks: list[str] = []
    rendered: list[FileChange] = []
    insertions = deletions = 0
    for change in sorted(files, key=lambda c: c.path):
        before, after = contents.get(change.path, (None, None))
        name = mask(change.path)
        old_name = mask(change.old_path) if change.old_path else name
        header = f"diff --hydra a/{old_name} b/{name}\n"
        if change.status == "symlink":
            chunks.append(header + f"symbolic link -> {change.symlink_target}\n")
            rendered.append(change.model_copy(update={"path": name}))
            continue
        if change.status == "mode_changed":
            chunks.append(header + f"old mode {change.old_mode}\nnew mode {change.new_mode}\n")
            rendered.append(change.model_copy(update={"path": name}))
            continue
        old_lines = _text(before) if before is not None else []
        new_lines = _text(after) if after is not None else []
        if old_lines is None or new_lines is None:
            chunks.append(header + "Binary files differ\n")
            rendered.append(
                change.model_copy(update={"path": name, "old_path": change.old_path and old_name, "binary": True})
            )
            continue
        adds = dels = 0
        body = []
        for line in difflib.unified_diff(
            old_lines,
            new_lines,
            "/dev/null" if change.status == "added" else f"a/{old_name}",
            "/dev/null" if change.status == "deleted" else f"b/{name}",
        ):
            if line.startswith("+") and not line.startswith("+++"):
                adds += 1
            elif line.startswith("-") and not line.startswith("---"):
                dels += 1
            body.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        insertions += adds
        deletions += dels
        # masked as one text: a private key block spans lines, and no single line of it looks secret
        chunks.append(header + mask("".join(body)))
        rendered.append(
            change.model_copy(
                update={"path": name, "old_path": change.old_path and old_name, "additions": adds, "deletions": dels}
            )
        )
    return DiffPreview(
        session_id=session_id,
        files=rendered,
        unified="".join(chunks),
        stats=DiffStats(files_changed=len(rendered), insertions=insertions, deletions=deletions),
        refused=refused,
    )
