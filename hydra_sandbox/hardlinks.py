"""Hard links: a visible file that shares its inode with a hidden file shows the hidden file's content
(``ln .env notes.txt``), so it is hidden too. Only files with more than one link can be such a file, so
the hidden side is looked at only when a visible candidate exists."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path


def _inodes_under(root: Path, rel: str) -> set[tuple[int, int]]:
    """(device, inode) of every multiply-linked regular file at ``rel``: the file itself, or every file
    below it when it is a directory (links are not followed)."""
    path = root / rel
    try:
        st = path.lstat()
    except OSError:
        return set()
    if stat.S_ISREG(st.st_mode):
        return {(st.st_dev, st.st_ino)} if st.st_nlink > 1 else set()
    out: set[tuple[int, int]] = set()
    if stat.S_ISDIR(st.st_mode):
        for dirpath, _dirs, files in os.walk(path, followlinks=False):
            for name in files:
                try:
                    inner = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISREG(inner.st_mode) and inner.st_nlink > 1:
                    out.add((inner.st_dev, inner.st_ino))
    return out


def is_multiply_linked(path: Path) -> bool:
    """A regular file with more than one name (the only kind :func:`linked_to_hidden` can return)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


def linked_to_hidden(root: Path, hidden: Iterable[str], candidates: Iterable[str]) -> list[str]:
    """The ``candidates`` (workspace-relative, visible, multiply linked) that are the same file as a
    hidden one (``hidden``: workspace-relative files or directories)."""
    wanted = list(candidates)
    if not wanted:
        return []
    secret: set[tuple[int, int]] = set()
    for rel in hidden:
        secret |= _inodes_under(root, rel)
    out = []
    for rel in wanted:
        try:
            st = (root / rel).lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in secret:
            out.append(rel)
    return sorted(out)
