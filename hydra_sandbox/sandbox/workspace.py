"""Copy-on-write workspaces, backend-neutral: the session's layer on Hydra's disk, and the seam that
brings it into a container.

The agent sees the operator's directory through an overlay whose upper layer belongs to the session, so
the host directory is never written while the agent runs and the session's changes are exactly the
content of its upper layer (:class:`StagedWorkspace`, read by :mod:`hydra_sandbox.diffing` and
:mod:`hydra_sandbox.applying`). Paths the policy hides are whiteouts (``mknod c 0 0``) in the upper
layer, found by one walk that does not descend into hidden directories.

How the layer reaches a container is a backend's business (:class:`WorkspaceTransport`): the local
Docker backend mounts it as an overlay volume (O(1) in the size of the directory); a backend without a
shared filesystem ships the policy-filtered tree in as an archive and brings the upper layer back the
same way, so diff and apply read the same :class:`StagedWorkspace` either way.

Ownership: an unprivileged agent cannot change files owned by another uid in the lower layer. The agent
therefore runs as the uid:gid that owns the directory (the usual case: a developer's checkout). A
root-owned directory cannot be handed to a non-root agent that way, so it is copied once into the
session (visible files only, owned by :data:`FALLBACK_UID`, except entries other users could not read:
those stay root's with their mode, so a 0600 file stays unreadable to the agent); ``mode`` says which
path was taken.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.hardlinks import linked_to_hidden
from hydra_sandbox.policy import PathMatcher, Policy
from hydra_sandbox.sandbox import quota
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.session_ids import check_session_id, session_path

FALLBACK_UID = 1000
FALLBACK_GID = 1000
WORKSPACE_IN_CONTAINER = "/workspace"
_UNSAFE_MOUNT_CHARS = (",", ":", "\n")


class StagedWorkspace(BaseModel):
    session_id: str
    source: Path = Field(description="The operator's directory; changes are applied here.")
    lowers: list[Path] = Field(description="Overlay lower layers, top first; the last is the base.")
    upper: Path
    work: Path
    volume_name: str
    mode: str = Field(description="overlay (O(1), the agent runs as the owner) or copy (root-owned source)")
    agent_uid: int
    agent_gid: int
    started_at_ns: int
    hidden_count: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    quota_mb: int | None = Field(default=None, description="The layer's disk quota (its own filesystem), if any.")
    max_apply_file_mb: int = Field(default=100, description="The policy's apply-size limit, for changes read back.")

    @property
    def session_dir(self) -> Path:
        return self.upper.parent.parent if self.quota_mb else self.upper.parent

    @property
    def hidden_file(self) -> Path:
        return self.session_dir / "hidden.txt"

    def hidden(self) -> set[str]:
        if not self.hidden_file.exists():
            return set()
        text = self.hidden_file.read_text(encoding="utf-8", errors="surrogateescape")
        return set(text.split("\0") if "\0" in text else text.splitlines()) - {""}


@runtime_checkable
class WorkspaceTransport(Protocol):
    """How a backend brings a session's layer into its container and the change set back home."""

    async def attach(self, ws: StagedWorkspace) -> Mount:
        """Make the layer available to the next container (first run or resume); the mount to give it."""
        ...

    async def release(self, ws: StagedWorkspace) -> None:
        """After the container is gone: the change set is in ``ws.upper`` on Hydra's disk when this
        returns, and what :meth:`attach` made elsewhere is removed."""
        ...

    async def discard(self, ws: StagedWorkspace) -> None:
        """Remove whatever :meth:`attach` made that may still exist (the layer itself is removed by
        :func:`remove_layer`)."""
        ...


@runtime_checkable
class ContainerWorkspace(Protocol):
    """The optional part of a :class:`WorkspaceTransport` whose workspace lives in the agent's container
    itself (a pod's emptyDir, filled and read over ``pods/exec``), so it can only be moved while that
    container exists. The orchestrator calls :meth:`after_create` once the agent's container is created
    (before it is started) and :meth:`before_remove` before the container is removed at the end of a
    run or of a re-attached run (not on a server shutdown: the container stays for the next server).
    Transports that keep the workspace elsewhere (an overlay, a volume) do not have these."""

    async def after_create(self, ws: StagedWorkspace, container_id: str) -> None:
        """Put the layer into the created container (its agent does not start before this is done)."""
        ...

    async def before_remove(self, ws: StagedWorkspace, container_id: str) -> None:
        """Bring the agent's change set home into ``ws.upper`` while the container still exists."""
        ...


