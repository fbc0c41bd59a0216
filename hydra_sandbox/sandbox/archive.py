"""A session's workspace as a tar archive, for backends whose containers do not share Hydra's disk.

:func:`pack_workspace` streams exactly what the overlay would show the agent: the merged view of the
session's upper layer over its lower layers (nearest first), overlay whiteouts and opaque directories
respected, the paths the policy hides never included (they are whiteouts, and the list Hydra kept is
checked again). Links are stored as links, never followed; devices, fifos and sockets are left out;
modes and owners are kept as the overlay shows them (the agent's own files are the agent's; a file of
another user keeps that owner, so a ``0600`` file stays unreadable to the agent, as under the overlay).

The :class:`Manifest` it returns (path → type, mode, size, sha256 or link target) is the baseline Hydra
keeps on its own disk; :mod:`.archive_changes` compares the agent's tree with it when it comes back.
Backend-neutral: nothing here knows how the archive reaches the container.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

from hydra_sandbox.beneath import Tree
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.sandbox.workspace import StagedWorkspace

ROOT_MEMBER = "ws"
"""Top directory of a packed archive: its entry sets the owner and mode of the workspace's root."""
EntryType = Literal["file", "dir", "link"]


class ManifestEntry(BaseModel):
    type: EntryType
    mode: int = Field(description="Permission bits (st_mode & 0o7777).")
    size: int = 0
    sha256: str | None = None
    target: str | None = Field(default=None, description="A link's target, as stored.")


class Manifest(BaseModel):
    """What the agent was given: workspace-relative path → entry (the root itself is not listed)."""

    entries: dict[str, ManifestEntry] = Field(default_factory=dict)

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values())


def manifest_path(ws: StagedWorkspace) -> Path:
    """Where the baseline of the session's current run is kept (next to its layer, on Hydra's disk)."""
    return ws.session_dir / "baseline.json"


def save_manifest(ws: StagedWorkspace, manifest: Manifest) -> None:
    manifest_path(ws).write_text(manifest.model_dump_json(), encoding="utf-8")


def load_manifest(ws: StagedWorkspace) -> Manifest:
    path = manifest_path(ws)
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise WorkspaceError(
            f"session {ws.session_id}: no baseline {path.name} for the archive it sent",
            hint="the workspace was never packed for this run; its changes cannot be read back",
        ) from None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(tree: Tree, rel: str) -> bool:
    return tree.getxattr(rel, "trusted.overlay.opaque") == b"y"


def _merged_children(layers: list[Tree], rel_dir: str) -> Iterator[tuple[str, Tree, os.stat_result, list[Tree]]]:
    """``(name, layer, stat, child_layers)`` of each entry the agent sees in directory ``rel_dir``, whose
    layers (top first) are ``layers``: the topmost entry wins, a whiteout hides the name, and a directory
    merges with the same directory below it until an opaque one, a whiteout or a non-directory."""
    listed: dict[str, list[tuple[Tree, os.stat_result]]] = {}
    for layer in layers:
        try:
            entries = layer.scandir(rel_dir)
        except OSError:
            continue
        for name, st in entries:
            listed.setdefault(name, []).append((layer, st))
    for name in sorted(listed):
        found = listed[name]
        layer, st = found[0]
        if _is_whiteout(st):
            continue
        rel = f"{rel_dir}/{name}" if rel_dir else name
        below: list[Tree] = []
        if stat.S_ISDIR(st.st_mode):
            for lower, lst in found:
                if not stat.S_ISDIR(lst.st_mode):
                    break
                below.append(lower)
                if _opaque(lower, rel):
                    break
        yield name, layer, st, below


class _Hashing:
    """A file object that hashes what :mod:`tarfile` reads through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self._fh.read(size)
        self.digest.update(block)
        return block


def _info(rel: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"{ROOT_MEMBER}/{rel}" if rel else ROOT_MEMBER)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)
    return info


def _add_file(out: tarfile.TarFile, layer: Tree, rel: str, st: os.stat_result) -> ManifestEntry:
    info = _info(rel, st, tarfile.REGTYPE)
    try:
        fh = os.fdopen(layer.open(rel, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except OSError as exc:
        raise WorkspaceError(
            f"{rel}: the layer {layer.root} changed while it was packed ({exc.strerror})",
            hint="start the session again once the session that owns that layer has finished",
        ) from None
    with fh:
        now = os.fstat(fh.fileno())
        if not stat.S_ISREG(now.st_mode):
            raise WorkspaceError(f"{rel}: no longer a regular file in {layer.root} while it was packed")
        info.size = now.st_size
        reader = _Hashing(fh)
        try:
            out.addfile(info, reader)  # type: ignore[arg-type]
        except OSError as exc:  # the file shrank while it was read
            raise WorkspaceError(f"{rel}: changed size while it was packed ({exc})") from None
    return ManifestEntry(type="file", mode=info.mode, size=info.size, sha256=reader.digest.hexdigest())


EntryCheck = Callable[[str, os.stat_result], None]
"""Called with each entry about to be packed (``""`` is the root); raises to refuse the whole pack."""


def pack_workspace(ws: StagedWorkspace, out: BinaryIO, check: EntryCheck | None = None) -> Manifest:
    """Write the agent's view of ``ws`` to ``out`` as a tar stream (members under :data:`ROOT_MEMBER`,
    parents before children) and return its :class:`Manifest`. Nothing is held whole in memory.
    ``check`` sees every entry before it is written (a backend's own refusals)."""
    hidden = ws.hidden()
    manifest = Manifest()
    with contextlib.ExitStack() as stack:
        layers = [stack.enter_context(Tree(p)) for p in [ws.upper, *ws.lowers] if p.exists()]
        tar = stack.enter_context(tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT))
        root = os.fstat(layers[0].fd)
        if check is not None:
            check("", root)
        tar.addfile(_info("", root, tarfile.DIRTYPE))
        stack_dirs: list[tuple[str, list[Tree]]] = [("", layers)]
        while stack_dirs:
            rel_dir, dir_layers = stack_dirs.pop()
            for name, layer, st, below in _merged_children(dir_layers, rel_dir):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rel in hidden:
                    continue
                mode = stat.S_IMODE(st.st_mode)
                if check is not None and (
                    stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode) or stat.S_ISREG(st.st_mode)
                ):
                    check(rel, st)
                if stat.S_ISDIR(st.st_mode):
                    tar.addfile(_info(rel, st, tarfile.DIRTYPE))
                    manifest.entries[rel] = ManifestEntry(type="dir", mode=mode)
                    stack_dirs.append((rel, below))
                elif stat.S_ISLNK(st.st_mode):
                    info = _info(rel, st, tarfile.SYMTYPE)
                    info.linkname = layer.readlink(rel)
                    tar.addfile(info)
                    manifest.entries[rel] = ManifestEntry(type="link", mode=mode, target=info.linkname)
                elif stat.S_ISREG(st.st_mode):
                    manifest.entries[rel] = _add_file(tar, layer, rel, st)
                # devices, fifos and sockets are never shipped
    return manifest
