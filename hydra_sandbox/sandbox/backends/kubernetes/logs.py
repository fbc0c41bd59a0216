"""Following an agent pod's log: timestamped lines, resumable without loss or repeats, bounded.

The API server's log endpoint (``follow=true&timestamps=true``) sends ``<RFC3339Nano> <line>`` per line,
stdout and stderr interleaved in one stream (splitting them is an alpha feature newer than the minimum
cluster version), so every line is reported as ``stdout``: Hydra's pipeline turns what is not Codex JSON
into ``output`` events either way. A follow stream can end before the container does (the API server or
a proxy closes it); the reader reads the log again and skips, by timestamp (:class:`LogCursor`), what it
already delivered. The Python client offers no ``sinceTime``, and ``sinceSeconds`` would depend on the
clocks of Hydra and the node agreeing, so a new pass reads from the start and skips: correct whatever
the clocks say, at the cost of re-reading a log that was interrupted (rare).

A reader thread hands lines to the event loop through a bounded queue: a slow consumer slows the reader
instead of growing memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.backends.docker.logs import LogCursor, coalesce, stamp_ns
from hydra_sandbox.sandbox.spec import LogStream

Item = tuple[LogStream, bytes] | BaseException | None
_QUEUE_ITEMS = 1024
_PUT_WAIT_S = 0.5
_REREAD_PAUSE_S = 0.5


class PodLogSource(Protocol):
    """What following needs from the cluster (:class:`~.runtime.KubernetesRuntime` provides it)."""

    def wait_started(self, pod: str) -> bool | None:
        """Watch the pod for a while: True once its agent container runs or ran, False when the window
        passed first, None when the pod is gone."""
        ...

    def open_log(self, pod: str, follow: bool) -> Any:
        """A streaming response of the pod's timestamped log (``.stream()`` yields bytes, ``.close()``);
        None when the pod is gone (and its log with it) or ended without ever running."""
        ...

    def pod_running(self, pod: str) -> bool:
        """Whether the pod's agent container may still write (pending or running)."""
        ...


def split_lines(chunks: Iterator[bytes], final: bool) -> Iterator[bytes]:
    """Whole lines (newline kept) from ``chunks``; the last unterminated piece only when ``final``
    (the container ended: nothing will complete it), else it is left for the next pass to read whole."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending and final:
        yield pending


def _read_pass(source: PodLogSource, pod: str, cursor: LogCursor, follow: bool, put: Callable[[Item], bool]) -> bool:
    """One pass over the pod's log, skipping what was delivered; False when the consumer went away."""
    response = source.open_log(pod, follow)
    cursor.start_pass()
    if response is None:
        return True
    try:
        for line in split_lines(response.stream(64 * 1024), final=not follow):
            stamp, _, data = line.partition(b" ")
            if cursor.seen(stamp_ns(stamp)):
                continue
            if not put(("stdout", data)):
                return False
        return True
    finally:
        response.close()


def _reader(source: PodLogSource, pod: str, put: Callable[[Item], bool], gone: threading.Event) -> None:
    """Once the container started, passes over the log until the pod stopped and a last, complete pass
    brought nothing new; ``gone`` is set when the consumer no longer waits."""
    try:
        while (started := source.wait_started(pod)) is False:
            if gone.is_set():
                return
        cursor = LogCursor()
        follow = started is True
        while True:
            if not _read_pass(source, pod, cursor, follow, put):
                return
            if cursor.new_in_pass == 0 and not follow:
                break
            if cursor.new_in_pass == 0 and gone.wait(_REREAD_PAUSE_S):
                return  # a follow stream that keeps ending empty is not read again at once
            follow = source.pod_running(pod)
        put(None)
    except BaseException as exc:
        put(exc)


class _Handoff:
    """Items from the reader thread to the event loop, through a bounded queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=_QUEUE_ITEMS)
        self.stopped = threading.Event()

    def put(self, item: Item) -> bool:
        """Called by the reader thread: waits while the queue is full; False once the consumer went away.
        One put per item, waited on until done (a put cancelled late could land and be sent again)."""
        if self.stopped.is_set():
            return False
        try:
            future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self._loop)
        except RuntimeError:  # the loop closed
            return False
        while True:
            try:
                future.result(_PUT_WAIT_S)
                return True
            except concurrent.futures.TimeoutError:
                if self.stopped.is_set():
                    future.cancel()
                    return False

    def drain(self, first: Item) -> list[Item]:
        items = [first]
        with contextlib.suppress(asyncio.QueueEmpty):
            while len(items) < _QUEUE_ITEMS:
                items.append(self.queue.get_nowait())
        return items


async def follow_pod_logs(source: PodLogSource, pod: str) -> AsyncIterator[tuple[LogStream, bytes]]:
    """The pod's output from its start, following until it exits, in chunks of up to 64 KiB."""
    handoff = _Handoff(asyncio.get_running_loop())
    thread = threading.Thread(
        target=_reader,
        args=(source, pod, handoff.put, handoff.stopped),
        name=f"logs-{pod}",
        daemon=True,
    )
    thread.start()
    try:
        while True:
            for chunk in coalesce(handoff.drain(await handoff.queue.get())):
                if chunk is None:
                    return
                if isinstance(chunk, BaseException):
                    raise RuntimeUnavailableError(f"lost the output of pod {pod}: {chunk}")
                yield chunk
                await asyncio.sleep(0)  # a chatty pod must not starve the event loop
    finally:
        handoff.stopped.set()
