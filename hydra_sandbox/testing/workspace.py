"""Temporary workspaces for tests: a copy of a fixture directory that an agent can work on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hydra_sandbox.errors import WorkspaceError

ROOT_CALLER_OWNER = 1000
"""Owner of a workspace made by a root process: Hydra gives a non-root-owned tree the copy-on-write
(overlay) path and runs the agent as its owner; a root-owned one would take the slower copy path."""


def copy_workspace(
    fixture: Path | str, parent: Path | str, *, name: str | None = None, owner: int | None = None
) -> Path:
    """A fresh copy of the directory ``fixture`` under ``parent`` (``parent/name``, the fixture's name by
    default), owned by ``owner`` (default: the caller, or uid :data:`ROOT_CALLER_OWNER` when the caller is
    root). Symbolic links are copied as links."""
    source, parent = Path(fixture), Path(parent)
    if not source.is_dir():
        raise WorkspaceError(
            f"fixture directory {source} does not exist or is not a directory",
            hint="give a directory path (relative paths are relative to the test file in the pytest fixture)",
        )
    target = parent / (name or source.name)
    if target.exists():
        raise WorkspaceError(f"{target} already exists", hint="give each workspace of a test its own name")
    parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, symlinks=True)
    uid = owner if owner is not None else (ROOT_CALLER_OWNER if os.geteuid() == 0 else os.geteuid())
    if uid != os.geteuid():
        for path in [target, *target.rglob("*")]:
            os.lchown(path, uid, uid)
    os.chmod(parent, 0o755)  # the agent's uid must be able to reach its workspace
    return target
