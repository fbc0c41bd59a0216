"""Hydra's data at rest is private: the data home and the folders in it are 0700 and the journal 0600
from the moment they are created (explicit modes, so the process umask does not matter), and a home
left looser by an older version is tightened when Hydra opens it. ``hydra doctor`` reports what is not.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, keep: int) -> None:
    st = path.lstat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~keep & 0o777:
        os.chmod(path, stat.S_IMODE(st.st_mode) & keep, follow_symlinks=False)


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """``path`` created 0700 when missing (its parents with the usual modes); with ``tighten``, an
    existing one that belongs to this user and is open to group or others is made 0700."""
    if not path.exists():
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_DIR)
    elif tighten:
        _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 when missing (never through a link), tightened to 0600 when
    it is this user's and looser. SQLite gives its ``-wal`` and ``-shm`` files the database's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE))
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)
    return path


def exposed(paths: list[Path]) -> list[str]:
    """``"path (mode)"`` for each existing path that group or others may read, write or enter."""
    out = []
    for path in paths:
        try:
            mode = stat.S_IMODE(path.lstat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            out.append(f"{path} ({oct(mode)})")
    return out
