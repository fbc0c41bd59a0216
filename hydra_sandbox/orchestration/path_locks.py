"""Locks over directory trees, for apply: two applies whose working directories overlap (the same
directory, or one inside the other: ``/p`` and ``/p/sub``) never run at once, so the second one checks
its conflicts against what the first wrote. Applies to unrelated directories still run side by side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import PurePath


def overlaps(a: PurePath, b: PurePath) -> bool:
    """``a`` and ``b`` are the same directory, or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def paths_under(root: PurePath, other_root: PurePath, paths: Iterable[str]) -> set[str]:
    """``paths`` (relative to ``other_root``) that lie under ``root``, made relative to ``root``."""
    out: set[str] = set()
    for rel in paths:
        full = other_root / rel
        if full != root and root in full.parents:
            out.add(full.relative_to(root).as_posix())
    return out


class PathLocks:
    """Async locks keyed by directory, where a holder of a path excludes every overlapping path.

    Event loop only. Fairness is not promised: a waiter runs when no overlapping path is held."""

    def __init__(self) -> None:
        self._held: list[PurePath] = []
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.asynccontextmanager
    async def hold(self, path: PurePath) -> AsyncIterator[None]:
        while any(overlaps(path, other) for other in self._held):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self._held.append(path)
        try:
            yield
        finally:  # nothing awaited here: a cancelled holder always releases
            self._held.remove(path)
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def held(self) -> list[PurePath]:
        """The paths held now (for status and tests)."""
        return list(self._held)