def _check_source(source: Path) -> Path:
    if source.is_symlink():
        raise WorkspaceError(f"working_dir: {source} is a symbolic link", hint="pass the real directory")
    resolved = source.resolve()
    if not resolved.is_dir():
        raise WorkspaceError(f"working_dir: {source} is not a directory", hint="pass an existing project directory")
    if resolved == Path("/") or resolved in {Path("/etc"), Path("/usr"), Path("/var"), Path("/root"), Path("/home")}:
        raise WorkspaceError(f"working_dir: {resolved} is a system directory", hint="pass a project directory")
    if any(ch in str(resolved) for ch in _UNSAFE_MOUNT_CHARS):
        raise WorkspaceError(
            f"working_dir: {resolved} contains ',' ':' or a newline, which overlay cannot mount",
            hint="rename the directory or work on a copy",
        )
    return resolved


def hidden_paths(root: Path, matcher: PathMatcher) -> list[str]:
    """Workspace-relative paths to hide: denied directories whole (not descended), and every other
    entry the policy does not make visible."""
    hidden: list[str] = []
    linked: list[str] = []  # visible files with other names: maybe a hard link to a hidden file
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except OSError:
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if not matcher.is_visible(rel + "/") and _dir_wholly_hidden(matcher, rel):
                    hidden.append(rel)
                else:
                    stack.append(rel)
            elif not matcher.is_visible(rel):
                hidden.append(rel)
            elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_nlink > 1:
                linked.append(rel)
    return sorted(hidden + linked_to_hidden(root, hidden, linked))


def _dir_wholly_hidden(matcher: PathMatcher, rel: str) -> bool:
    """A directory is hidden as a whole only when a deny (or protected) glob covers it; otherwise an
    allow glob may still reach inside it, so its entries are judged one by one."""
    return matcher.is_denied(rel + "/")


def _mkdirs_like(upper: Path, lower: Path, rel_dir: str, uid: int, gid: int) -> None:
    """Create ``rel_dir`` in the upper layer with the lower directory's mode, owned by the agent."""
    current_upper, current_lower = upper, lower
    for part in [p for p in rel_dir.split("/") if p]:
        current_upper, current_lower = current_upper / part, current_lower / part
        if not current_upper.exists():
            mode = stat.S_IMODE(current_lower.lstat().st_mode) if current_lower.exists() else 0o755
            current_upper.mkdir(mode=mode)
            os.chmod(current_upper, mode)
            os.chown(current_upper, uid, gid)


def _whiteout(upper: Path, base: Path, rel: str, uid: int, gid: int) -> None:
    parent = rel.rpartition("/")[0]
    if parent:
        _mkdirs_like(upper, base, parent, uid, gid)
    target = upper / rel
    if target.exists() or target.is_symlink():
        return
    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _copy_visible(source: Path, dest: Path, matcher: PathMatcher, uid: int, gid: int, hidden: set[str]) -> None:
    """The fallback for root-owned sources: copy what the agent may see (not ``hidden``), owned by the agent."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel_dir = os.path.relpath(directory, source)
        out = set()
        for name in names:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                if _dir_wholly_hidden(matcher, rel):
                    out.add(name)
            elif not matcher.is_visible(rel) or rel in hidden:
                out.add(name)
        return out

    shutil.copytree(source, dest, symlinks=True, ignore=ignore)
    for dirpath, dirnames, filenames in os.walk(dest):
        for path in [dirpath] + [os.path.join(dirpath, name) for name in dirnames + filenames]:
            if _open_to_others(os.lstat(path)):
                os.lchown(path, uid, gid)
            # else: kept root's, with its own mode (copytree copies it): 0600 stays unreadable to the agent


def _open_to_others(st: os.stat_result) -> bool:
    """Whether any local user could read this entry of the root-owned source: only such entries are
    handed to the agent's uid in the copy."""
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
    return stat.S_ISLNK(st.st_mode) or st.st_mode & need == need


