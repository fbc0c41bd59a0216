"""Placeholders in scripted-model steps.

``{{ name.field }}`` is a value from the result of an earlier step of the same conversation, the one
marked ``save: name``: for a ``call`` step the tool's JSON result (``{{ child.session_id }}``), for a
``run`` step ``output`` and ``exit_code``. ``{{ session_id }}`` is the last Hydra session id the
conversation mentions, ``{{ result_session_id }}`` the first one in the latest tool output. A string that
is exactly one placeholder takes the value as it is (a number stays
a number); elsewhere the value is written into the string (JSON for a list or mapping).

The model finds a saved result in the request Codex sends after the step ran: Codex replays the
conversation, with each tool call's output (``function_call_output``) under the call id the model gave it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
SESSION_ID = re.compile(r"\bs-[0-9a-f]{12}\b")
"""Hydra's session ids."""
BUILTIN = "session_id"
"""The last Hydra session id the conversation mentions."""
RESULT_BUILTIN = "result_session_id"
"""The first Hydra session id in the latest tool output: the session a ``spawn_agent`` or
``wait_session`` answered about, even when the answer also names its parent."""
BUILTINS = frozenset({BUILTIN, RESULT_BUILTIN})
_EXIT = re.compile(r"^Process exited with code (-?\d+)$", re.MULTILINE)

Lookup = Callable[[str, tuple[str, ...]], Any]


def placeholders(value: Any) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every ``(name, path)`` a value uses, in any string nested inside it."""
    if isinstance(value, str):
        for found in PLACEHOLDER.finditer(value):
            yield found.group(1), tuple(p for p in found.group(2).split(".") if p)
    elif isinstance(value, dict):
        for item in value.values():
            yield from placeholders(item)
    elif isinstance(value, list):
        for item in value:
            yield from placeholders(item)


def render(value: Any, lookup: Lookup) -> Any:
    """``value`` with every placeholder replaced through ``lookup(name, path)``."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value.strip())
        if whole:
            return lookup(whole.group(1), tuple(p for p in whole.group(2).split(".") if p))

        def one(found: re.Match[str]) -> str:
            got = lookup(found.group(1), tuple(p for p in found.group(2).split(".") if p))
            return got if isinstance(got, str) else json.dumps(got)

        return PLACEHOLDER.sub(one, value)
    if isinstance(value, dict):
        return {key: render(item, lookup) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, lookup) for item in value]
    return value


def follow(value: Any, path: tuple[str, ...]) -> Any:
    """``value[path[0]][path[1]]...``; a list takes an index. Raises ``LookupError`` naming the part."""
    current = value
    for depth, part in enumerate(path):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            where = ".".join(path[:depth]) or "the result"
            fields = ", ".join(sorted(map(str, current))[:12]) if isinstance(current, dict) else type(current).__name__
            raise LookupError(f"{where} has no {part!r} (it has: {fields})")
    return current


def output_text(output: Any) -> str:
    """The body of a ``function_call_output``: Codex puts a few header lines ("Wall time: ...") before
    ``Output:``; content given as a list of parts is joined."""
    if isinstance(output, list):
        output = "".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    text = str(output)
    head, marker, body = text.partition("Output:\n")
    return body if marker and "\n\n" not in head else text


def saved_result(kind: str, output: Any) -> dict[str, Any]:
    """What ``save`` keeps of a step's output: the JSON result of a tool call (or ``{"text": ...}``
    when it is not JSON), ``{"output": ..., "exit_code": ...}`` for a command."""
    body = output_text(output)
    if kind == "run":
        found = _EXIT.search(str(output) if not isinstance(output, list) else body)
        return {"output": body, "exit_code": int(found.group(1)) if found else None}
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return {"text": body}
    return parsed if isinstance(parsed, dict) else {"value": parsed, "text": body}


def last_session_id(text: str) -> str | None:
    found = SESSION_ID.findall(text)
    return found[-1] if found else None


def result_session_id(body: dict[str, Any]) -> str | None:
    """The first session id in the latest tool output (a ``*_output`` item) of a request's input."""
    outputs = [
        item
        for item in body.get("input") or []
        if isinstance(item, dict) and str(item.get("type", "")).endswith("_output")
    ]
    if not outputs:
        return None
    output = outputs[-1].get("output")
    found = SESSION_ID.search(output if isinstance(output, str) else json.dumps(output))
    return found.group(0) if found else None
