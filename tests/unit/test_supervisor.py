"""The supervisor over a scripted runtime: truncation, timeout, cancellation, OOM, pid exhaustion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hydra_sandbox.sandbox.spec import ContainerInfo, LogStream
from hydra_sandbox.sandbox.supervisor import supervise


class ScriptedRuntime:
    def __init__(self, chunks: list[bytes], *, exit_code: int = 0, oom: bool = False, hang: bool = False) -> None:
        self.chunks, self.exit_code, self.oom, self.hang = chunks, exit_code, oom, hang
        self.stopped = asyncio.Event()

    async def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
        for chunk in self.chunks:
            yield "stdout", chunk
        if self.hang:
            await self.stopped.wait()

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        self.stopped.set()

    async def wait(self, container_id: str, timeout_s: float | None = None) -> int | None:
        return 137 if self.hang else self.exit_code

    async def inspect(self, container_id: str) -> ContainerInfo:
        return ContainerInfo(id=container_id, name="c", status="exited", oom_killed=self.oom)


async def run(runtime: ScriptedRuntime, **kw: object) -> tuple[object, list[bytes]]:
    seen: list[bytes] = []

    async def on_output(stream: LogStream, chunk: bytes) -> None:
        seen.append(chunk)

    args = {"timeout_s": 5.0, "max_output_bytes": 1_000_000, "on_output": on_output, "grace_s": 0.1} | kw
    outcome = await supervise(runtime, "c1", **args)  # type: ignore[arg-type]
    return outcome, seen


async def test_output_beyond_the_limit_is_truncated_once_with_a_marker() -> None:
    outcome, seen = await run(ScriptedRuntime([b"x" * 600, b"y" * 600, b"z" * 600]), max_output_bytes=1000)
    data = b"".join(seen)
    assert outcome.truncated and outcome.output_bytes == 1800  # type: ignore[attr-defined]
    assert data.count(b"output truncated after 1000 bytes") == 1
    assert data.startswith(b"x" * 600 + b"y" * 400) and b"z" not in data


async def test_an_agent_printing_past_its_output_limit_is_stopped_and_the_run_fails_saying_so() -> None:
    runtime = ScriptedRuntime([b"x" * 600, b"y" * 600], hang=True)  # would write on until stopped
    outcome, seen = await run(runtime, max_output_bytes=1000, timeout_s=30)
    assert runtime.stopped.is_set(), "the agent was left writing past its output limit"
    assert outcome.status == "failed" and outcome.failure == "output"  # type: ignore[attr-defined]
    assert "output limit of 1000 bytes" in outcome.reason and "stopped" in outcome.reason  # type: ignore[attr-defined,operator]
    assert b"".join(seen).count(b"the agent was stopped") == 1


async def test_wall_clock_limit_stops_the_container() -> None:
    runtime = ScriptedRuntime([b"working"], hang=True)
    outcome, _ = await run(runtime, timeout_s=0.2)
    assert outcome.status == "timed_out" and runtime.stopped.is_set()  # type: ignore[attr-defined]
    assert outcome.failure == "timeout"  # type: ignore[attr-defined]


async def test_cancellation_stops_the_container() -> None:
    runtime = ScriptedRuntime([], hang=True)
    cancel = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, cancel.set)
    outcome, _ = await run(runtime, cancel=cancel)
    assert outcome.status == "cancelled" and runtime.stopped.is_set()  # type: ignore[attr-defined]
    assert outcome.failure == "cancelled"  # type: ignore[attr-defined]


async def test_oom_kill_is_reported_as_such() -> None:
    outcome, _ = await run(ScriptedRuntime([b"alloc"], exit_code=137, oom=True))
    assert outcome.status == "failed" and "out of memory" in outcome.reason  # type: ignore[attr-defined,operator]
    assert outcome.failure == "oom"  # type: ignore[attr-defined]


async def test_pid_exhaustion_is_reported_as_such() -> None:
    outcome, _ = await run(ScriptedRuntime([b"bash: fork: Resource temporarily unavailable"], exit_code=254))
    assert outcome.status == "failed" and "process limit" in outcome.reason  # type: ignore[attr-defined,operator]
    assert outcome.failure == "pids"  # type: ignore[attr-defined]


async def test_clean_exit_is_completed() -> None:
    outcome, seen = await run(ScriptedRuntime([b"ok"]))
    assert outcome.status == "completed" and seen == [b"ok"]  # type: ignore[attr-defined]
    assert outcome.failure is None  # type: ignore[attr-defined]


async def test_other_non_zero_exit_is_an_error() -> None:
    outcome, _ = await run(ScriptedRuntime([b"boom"], exit_code=2))
    assert outcome.status == "failed" and outcome.failure == "error"  # type: ignore[attr-defined]
