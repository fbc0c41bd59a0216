"""The seam between the AgentManager and whatever runs an agent: :class:`Sandbox` and its models.

The real implementation is the backend-neutral orchestrator over a backend's runtime (hardened
container, copy-on-write workspace, egress control, the real Codex CLI); tests of the manager and the
MCP server use a fake that implements the same Protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from hydra_sandbox.events import EventDraft
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.supervisor import FailureCause

if TYPE_CHECKING:
    from hydra_sandbox.applying import ApplyResult
    from hydra_sandbox.diffing import DiffPreview


class RunRequest(BaseModel):
    """One run of Codex for a session (the first run, or a resume)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    profile_id: str
    parent_session_id: str | None = None
    policy: Policy
    prompt: str
    working_dir: Path
    model: str
    read_only: bool = False
    run_index: int = Field(default=0, ge=0, description="0 for the first run, then 1, 2 ... per resume.")
    resume_thread_id: str | None = None
    test_runners: list[str] = Field(default_factory=list)
    layer_sessions: list[str] = Field(
        default_factory=list, description="Ancestor sessions whose changes this session sees, nearest first."
    )
    secrets: list[str] = Field(default_factory=list, repr=False, description="Values to mask by value.")
    host: str | None = Field(
        default=None,
        description="Where the session's agent ran last (its Codex home is there), as the session records it; "
        "a sandbox over several engines prefers it for a resume and looks there first to re-attach.",
    )


class RunResult(BaseModel):
    status: Literal["completed", "failed", "timed_out", "cancelled"]
    reason: str | None = None
    exit_code: int | None = None
    thread_id: str | None = None
    has_changes: bool = False
    output_truncated: bool = False


EventSink = Callable[[EventDraft], Awaitable[object]]
"""Where a sandbox sends the events of a run; drafts carry ``data['seq']``, their place in the run."""


class ContainerObserver(Protocol):
    """Told when an agent container starts and when a container run ends without completing."""

    def container_started(self) -> None: ...

    def container_failed(self, cause: FailureCause) -> None: ...


@runtime_checkable
class ObservableSandbox(Protocol):
    """A sandbox that runs containers and reports them to observers (the metrics, for one)."""

    def add_observer(self, observer: ContainerObserver) -> None: ...


PlacementListener = Callable[[str, str], None]
"""Told ``(session_id, host)`` when a session's agent container starts on an engine, or is found there
again after a restart; ``host`` names the engine (never a credential), ``local`` for the local one."""


@runtime_checkable
class PlacingSandbox(Protocol):
    """A sandbox that says where each session's agent runs (the ``host`` of ``list_sessions``)."""

    def add_placement_listener(self, listener: PlacementListener) -> None: ...

    async def unanswered_hosts(self) -> set[str]:
        """Hosts that do not answer now while others do: their running agents cannot be seen, so a
        restarted server re-attaches to their sessions (:meth:`Sandbox.follow` waits for the host)
        instead of failing them."""
        ...


@runtime_checkable
class Sandbox(Protocol):
    async def run(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        """Run Codex to its end (or cancellation); every event goes to ``sink`` in order."""
        ...

    async def follow(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event, skip: int) -> RunResult:
        """Re-attach to a run whose container is still alive; drop the first ``skip`` events."""
        ...

    async def diff(self, session_id: str, policy: Policy) -> DiffPreview: ...

    async def apply(
        self,
        session_id: str,
        policy: Policy,
        *,
        confirm: bool,
        digest: str | None = None,
        acknowledge_masked: bool = False,
    ) -> ApplyResult:
        """Write the change set (only the one of ``digest`` when given); masked spans need
        ``acknowledge_masked``."""
        ...

    async def discard(self, session_id: str) -> None: ...

    async def live_sessions(self) -> set[str]:
        """Sessions that have a running agent container (found by label)."""
        ...

    async def status(self) -> dict[str, object]:
        """Health of the runtime for ``hydra://status``: docker, images, codex version."""
        ...

    async def close(self) -> None: ...
