"""The first scripted-model format (``turns`` of output items), kept so existing scripts run unchanged.

New scripts use the versioned format of :mod:`hydra_sandbox.testing.script` (``hydra_script: 1``,
routes of steps), documented in docs/testing.md. A script of this format is compiled into the same
turns and served by the same :class:`hydra_sandbox.testing.ScriptedModel`; its routes match anywhere in
a request and share their turns between agents, as they always did.

Run standalone: ``python -m hydra_sandbox.scripted_model --script FILE [--host 127.0.0.1] [--port 0]``
(either format).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from hydra_sandbox.testing import model as _model
from hydra_sandbox.testing.engine import CompiledRoute, CompiledScript, Turn
from hydra_sandbox.testing.script import CallStep, Failure, ModelScript, ReplyStep, RunStep, ToolCall, parse_script
from hydra_sandbox.testing.templating import SESSION_ID

__all__ = ["SESSION_ID", "McpCall", "Script", "ScriptItem", "ScriptRoute", "ScriptedModel", "load_script", "main"]


class McpCall(BaseModel):
    namespace: str = "mcp__hydra"
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    save: str | None = Field(default=None, description="Name the JSON result for later {{ name.field }}.")


class ScriptItem(BaseModel):
    """Exactly one of: a shell command, a final message, an MCP tool call, or an HTTP error."""

    exec: str | None = None
    yield_ms: int | None = Field(default=None, ge=0, description="exec only: how long Codex waits (<= 30000).")
    message: str | None = None
    mcp_call: McpCall | None = None
    error_status: int | None = None

    @model_validator(mode="after")
    def _one(self) -> ScriptItem:
        if sum(v is not None for v in (self.exec, self.message, self.mcp_call, self.error_status)) != 1:
            raise ValueError("a script item has exactly one of exec, message, mcp_call, error_status")
        return self

    def step(self) -> RunStep | CallStep | ReplyStep:
        if self.exec is not None:
            return RunStep(run=self.exec, yield_ms=self.yield_ms or None)
        if self.mcp_call is not None:
            server = self.mcp_call.namespace.removeprefix("mcp__")
            call = ToolCall(server=server, tool=self.mcp_call.name, arguments=self.mcp_call.arguments)
            return CallStep(call=call, save=self.mcp_call.save)
        return ReplyStep(reply=self.message or "")


class ScriptRoute(BaseModel):
    """Turns for the requests whose body contains ``match`` (e.g. a marker in one agent's task)."""

    match: str = Field(min_length=1)
    turns: list[list[ScriptItem]]


class Script(BaseModel):
    """Turns, in order: every request to the model gets the next one. With ``routes``, a request whose
    body contains a route's ``match`` (the first such route) takes that route's next turn instead."""

    turns: list[list[ScriptItem]] = Field(default_factory=list)
    routes: list[ScriptRoute] = Field(default_factory=list)
    label: str = "scripted model (not a real model)"

    def compiled(self) -> CompiledScript:
        routes = [_route(f"route {i + 1} (match {r.match!r})", r.match, r.turns) for i, r in enumerate(self.routes)]
        routes.append(_route("the turns", None, self.turns))
        return CompiledScript(label=self.label, routes=tuple(routes))


def _route(name: str, match: str | None, turns: list[list[ScriptItem]]) -> CompiledRoute:
    compiled = []
    for n, turn in enumerate(turns):
        where = f"{name} turn {n + 1}"
        if turn and turn[0].error_status is not None:
            compiled.append(Turn(where, failure=Failure(status=turn[0].error_status)))
        else:
            steps = tuple(item.step() for item in turn)
            save = getattr(steps[0], "save", None) if len(steps) == 1 else None  # a saved call is its turn alone
            compiled.append(Turn(where, items=steps, save=save))
    return CompiledRoute(
        name=name, match=match, turns=tuple(compiled), progress="shared", match_in="request", exhausted_reply="done"
    )


class ScriptedModel(_model.ScriptedModel):
    """:class:`hydra_sandbox.testing.ScriptedModel`, also taking a script of this format."""

    def __init__(self, script: Script | ModelScript | CompiledScript, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(script.compiled() if isinstance(script, Script) else script, host, port)


def load_script(path: Path) -> Script | ModelScript:
    """A script file of either format (JSON; the versioned format is also read from YAML by
    :func:`hydra_sandbox.testing.load_script`)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "hydra_script" in data:
        return parse_script(data, str(path))
    return Script.model_validate(data)


async def _serve(script: Script | ModelScript, host: str, port: int) -> None:
    async with ScriptedModel(script, host, port) as model:
        print(f"scripted model listening on {model.base_url} ({script.label})", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(load_script(args.script), args.host, args.port))


if __name__ == "__main__":
    main()