def prepare_layer(
    session_id: str,
    source: Path,
    policy: Policy,
    sessions_dir: Path,
    labels: dict[str, str],
    *,
    extra_lowers: list[Path] | None = None,
    agent_uid: int | None = None,
) -> StagedWorkspace:
    """Create the session's upper layer and hide what the policy hides (filesystem only, no backend); with
    ``policy.resources.disk_mb`` the layer lives on a filesystem of that size (:mod:`.quota`)."""
    resolved = _check_source(source)
    session_dir = session_path(sessions_dir, session_id)
    if (session_dir / "upper").exists() or quota.image_path(session_dir).exists():
        raise WorkspaceError(
            f"session {session_id} already has a workspace layer in {session_dir}",
            hint="resume the session, or discard its changes first",
        )
    session_dir.mkdir(parents=True, exist_ok=True)
    disk_mb = policy.resources.disk_mb
    layer_root = quota.create_quota_layer(session_dir, disk_mb) if disk_mb else session_dir
    upper, work = layer_root / "upper", layer_root / "work"
    upper.mkdir()
    work.mkdir()
    owner = resolved.stat()
    matcher = policy.matcher
    base = resolved
    if agent_uid is not None:
        uid, gid, mode = agent_uid, agent_uid, "overlay"
    elif owner.st_uid != 0:
        uid, gid, mode = owner.st_uid, owner.st_gid, "overlay"
    else:
        uid, gid, mode = FALLBACK_UID, FALLBACK_GID, "copy"
        base = session_dir / "lower"
    hidden = hidden_paths(resolved, matcher)
    if mode == "copy":
        _copy_visible(resolved, base, matcher, uid, gid, set(hidden))
        hidden = []
    os.chmod(upper, stat.S_IMODE(base.stat().st_mode))
    os.chown(upper, uid, gid)
    for rel in hidden:
        _whiteout(upper, base, rel, uid, gid)
    # NUL-separated: a hidden name may hold a newline
    (session_dir / "hidden.txt").write_text("\0".join(hidden), encoding="utf-8", errors="surrogateescape")
    return StagedWorkspace(
        session_id=session_id,
        source=resolved,
        lowers=[*(extra_lowers or []), base],
        upper=upper,
        work=work,
        volume_name=f"hydra-ws-{session_id}",
        mode=mode,
        agent_uid=uid,
        agent_gid=gid,
        started_at_ns=time.time_ns(),
        hidden_count=len(hidden),
        labels=labels,
        quota_mb=disk_mb,
        max_apply_file_mb=policy.resources.max_apply_file_mb,
    )


def remove_layer(ws: StagedWorkspace) -> None:
    """Delete the session's layers from Hydra's disk. Never follows links inside them: ``rmtree`` walks
    directory descriptors (``avoids_symlink_attacks``), so a directory swapped for a link meanwhile is
    unlinked, not entered; where that walk is missing, nothing is removed."""
    if not shutil.rmtree.avoids_symlink_attacks:
        raise WorkspaceError(
            f"session {ws.session_id}: this platform's rmtree can follow links, so {ws.session_dir} is kept",
            hint="remove the directory by hand",
        )
    check_session_id(ws.session_id, "remove_layer")
    if ws.session_dir.exists():
        quota.release_quota_layer(ws.session_dir)  # never rmtree through a mounted filesystem
        shutil.rmtree(ws.session_dir)


class LayerStore:
    """The sessions' staged workspaces, cached and kept on disk (``sessions/<id>/workspace.json``) so
    diff, apply, resume and re-attach work after a server restart."""

    def __init__(self, sessions_dir: Path) -> None:
        self.sessions_dir = sessions_dir
        self._cache: dict[str, StagedWorkspace] = {}

    def _path(self, session_id: str) -> Path:
        return session_path(self.sessions_dir, session_id, "workspace.json")

    def exists(self, session_id: str) -> bool:
        return session_id in self._cache or self._path(session_id).exists()

    def get(self, session_id: str) -> StagedWorkspace:
        ws = self._cache.get(session_id)
        if ws is None:
            path = self._path(session_id)
            if not path.exists():
                raise WorkspaceError(
                    f"session {session_id} has no workspace layer",
                    hint="it never started, or its layer was discarded",
                )
            ws = StagedWorkspace.model_validate_json(path.read_text())
            if ws.session_id != session_id or ws.upper != path.parent / "upper":
                raise WorkspaceError(f"{path}: it names session {ws.session_id} and layer {ws.upper}, not its own")
            self._cache[session_id] = ws
        return ws

    def save(self, ws: StagedWorkspace) -> None:
        self._path(ws.session_id).write_text(ws.model_dump_json())
        self._cache[ws.session_id] = ws

    def forget(self, session_id: str) -> None:
        self._cache.pop(session_id, None)
