"""Supervising one agent container: stream its output, enforce the wall-clock limit and the output
limit, honour cancellation, and say how it ended (OOM and pid exhaustion named as such).

Past the output limit the agent is stopped, not left writing on: what it printed up to the limit is
kept, one marker says why it ended, and the run fails with the reason (its raw output would otherwise
keep growing in the engine's log).

Stopping on request (``cancel``) or on timeout is shielded from cancellation of the caller. A cancelled
caller (server shutdown) detaches instead: the container keeps running for the next server to re-attach.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel

from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LogStream

OutputHandler = Callable[[LogStream, bytes], Awaitable[None]]
PID_EXHAUSTION_MARKERS = (b"Resource temporarily unavailable", b"fork: retry", b"Cannot fork")


OutcomeStatus = Literal["completed", "failed", "timed_out", "cancelled"]
FailureCause = Literal["timeout", "oom", "pids", "output", "error", "cancelled", "budget"]
"""Why a container run did not complete; a small fixed set, so it can label a metric."""


class RunOutcome(BaseModel):
    status: OutcomeStatus
    exit_code: int | None = None
    reason: str | None = None
    failure: FailureCause | None = None
    output_bytes: int = 0
    truncated: bool = False


def truncation_marker(limit: int) -> bytes:
    return f"\n[hydra: output truncated after {limit} bytes; the agent was stopped]\n".encode()


class _Pump:
    """Hands the container's output to ``on_output`` up to ``limit`` bytes, then one marker; counts on."""

    def __init__(self, limit: int, on_output: OutputHandler) -> None:
        self.limit = limit
        self.on_output = on_output
        self.total = 0
        self.truncated = False
        self.pid_trouble = False
        self.capped = asyncio.Event()
        """Set when the output passes the limit: the container is to be stopped."""

    async def run(self, runtime: ContainerRuntime, container_id: str) -> None:
        async for stream, chunk in runtime.stream_logs(container_id):
            if any(m in chunk for m in PID_EXHAUSTION_MARKERS):
                self.pid_trouble = True
            room = self.limit - self.total
            self.total += len(chunk)
            if self.truncated:
                continue
            if len(chunk) <= room:
                await self.on_output(stream, chunk)
                continue
            if room > 0:
                await self.on_output(stream, chunk[:room])
            self.truncated = True
            self.capped.set()
            await self.on_output("stderr", truncation_marker(self.limit))


async def _until_end(
    runtime: ContainerRuntime,
    container_id: str,
    pump: _Pump,
    pump_task: asyncio.Task[None],
    cancel: asyncio.Event,
    timeout_s: float,
    grace_s: float,
) -> str | None:
    """Wait for the output to end, a cancel request, the output limit or the timeout; stop the container
    on the latter three (shielded) and say which it was. A cancelled caller (server shutdown) leaves the agent running
    so the next server re-attaches to it; `hydra gc` removes real orphans."""
    cancel_task = asyncio.create_task(cancel.wait())
    capped_task = asyncio.create_task(pump.capped.wait())
    try:
        done, _pending = await asyncio.wait(
            {pump_task, cancel_task, capped_task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if pump_task in done and not pump.truncated:
            pump_task.result()
            return None
        ended_by = "cancelled" if cancel_task in done else "output_limit" if pump.truncated else "timed_out"
        await asyncio.shield(runtime.stop(container_id, grace_s))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump_task), timeout=grace_s + 5)
        return ended_by
    finally:
        cancel_task.cancel()
        capped_task.cancel()
        if not pump_task.done():
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump_task


async def supervise(
    runtime: ContainerRuntime,
    container_id: str,
    *,
    timeout_s: float,
    max_output_bytes: int,
    on_output: OutputHandler,
    cancel: asyncio.Event | None = None,
    grace_s: float = 10.0,
) -> RunOutcome:
    pump = _Pump(max_output_bytes, on_output)
    pump_task = asyncio.create_task(pump.run(runtime, container_id), name=f"pump-{container_id[:12]}")
    ended_by = await _until_end(
        runtime, container_id, pump, pump_task, cancel or asyncio.Event(), timeout_s, grace_s
    )
    exit_code = await runtime.wait(container_id, timeout_s=grace_s + 10)
    info = await runtime.inspect(container_id)

    def outcome(status: OutcomeStatus, reason: str | None = None, failure: FailureCause | None = None) -> RunOutcome:
        return RunOutcome(
            status=status,
            reason=reason,
            failure=failure,
            exit_code=exit_code,
            output_bytes=pump.total,
            truncated=pump.truncated,
        )

    if ended_by == "cancelled":
        return outcome("cancelled", "terminated on request", "cancelled")
    if ended_by == "timed_out":
        return outcome("timed_out", f"wall-clock limit of {timeout_s:g} s reached", "timeout")
    if ended_by == "output_limit":
        return outcome("failed", f"output limit of {max_output_bytes} bytes reached: the agent was stopped", "output")
    if info.oom_killed:
        return outcome("failed", "out of memory (OOM killed)", "oom")
    if exit_code == 0:
        return outcome("completed")
    if pump.pid_trouble:
        return outcome("failed", f"process limit reached (exit code {exit_code})", "pids")
    return outcome("failed", f"exit code {exit_code}", "error")
