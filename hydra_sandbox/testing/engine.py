"""What the scripted model answers, without any I/O: a script compiled into turns, and the state that
picks the next turn for a request (by route and conversation) and fills in its placeholders.

One turn answers one request. A ``wait`` step becomes the delay of the turn after it, a ``fail`` step
with ``repeat: n`` becomes n turns. Codex names the conversation in every request
(``prompt_cache_key``, its thread id), so each agent can follow a route from its first step.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from hydra_sandbox.testing.script import (
    CallStep,
    FailStep,
    Failure,
    ModelScript,
    ReplyStep,
    Route,
    RunStep,
    WaitStep,
    describe_step,
    route_name,
)
from hydra_sandbox.testing.templating import (
    BUILTIN,
    BUILTINS,
    follow,
    last_session_id,
    render,
    result_session_id,
    saved_result,
)

Item = RunStep | CallStep | ReplyStep


@dataclass(frozen=True)
class Turn:
    """The answer to one request: output items, or an HTTP failure; after ``delay_s`` seconds."""

    where: str
    items: tuple[Item, ...] = ()
    failure: Failure | None = None
    delay_s: float = 0.0
    save: str | None = None


@dataclass(frozen=True)
class CompiledRoute:
    name: str
    match: str | None
    turns: tuple[Turn, ...]
    progress: Literal["per_conversation", "shared"] = "per_conversation"
    match_in: Literal["task", "request"] = "task"
    """task: the user messages of the conversation; request: the whole request body (the old format)."""
    exhausted_reply: str | None = None


@dataclass(frozen=True)
class CompiledScript:
    label: str
    routes: tuple[CompiledRoute, ...]


def compile_route(index: int, route: Route) -> CompiledRoute:
    turns: list[Turn] = []
    delay = 0.0
    for position, step in enumerate(route.steps):
        where = describe_step(index, route, position)
        if isinstance(step, WaitStep):
            delay += step.wait
            continue
        if isinstance(step, FailStep):
            turns += [Turn(where, failure=step.fail, delay_s=delay if n == 0 else 0.0) for n in range(step.fail.repeat)]
        else:
            turns.append(Turn(where, items=(step,), delay_s=delay, save=getattr(step, "save", None)))
        delay = 0.0
    return CompiledRoute(name=route_name(index, route), match=route.match, turns=tuple(turns), progress=route.progress)


def compile_script(script: ModelScript) -> CompiledScript:
    return CompiledScript(
        label=script.label, routes=tuple(compile_route(i, route) for i, route in enumerate(script.routes))
    )


class RouteReport(BaseModel):
    route: str
    steps: int = Field(description="Turns the route has (a wait is part of the turn it delays).")
    taken: dict[str, int] = Field(description="Turns taken, per conversation (or 'shared').")


class ScriptReport(BaseModel):
    """How far each conversation got, and every problem the model met (for assertions)."""

    label: str
    requests: int
    routes: list[RouteReport]
    overruns: list[str] = Field(default_factory=list, description="Requests that came after a route's last step.")
    errors: list[str] = Field(default_factory=list, description="Requests the script could not answer.")


class Answer(BaseModel):
    status: int = 200
    items: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    delay_s: float = 0.0


def task_text(body: dict[str, Any]) -> str:
    """The user messages of a Responses request: where Hydra's prompt (and so the task's marker) is."""
    parts: list[str] = []
    for item in body.get("input") or []:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(c.get("text", "")) for c in content if isinstance(c, dict)]
    return "\n".join(parts)


def _outputs(body: dict[str, Any]) -> dict[str, Any]:
    return {
        str(item.get("call_id")): item.get("output")
        for item in body.get("input") or []
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }


@dataclass
class ScriptState:
    """The model's memory: per (route, conversation) the next turn, and the call id of each saved step."""

    script: CompiledScript
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    overruns: list[str] = field(default_factory=list)
    _next: dict[tuple[int, str], int] = field(default_factory=dict)
    _saved: dict[tuple[int, str, str], tuple[str, str]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def answer(self, body: dict[str, Any], raw: str) -> Answer:
        """The answer to one ``POST /v1/responses`` (``raw``: its body as text)."""
        self.requests += 1
        task = task_text(body)
        for index, route in enumerate(self.script.routes):
            haystack = raw if route.match_in == "request" else task
            if route.match is None or route.match in haystack:
                return self._take(index, route, body, raw)
        markers = ", ".join(repr(r.match) for r in self.script.routes)
        return self._error(f"no route matches this conversation's task (markers: {markers}): {task[-200:]!r}")

    def report(self) -> ScriptReport:
        routes = []
        for index, route in enumerate(self.script.routes):
            taken = {conv or "shared": n for (i, conv), n in self._next.items() if i == index}
            routes.append(RouteReport(route=route.name, steps=len(route.turns), taken=taken))
        return ScriptReport(
            label=self.script.label,
            requests=self.requests,
            routes=routes,
            overruns=list(self.overruns),
            errors=list(self.errors),
        )

    def _error(self, message: str) -> Answer:
        self.errors.append(message)
        return Answer(status=400, error=f"scripted model: {message}")

    def _take(self, index: int, route: CompiledRoute, body: dict[str, Any], raw: str) -> Answer:
        conversation = "" if route.progress == "shared" else str(body.get("prompt_cache_key") or "")
        key = (index, conversation)
        position = self._next.get(key, 0)
        self._next[key] = position + 1
        if position >= len(route.turns):
            self.overruns.append(f"{route.name}: request {position + 1} after its {len(route.turns)} step(s)")
            text = route.exhausted_reply or f"(scripted model: {route.name} has no step left)"
            return Answer(items=[self._item(ReplyStep(reply=text))])
        turn = route.turns[position]
        if turn.failure is not None:
            return Answer(status=turn.failure.status, error=turn.failure.message, delay_s=turn.delay_s)

        def lookup(name: str, path: tuple[str, ...]) -> Any:
            return self._lookup(index, conversation, name, path, body, raw)

        try:
            items = [self._item(item, lookup) for item in turn.items]
        except LookupError as exc:
            return self._error(f"{turn.where}: {exc}")
        if turn.save is not None:
            self._saved[(index, conversation, turn.save)] = (items[0]["call_id"], turn.items[0].kind)
        return Answer(items=items, delay_s=turn.delay_s)

    def _lookup(
        self, index: int, conversation: str, name: str, path: tuple[str, ...], body: dict[str, Any], raw: str
    ) -> Any:
        saved = self._saved.get((index, conversation, name))
        if saved is None and name in BUILTINS:
            found = last_session_id(raw) if name == BUILTIN else result_session_id(body)
            if found is None:
                where = "mentions" if name == BUILTIN else "has a tool output with"
                raise LookupError(f"{{{{ {name} }}}}: this conversation {where} no Hydra session id yet")
            return follow(found, path)
        if saved is None:
            raise LookupError(
                f"{{{{ {name} }}}}: the step saved as {name!r} has not been answered in this conversation"
            )
        call_id, kind = saved
        outputs = _outputs(body)
        if call_id not in outputs:
            raise LookupError(f"{{{{ {name} }}}}: the result of the step saved as {name!r} is not in this request")
        value = saved_result(kind, outputs[call_id])
        try:
            return follow(value, path)
        except LookupError as exc:
            shown = json.dumps(value)[:300]
            raise LookupError(f"{{{{ {name}.{'.'.join(path)} }}}}: {exc}; the result was {shown}") from None

    def _item(self, item: Item, lookup: Any = None) -> dict[str, Any]:
        n = next(self._ids)
        fill = (lambda value: render(value, lookup)) if lookup is not None else (lambda value: value)
        if isinstance(item, RunStep):
            arguments: dict[str, Any] = {"cmd": fill(item.run)}
            if item.yield_ms:
                arguments["yield_time_ms"] = item.yield_ms
            return {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_{n}",
                "name": "exec_command",
                "arguments": json.dumps(arguments),
            }
        if isinstance(item, CallStep):
            return {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_{n}",
                "namespace": f"mcp__{item.call.server}",
                "name": item.call.tool,
                "arguments": json.dumps(fill(item.call.arguments)),
            }
        return {
            "type": "message",
            "id": f"msg_{n}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": fill(item.reply), "annotations": []}],
        }
