"""An in-memory Sandbox for manager and server tests: scripted events, a gate to hold runs, a record
of how many ran at once, and container observers told of each run as if it had a container."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import ApplyConflictError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox import ContainerObserver, EventSink, PlacementListener, RunRequest, RunResult
from hydra_sandbox.sandbox.supervisor import FailureCause
from hydra_sandbox.sandbox.workspace import StagedWorkspace

_FAILURE_OF: dict[str, FailureCause] = {"failed": "error", "timed_out": "timeout", "cancelled": "cancelled"}


class FakeFileChange(BaseModel):
    path: str
    status: str = "modified"
    old_path: str | None = None


class FakePreview(BaseModel):
    files: list[FakeFileChange]
    unified: str = ""
    refused: list[dict[str, str]] = []
    digest: str = ""


def fake_digest(changes: list[str]) -> str:
    return "fake:" + "\0".join(changes)


class FakeApplyResult(BaseModel):
    applied: bool
    written: list[str]


@dataclass
class FakeRun:
    drafts: list[EventDraft] = field(default_factory=list)
    result: RunResult = field(default_factory=lambda: RunResult(status="completed", has_changes=True))
    changes: list[str] = field(default_factory=lambda: ["app.py"])
    files: dict[str, str] | None = None
    """Files the agent writes (relative path -> content). When set, ``diff`` is the real
    :func:`~hydra_sandbox.diffing.compute_diff` over them, masked like the Docker sandbox's."""


def command(cmd: str, exit_code: int = 0, output: str = "") -> EventDraft:
    return EventDraft(
        type="command",
        text=f"$ {cmd}\n{output}",
        data={"command": cmd, "exit_code": exit_code, "output": output},
    )


def ran_tests(passed: bool = True, runner: str = "pytest") -> EventDraft:
    return EventDraft(
        type="test",
        text=f"{runner} {'passed' if passed else 'failed'}",
        data={"runner": runner, "passed": passed, "exit_code": 0 if passed else 1},
    )


def message(text: str) -> EventDraft:
    return EventDraft(type="message", text=text, data={})


