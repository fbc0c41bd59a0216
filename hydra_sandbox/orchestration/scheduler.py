"""Scheduling: a FIFO queue of session ids, a fixed number of workers (the concurrency cap), and the
background tasks that are not queued (following a re-attached run, a resume)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Scheduler:
    """Runs ``work(session_id)`` for each submitted id, at most ``max_concurrent`` at once, in order.

    A crash of one run must not kill its worker: ``on_crash(session_id, exc)`` is told instead."""

    def __init__(
        self,
        max_concurrent: int,
        work: Callable[[str], Awaitable[None]],
        on_crash: Callable[[str, Exception], Awaitable[None]],
    ) -> None:
        self.max_concurrent = max_concurrent
        self._work = work
        self._on_crash = on_crash
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._worker(), name=f"hydra-worker-{i}") for i in range(self.max_concurrent)
        ]

    def submit(self, session_id: str) -> None:
        self._queue.put_nowait(session_id)

    def in_background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` beside the workers (not counted against the queue); cancelled at :meth:`close`."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel the workers and background tasks and wait for them."""
        tasks = [*self._workers, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()

    async def _worker(self) -> None:
        while True:
            session_id = await self._queue.get()
            try:
                await self._work(session_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the worker; the session is failed with the reason
                log.exception("session %s crashed", session_id)
                await self._on_crash(session_id, exc)
            finally:
                self._queue.task_done()
