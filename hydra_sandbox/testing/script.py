"""The scripted model's script: a versioned YAML/JSON format (documented in docs/testing.md).

A script is a list of routes. A route's ``match`` is a marker searched in an agent's task (the user
messages of its conversation), and its ``steps`` answer that agent's requests in order, one step per
request: ``run`` a command, ``call`` an MCP tool, ``reply`` (which ends the agent's turn), ``fail`` with an
HTTP error, or ``wait`` (hold the next answer). A route without ``match`` answers every conversation no
other route matches. ``save`` names a step's result so later steps can use ``{{ name.field }}``.

    hydra_script: 1
    routes:
      - match: FIX-CALC
        steps:
          - run: python3 -m pytest -q
          - run: sed -i 's/a - b/a + b/' calc.py && python3 -m pytest -q
          - reply: "Summary: fixed the sign in add(); the tests pass."
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from hydra_sandbox.errors import ScriptError
from hydra_sandbox.testing.templating import BUILTIN, BUILTINS, placeholders
from hydra_sandbox.yaml_models import field_path, read_yaml

FORMAT_VERSION = 1
ACTIONS = ("run", "call", "reply", "fail", "wait")
MAX_YIELD_MS = 30_000
"""Codex answers a command after at most this long; a longer one reports "Process running" instead."""

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Step(_Strict):
    kind: ClassVar[str]

    def summary(self) -> str:
        """A few words that identify the step in a message."""
        raise NotImplementedError


class RunStep(_Step):
    """Run a shell command in the agent's sandbox (Codex's ``exec_command`` tool)."""

    kind: ClassVar[str] = "run"

    run: str = Field(min_length=1, description="The command line, run by the agent's shell.")
    yield_ms: int | None = Field(
        default=None, ge=1, le=MAX_YIELD_MS, description="How long Codex waits for the command before answering."
    )
    save: Name | None = Field(default=None, description="Name the result: {{ name.output }}, {{ name.exit_code }}.")

    def summary(self) -> str:
        return self.run


class ToolCall(_Strict):
    tool: str = Field(min_length=1, description="The tool's name, e.g. spawn_agent.")
    server: str = Field(default="hydra", min_length=1, description="The MCP server's name in Codex's config.")
    arguments: dict[str, Any] = Field(default_factory=dict)


class CallStep(_Step):
    """Call a tool of an MCP server the agent has (Hydra's own endpoint inside a sandbox: ``hydra``)."""

    kind: ClassVar[str] = "call"
    call: ToolCall
    save: Name | None = Field(default=None, description="Name the JSON result: {{ name.field }}.")

    def summary(self) -> str:
        return f"{self.call.server}.{self.call.tool}"


class ReplyStep(_Step):
    """Answer with a message; this ends the agent's turn (``codex exec`` then exits)."""

    kind: ClassVar[str] = "reply"
    reply: str

    def summary(self) -> str:
        return self.reply


class Failure(_Strict):
    status: int = Field(default=500, ge=400, le=599, description="HTTP status of the error answer.")
    message: str = "scripted failure"
    repeat: int = Field(default=1, ge=1, le=50, description="Answer this many requests in a row with it.")


class FailStep(_Step):
    """Answer with an HTTP error. Codex retries 429 and 5xx answers (each retry is a request), and gives
    up on other 4xx at once."""

    kind: ClassVar[str] = "fail"
    fail: Failure

    def summary(self) -> str:
        return f"HTTP {self.fail.status}"


class WaitStep(_Step):
    """Hold the answer to the next request this many seconds (a slow model)."""

    kind: ClassVar[str] = "wait"
    wait: float = Field(gt=0, le=600)

    def summary(self) -> str:
        return f"{self.wait:g} s"


def _action(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, dict):
        return None
    present = [key for key in ACTIONS if key in value]
    return present[0] if len(present) == 1 else None


Step = Annotated[
    Annotated[RunStep, Tag("run")]
    | Annotated[CallStep, Tag("call")]
    | Annotated[ReplyStep, Tag("reply")]
    | Annotated[FailStep, Tag("fail")]
    | Annotated[WaitStep, Tag("wait")],
    Discriminator(_action),
]


class Route(_Strict):
    match: str | None = Field(
        default=None, min_length=1, description="Marker in the agent's task; none: every other conversation."
    )
    steps: list[Step] = Field(min_length=1)
    progress: Literal["per_conversation", "shared"] = Field(
        default="per_conversation",
        description="per_conversation: each agent that matches starts at step 1; shared: the steps are "
        "taken in order by whichever matching agent asks next.",
    )


class ModelScript(_Strict):
    """A whole script; ``hydra_script`` is the format version."""

    hydra_script: Literal[1] = 1
    label: str = Field(default="scripted model (not a real model)", description="Shown where the model is named.")
    routes: list[Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> ModelScript:
        defaults = [i for i, route in enumerate(self.routes) if route.match is None]
        if len(defaults) > 1 or (defaults and defaults[0] != len(self.routes) - 1):
            raise ValueError("only the last route may leave out match (it answers every other conversation)")
        for index, route in enumerate(self.routes):
            _check_route(index, route)
        return self


def describe_step(route_index: int, route: Route, step_index: int) -> str:
    """``route 1 (match 'FIX') step 3 (run 'sed -i ...')``: how messages name a step."""
    step = route.steps[step_index]
    detail = step.summary()
    detail = detail if len(detail) <= 40 else detail[:37] + "..."
    return f"{route_name(route_index, route)} step {step_index + 1} ({step.kind} {detail!r})"


def route_name(index: int, route: Route | dict[str, Any] | Any) -> str:
    """``route 2 (match 'FIX')``: how messages name a route."""
    match = route.match if isinstance(route, Route) else route.get("match") if isinstance(route, dict) else None
    return f"route {index + 1} " + (f"(match {str(match)[:40]!r})" if match else "(no match: the default route)")


def _check_route(index: int, route: Route) -> None:
    saved: set[str] = set()
    for position, step in enumerate(route.steps):
        where = describe_step(index, route, position)
        for name, _path in placeholders(step.model_dump()):
            if name not in BUILTINS and name not in saved:
                raise ValueError(
                    f"{where}: {{{{ {name} }}}} refers to {name!r}, which no earlier step of this route saves "
                    f"(add `save: {name}` to the step whose result it is, or use {{{{ {BUILTIN} }}}})"
                )
        save = getattr(step, "save", None)
        if save in BUILTINS or save in saved:
            raise ValueError(f"{where}: save name {save!r} is already taken; give each saved result its own name")
        if save:
            saved.add(save)
    if isinstance(route.steps[-1], WaitStep):
        raise ValueError(
            f"{describe_step(index, route, len(route.steps) - 1)}: a wait must come before the step it delays"
        )


def _step_shape_problem(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return f"a step is a mapping with one of {', '.join(ACTIONS)}; got {type(raw).__name__}"
    present = [key for key in ACTIONS if key in raw]
    if len(present) != 1:
        found = ", ".join(present) if present else "none (keys: " + ", ".join(map(str, list(raw)[:6])) + ")"
        return f"a step has exactly one of {', '.join(ACTIONS)}; this one has {found}"
    return None


def _precheck(data: dict[str, Any], source: str) -> None:
    """Name the step whose shape is wrong before pydantic reports it as a union it cannot pick from."""
    routes = data.get("routes")
    if not isinstance(routes, list):
        return
    for index, route in enumerate(routes):
        steps = route.get("steps") if isinstance(route, dict) else None
        if not isinstance(steps, list):
            continue
        for position, raw in enumerate(steps):
            problem = _step_shape_problem(raw)
            if problem:
                raise ScriptError(f"{source}: {route_name(index, route)} step {position + 1}: {problem}")


def _where(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``('routes', 0, 'steps', 2, 'run', 'yield_ms')`` -> ``route 1 (match 'X') step 3: yield_ms``."""
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        routes = data.get("routes") or []
        route = routes[loc[1]] if loc[1] < len(routes) else {}
        name = route_name(loc[1], route)
        rest = loc[2:]
        if len(rest) >= 2 and rest[0] == "steps" and isinstance(rest[1], int):
            name += f" step {rest[1] + 1}"
            rest = rest[3:] if len(rest) > 2 and rest[2] in ACTIONS else rest[2:]
        return f"{name}: {field_path(rest)}" if rest else name
    return field_path(loc)


def parse_script(data: Any, source: str = "script") -> ModelScript:
    """Validate parsed data (a mapping) into a :class:`ModelScript`; a :class:`ScriptError` names the
    source, the route and the step that are wrong, and what would be valid."""
    if not isinstance(data, dict):
        raise ScriptError(f"{source}: a script is a mapping with hydra_script and routes; got {type(data).__name__}")
    if "hydra_script" not in data:
        raise ScriptError(
            f"{source}: hydra_script is missing", hint=f"start the script with `hydra_script: {FORMAT_VERSION}`"
        )
    if data["hydra_script"] != FORMAT_VERSION:
        raise ScriptError(
            f"{source}: hydra_script {data['hydra_script']!r} is not a version this Hydra reads",
            hint=f"this Hydra reads version {FORMAT_VERSION}",
        )
    _precheck(data, source)
    try:
        return ModelScript.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required field is missing"
            loc = tuple(err["loc"])
            problems.append(f"{source}: {_where(loc, data)}: {message}" if loc else f"{source}: {message}")
        raise ScriptError("\n".join(problems), hint="see docs/testing.md, 'The script format'") from None


def load_script(path: Path | str) -> ModelScript:
    """Read a script file: ``.json`` as JSON, anything else as YAML (read with a safe loader)."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ScriptError(f"{path}: cannot read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{path}: line {exc.lineno}, column {exc.colno}: not JSON: {exc.msg}") from None
        except RecursionError:
            raise ScriptError(f"{path}: nested too deeply to be a script") from None
    else:
        data = read_yaml(path)
    return parse_script(data, str(path))