class FakeSandbox:
    def __init__(self, mask: Callable[[str], str] | None = None, layers: Path | None = None) -> None:
        self.mask = mask or (lambda text: text)
        self.layers = layers
        self.workspaces: dict[str, StagedWorkspace] = {}
        self.runs: dict[str, FakeRun] = {}
        self.default = FakeRun(
            drafts=[
                command("pytest -q", 0, "3 passed"),
                ran_tests(True),
                message("I changed app.py; summary: fixed the bug"),
            ]
        )
        self.gate: asyncio.Event | None = None
        self.active = 0
        self.max_active = 0
        self.started: list[str] = []
        self.requests: list[RunRequest] = []
        self.applied: list[str] = []
        self.apply_terms: list[tuple[str, str | None, bool]] = []
        self.discarded: list[str] = []
        self.live: set[str] = set()
        self.follow_calls: list[tuple[str, int]] = []
        self.observers: list[ContainerObserver] = []
        self.host = "local"
        """Where its runs say they are placed (before their first event, as the real sandbox does)."""
        self.placement_listeners: list[PlacementListener] = []
        self.unanswered: set[str] = set()

    def add_placement_listener(self, listener: PlacementListener) -> None:
        self.placement_listeners.append(listener)

    async def unanswered_hosts(self) -> set[str]:
        return set(self.unanswered)

    def _placed(self, session_id: str) -> None:
        for listener in self.placement_listeners:
            listener(session_id, self.host)

    def add_observer(self, observer: ContainerObserver) -> None:
        self.observers.append(observer)

    def _report(self, result: RunResult) -> RunResult:
        cause = _FAILURE_OF.get(result.status)
        for observer in self.observers:
            if cause is not None:
                observer.container_failed(cause)
        return result

    def script(self, prompt_marker: str, run: FakeRun) -> None:
        self.runs[prompt_marker] = run

    def _run_for(self, request: RunRequest) -> FakeRun:
        for marker, run in self.runs.items():
            if marker in request.prompt:
                return run
        return self.default

    async def run(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        self.requests.append(request)
        self.started.append(request.session_id)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self._placed(request.session_id)
        for observer in self.observers:
            observer.container_started()
        try:
            return self._report(await self._play(request, sink, cancel))
        finally:
            self.active -= 1

    async def _play(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        script = self._run_for(request)
        if script.files is not None:
            assert self.layers is not None, "FakeSandbox(layers=DIR) is needed to script files"
            self.workspaces[request.session_id] = _write_layer(self.layers, request, script.files)
        await sink(
            EventDraft(
                type="status",
                text="thread started",
                data={"thread_id": f"thread-{request.session_id}", "seq": 0},
            )
        )
        for seq, draft in enumerate(script.drafts, start=1):
            if cancel.is_set():
                return RunResult(status="cancelled", reason="terminated")
            await sink(draft.model_copy(update={"data": {**draft.data, "seq": seq}}))
        if self.gate is not None:
            gate_wait = asyncio.create_task(self.gate.wait())
            cancel_wait = asyncio.create_task(cancel.wait())
            done, pending = await asyncio.wait({gate_wait, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if cancel_wait in done:
                return RunResult(status="cancelled", reason="terminated")
        return script.result.model_copy(update={"thread_id": f"thread-{request.session_id}"})

    async def follow(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event, skip: int) -> RunResult:
        self.follow_calls.append((request.session_id, skip))
        self._placed(request.session_id)
        script = self._run_for(request)
        drafts = [
            EventDraft(
                type="status",
                text="thread started",
                data={"thread_id": f"thread-{request.session_id}", "seq": 0},
            )
        ]
        drafts += [d.model_copy(update={"data": {**d.data, "seq": i}}) for i, d in enumerate(script.drafts, 1)]
        for draft in drafts:  # a re-attach replays the whole log; the recorder drops what it has
            await sink(draft)
        return script.result

    def _changes(self, session_id: str) -> list[str]:
        request = next((r for r in self.requests if r.session_id == session_id), None)
        return (self._run_for(request) if request is not None else self.default).changes

    async def diff(self, session_id: str, policy: Policy) -> Any:
        ws = self.workspaces.get(session_id)
        if ws is not None:
            return compute_diff(ws, policy, mask=self.mask)
        changes = self._changes(session_id)
        return FakePreview(files=[FakeFileChange(path=p) for p in changes], digest=fake_digest(changes))

    async def apply(
        self,
        session_id: str,
        policy: Policy,
        *,
        confirm: bool,
        digest: str | None = None,
        acknowledge_masked: bool = False,
    ) -> Any:
        self.apply_terms.append((session_id, digest, acknowledge_masked))
        if not confirm:
            return FakeApplyResult(applied=False, written=[])
        ws = self.workspaces.get(session_id)
        expected = compute_diff(ws, policy).digest if ws is not None else fake_digest(self._changes(session_id))
        if digest != expected:
            raise ApplyConflictError(f"session {session_id}: digest: the change set is not the one reviewed")
        self.applied.append(session_id)
        return FakeApplyResult(applied=True, written=self._changes(session_id))

    async def discard(self, session_id: str) -> None:
        self.discarded.append(session_id)

    async def live_sessions(self) -> set[str]:
        return set(self.live)

    async def status(self) -> dict[str, object]:
        return {"docker": "fake", "agent_image": "fake", "codex_version": "fake"}

    async def close(self) -> None:
        return None


def _write_layer(layers: Path, request: RunRequest, files: dict[str, str]) -> StagedWorkspace:
    """An overlay upper layer holding ``files`` over the request's working directory (no Docker)."""
    root = layers / request.session_id
    upper = root / "upper"
    upper.mkdir(parents=True)
    for rel, content in files.items():
        path = upper / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (root / "work").mkdir()
    return StagedWorkspace(
        session_id=request.session_id,
        source=request.working_dir,
        lowers=[request.working_dir],
        upper=upper,
        work=root / "work",
        volume_name=f"fake-{request.session_id}",
        mode="copy",
        agent_uid=0,
        agent_gid=0,
        started_at_ns=time.time_ns(),
    )
