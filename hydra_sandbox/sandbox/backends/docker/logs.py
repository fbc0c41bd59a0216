"""Following a container's log with docker-py: demultiplexed, timestamped, resumable, bounded.

Docker frames output line by line. A reader thread appends frames to a :class:`_FrameBuffer` and wakes
the event loop at most once per drain; the consumer joins consecutive frames of one stream into chunks
of up to 64 KiB. When more than ``_MAX_PENDING`` bytes wait, the reader waits too: a slow consumer slows
the container's log reader instead of growing memory. Every frame carries Docker's timestamp, so a
follow stream that ends early is read on from the last frame seen (:class:`LogCursor`) without a gap
and without a repeat.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.spec import LogStream

Item = tuple[LogStream, bytes] | BaseException | None
"""A frame, the error that ended the reader, or ``None`` at the end of the log."""

_CHUNK = 64 * 1024
_MAX_PENDING = 4 * 1024 * 1024


def _read_exactly(raw: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = raw.read(n - len(buf))
        if not part:
            break
        buf += part
    return bytes(buf)


def stamp_ns(stamp: bytes) -> int:
    """Docker's RFC 3339 timestamp with up to 9 fraction digits (trailing zeros trimmed) in ns."""
    text = stamp.decode("ascii").rstrip("Z")
    whole, _, fraction = text.partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


class LogCursor:
    """Where a reader is in a container's log: the newest timestamp seen and how many frames carried
    it, so a pass that starts ``since`` that time skips exactly what was already delivered."""

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.at_last = 0
        self.new_in_pass = 0
        self._skip_at_last = 0

    def start_pass(self) -> None:
        self.new_in_pass = 0
        self._skip_at_last = self.at_last

    def seen(self, ns: int) -> bool:
        """Whether the frame stamped ``ns`` was delivered before (and must be skipped)."""
        if self.last_ns is not None and ns < self.last_ns:
            return True
        if self.last_ns is not None and ns == self.last_ns and self._skip_at_last > 0:
            self._skip_at_last -= 1
            return True
        if ns == self.last_ns:
            self.at_last += 1
        else:
            self.last_ns, self.at_last, self._skip_at_last = ns, 1, 0
        self.new_in_pass += 1
        return False


def coalesce(
    items: list[Item],
) -> Iterator[Item]:
    """Join consecutive frames of the same stream into chunks of at most ``_CHUNK`` bytes."""
    stream: LogStream | None = None
    parts: list[bytes] = []
    size = 0
    for item in items:
        if isinstance(item, tuple) and item[0] == stream and size + len(item[1]) <= _CHUNK:
            parts.append(item[1])
            size += len(item[1])
            continue
        if stream is not None:
            yield stream, b"".join(parts)
        if isinstance(item, tuple):
            stream, parts, size = item[0], [item[1]], len(item[1])
        else:
            stream, parts, size = None, [], 0
            yield item
    if stream is not None:
        yield stream, b"".join(parts)


class _FrameBuffer:
    """Frames handed from the reader thread to the event loop, with back-pressure."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.wake = asyncio.Event()
        self._cond = threading.Condition()
        self._frames: deque[Item] = deque()
        self._pending = 0
        self._notified = False
        self._stopped = False

    def push(self, item: Item) -> bool:
        """Called by the reader thread; False once the consumer went away."""
        with self._cond:
            while self._pending > _MAX_PENDING and not self._stopped:
                self._cond.wait(0.5)
            if self._stopped:
                return False
            self._frames.append(item)
            if isinstance(item, tuple):
                self._pending += len(item[1])
            if not self._notified:
                self._notified = True
                self._loop.call_soon_threadsafe(self.wake.set)
        return True

    def drain(self) -> list[Item]:
        with self._cond:
            items = list(self._frames)
            self._frames.clear()
            self._pending = 0
            self._notified = False
            self._cond.notify_all()
        return items

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def _read_pass(api: Any, container_id: str, cursor: LogCursor, follow: bool, push: Callable[[Item], bool]) -> bool:
    """One pass over the container's log from ``cursor`` on; False when the consumer went away."""
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 1}
    if cursor.last_ns is not None:
        params["since"] = f"{cursor.last_ns // 1_000_000_000}.{cursor.last_ns % 1_000_000_000:09d}"
    response = api._get(api._url("/containers/{0}/logs", container_id), params=params, stream=True)
    api._raise_for_status(response)
    api._disable_socket_timeout(api._get_raw_response_socket(response))
    cursor.start_pass()
    try:
        while True:
            header = _read_exactly(response.raw, 8)  # stream id, 3 zero bytes, big-endian length
            if not header:
                return True
            length = int.from_bytes(header[4:8], "big")
            frame = _read_exactly(response.raw, length)
            if len(header) < 8 or len(frame) < length:
                raise RuntimeUnavailableError(f"the log stream of container {container_id[:12]} broke mid-frame")
            stamp, _, data = frame.partition(b" ")
            if cursor.seen(stamp_ns(stamp)):
                continue
            if not push(("stderr" if header[0] == 2 else "stdout", data)):
                return False
    finally:
        response.close()


def _reader(api: Any, container_id: str, push: Callable[[Item], bool]) -> None:
    """The reader thread: passes over the log until the container stopped and nothing new arrives."""
    try:
        cursor = LogCursor()
        follow = True
        while True:
            if not _read_pass(api, container_id, cursor, follow, push):
                return  # the consumer went away
            # Docker's follow stream can end when the container exits before a slow reader
            # has caught up; read on from the last frame seen until nothing new arrives.
            if cursor.new_in_pass == 0 and not follow:
                break
            follow = bool(api.inspect_container(container_id)["State"].get("Running"))
        push(None)
    except BaseException as exc:
        push(exc)


async def follow_logs(api: Any, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
    """Demultiplexed output of ``container_id`` (docker-py's low-level ``api``) from its start,
    following until the container exits."""
    buffer = _FrameBuffer(asyncio.get_running_loop())
    thread = threading.Thread(
        target=_reader, args=(api, container_id, buffer.push), name=f"logs-{container_id[:12]}", daemon=True
    )
    thread.start()
    try:
        while True:
            await buffer.wake.wait()
            buffer.wake.clear()
            for chunk in coalesce(buffer.drain()):
                if chunk is None:
                    return
                if isinstance(chunk, BaseException):
                    raise RuntimeUnavailableError(f"lost the output of container {container_id[:12]}: {chunk}")
                yield chunk
                # A chatty container must not starve the event loop (other sessions, tool calls):
                # with output always pending, nothing above would ever suspend.
                await asyncio.sleep(0)
    finally:
        buffer.stop()
