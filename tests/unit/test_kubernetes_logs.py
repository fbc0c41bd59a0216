"""Following a pod's log without a cluster: a scripted source stands in for the API server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.backends.kubernetes.logs import follow_pod_logs, split_lines


class Response:
    def __init__(self, body: bytes, piece: int) -> None:
        self.body, self.piece, self.closed = body, piece, False

    def stream(self, _amount: int) -> Iterator[bytes]:
        for start in range(0, len(self.body), self.piece):
            yield self.body[start : start + self.piece]

    def close(self) -> None:
        self.closed = True


class Source:
    """A pod whose log is ``lines``; each follow stream is cut after ``cut`` lines (None: whole)."""

    def __init__(self, lines: list[bytes], cut: int | None = None, running_passes: int = 1) -> None:
        self.lines, self.cut, self.running_passes = lines, cut, running_passes
        self.opened: list[bool] = []
        self.responses: list[Response] = []
        self.lock = threading.Lock()

    def wait_started(self, pod: str) -> bool | None:
        return True

    def open_log(self, pod: str, follow: bool) -> Any:
        with self.lock:
            self.opened.append(follow)
            lines = self.lines[: self.cut] if follow and self.cut is not None else self.lines
            self.responses.append(Response(b"".join(lines), piece=7))  # pieces split lines anywhere
            return self.responses[-1]

    def pod_running(self, pod: str) -> bool:
        with self.lock:
            return len(self.opened) < self.running_passes


def stamped(n: int, second: int = 1) -> bytes:
    return f"2026-01-01T00:00:{second:02d}.{n:09d}Z line {n}\n".encode()


async def read_all(source: Source, slow: bool = False) -> bytes:
    out = []
    async for stream, chunk in follow_pod_logs(source, "p"):
        assert stream == "stdout"
        out.append(chunk)
        if slow:
            await asyncio.sleep(0)
    return b"".join(out)


def test_split_lines_keeps_an_unterminated_tail_only_at_the_end() -> None:
    pieces = [b"a\nb", b"c\nd"]
    assert list(split_lines(iter(pieces), final=False)) == [b"a\n", b"bc\n"]
    assert list(split_lines(iter(pieces), final=True)) == [b"a\n", b"bc\n", b"d"]


async def test_every_line_arrives_once_in_order_past_the_queue_with_a_slow_reader() -> None:
    lines = [stamped(n) for n in range(3000)]  # more than the hand-off queue holds
    source = Source(lines)
    output = await asyncio.wait_for(read_all(source, slow=True), 60)
    assert output == b"".join(f"line {n}\n".encode() for n in range(3000))
    assert all(r.closed for r in source.responses)


async def test_a_cut_stream_is_read_again_and_only_new_lines_are_delivered() -> None:
    lines = [stamped(n) for n in range(10)]
    source = Source(lines, cut=4, running_passes=2)
    output = await asyncio.wait_for(read_all(source), 60)
    assert output == b"".join(f"line {n}\n".encode() for n in range(10))
    assert source.opened[0] is True and source.opened[-1] is False  # the last pass reads the finished log


async def test_a_broken_timestamp_ends_the_stream_with_an_error_naming_the_pod() -> None:
    source = Source([b"not-a-time line\n"])
    with pytest.raises(RuntimeUnavailableError, match="lost the output of pod p"):
        await asyncio.wait_for(read_all(source), 60)
