"""Hand-built overlay layers for the preview, diff and apply tests: a session staged over folders on disk
(no Docker, no mount), and the whiteout overlay writes for a deleted entry."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from hydra_sandbox.sandbox.workspace import StagedWorkspace


def whiteout(path: Path) -> None:
    """What overlayfs writes in an upper layer for a deleted entry: a 0/0 character device."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def staged_workspace(
    session: Path, source: Path, *parents: Path, session_id: str = "s-0123456789ab", started_at_ns: int | None = None
) -> StagedWorkspace:
    """A session whose upper and work folders are under ``session`` (made if missing), over the parent
    sessions' layers ``parents`` (top first) and the host folder ``source``."""
    (session / "upper").mkdir(parents=True, exist_ok=True)
    (session / "work").mkdir(exist_ok=True)
    return StagedWorkspace(
        session_id=session_id,
        source=source,
        lowers=[*parents, source],
        upper=session / "upper",
        work=session / "work",
        volume_name="v",
        mode="overlay",
        agent_uid=os.getuid(),
        agent_gid=os.getgid(),
        started_at_ns=time.time_ns() if started_at_ns is None else started_at_ns,
    )
