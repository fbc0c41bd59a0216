"""Drive Hydra's MCP tools from a test: spawn an agent, wait for it, read its diff, events and checklist,
apply or discard. Works over any connected ``fastmcp.Client``: in-process, stdio or streamable HTTP.

    session = await spawn(client, workspace, "FIX-CALC: make the failing test pass")
    outcome = await session.wait()
    assert outcome.status == "awaiting_approval" and outcome.checklist_done()["tests_passed"]
    diff = await session.diff()
    await session.apply()
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastmcp import Client
from pydantic import BaseModel, Field

from hydra_sandbox.applying import ApplyResult
from hydra_sandbox.checklists import ChecklistState
from hydra_sandbox.diffing import DiffPreview
from hydra_sandbox.errors import ToolCallError
from hydra_sandbox.events import Event

FINISHED = {"awaiting_approval", "completed", "failed", "cancelled", "timed_out"}
WAIT_CHUNK_S = 30.0
"""One ``wait_session`` call waits at most this long, so no client read timeout is ever reached."""


async def call_tool(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """The structured result of a tool call; a :class:`ToolCallError` with the server's message if the
    call failed (a refused policy, an unknown session, ...)."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise ToolCallError(f"{tool} failed: {text}", hint=f"arguments: {json.dumps(arguments, default=str)[:300]}")
    return dict(result.structured_content or {})


class SessionOutcome(BaseModel):
    """Where a session stands after :meth:`AgentSession.wait`."""

    session_id: str
    status: str = Field(description="awaiting_approval, completed, failed, cancelled, timed_out, or still active.")
    finished: bool
    reason: str | None = Field(default=None, description="Why it failed or was cancelled, if it did.")
    checklist: ChecklistState | None = None
    session: dict[str, Any] = Field(default_factory=dict, description="The session record as the tool returns it.")

    def checklist_done(self) -> dict[str, bool]:
        """``{item id: done}`` for the profile's checklist."""
        return {item.id: item.done for item in self.checklist.items} if self.checklist else {}


@dataclass(frozen=True)
class AgentSession:
    """One spawned agent, followed through ``client``."""

    client: Client
    session_id: str

    async def wait(self, timeout_s: float = 300) -> SessionOutcome:
        """Wait until the session has finished; ``TimeoutError`` (with its last events) after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            chunk = max(0.0, min(WAIT_CHUNK_S, deadline - loop.time()))
            result = await call_tool(self.client, "wait_session", session_id=self.session_id, timeout_s=chunk)
            if result.get("finished") or result.get("status") in FINISHED:
                return self._outcome(result)
            if loop.time() >= deadline:
                tail = [e.get("text", "")[:200] for e in result.get("last_events", [])]
                raise TimeoutError(
                    f"session {self.session_id} is still {result.get('status')} after {timeout_s:g} s; "
                    f"its last events: {tail}"
                )

    async def outcome(self) -> SessionOutcome:
        """The session's state now, without waiting."""
        return self._outcome(await call_tool(self.client, "wait_session", session_id=self.session_id, timeout_s=0))

    def _outcome(self, result: dict[str, Any]) -> SessionOutcome:
        session = dict(result.get("session") or {})
        checklist = session.get("checklist")
        return SessionOutcome(
            session_id=self.session_id,
            status=str(result.get("status")),
            finished=bool(result.get("finished", result.get("status") in FINISHED)),
            reason=session.get("reason"),
            checklist=ChecklistState.model_validate(checklist) if checklist else None,
            session=session,
        )

    async def diff(self) -> DiffPreview:
        """The preview of the session's changes: files with their status, the unified diff, refused writes."""
        return DiffPreview.model_validate(await call_tool(self.client, "get_diff", session_id=self.session_id))

    async def events(self, since: int = 0) -> list[Event]:
        """Every recorded (masked) event of the session from counter ``since`` on."""
        events: list[Event] = []
        while True:
            page = await call_tool(self.client, "tail_logs", session_id=self.session_id, since=since, limit=1000)
            events += [Event.model_validate(e) for e in page["events"]]
            if len(page["events"]) < 1000:
                return events
            since = int(page["next_since"])

    async def checklist(self) -> dict[str, bool]:
        """``{item id: done}`` for the session's checklist now."""
        return (await self.outcome()).checklist_done()

    async def apply(self, digest: str | None = None, *, acknowledge_masked: bool = False) -> ApplyResult:
        """Write the session's allowed changes to its working directory (``apply_diff(confirm=true)``):
        the change set of ``digest`` (from :meth:`diff`), or of the preview taken now when it is None."""
        if digest is None:
            digest = (await self.diff()).digest
        return ApplyResult.model_validate(
            await call_tool(
                self.client,
                "apply_diff",
                session_id=self.session_id,
                confirm=True,
                digest=digest,
                acknowledge_masked=acknowledge_masked,
            )
        )

    async def discard(self) -> dict[str, Any]:
        return await call_tool(self.client, "discard_diff", session_id=self.session_id)

    async def terminate(self, reason: str = "terminated by the test") -> dict[str, Any]:
        return await call_tool(self.client, "terminate_session", session_id=self.session_id, reason=reason)


async def spawn(
    client: Client, working_dir: Path | str, task: str, *, profile: str = "default", **options: Any
) -> AgentSession:
    """Spawn an agent on ``working_dir`` (an absolute path the server can see) with ``task``; ``options``
    are further ``spawn_agent`` arguments (``policy``, ``flags``, ``parent_session_id``, ...)."""
    result = await call_tool(
        client, "spawn_agent", working_dir=str(working_dir), profile_id=profile, custom_prompt=task, **options
    )
    return AgentSession(client, str(result["session_id"]))
