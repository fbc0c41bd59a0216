"""Turn a recorded run of a real model into a script, so a test can replay it offline.

Two recordings are read: Codex's own ``codex exec --json`` output (JSON lines with ``item.completed``
items), and a Hydra session's timeline (``hydra sessions logs ID --json``, or the ``events`` of the
``tail_logs`` tool). Commands become ``run`` steps, MCP tool calls ``call`` steps, the agent's messages
``reply`` steps, a failed turn a ``fail`` step. An id a tool returned (a session id, say) that a later
step uses becomes a placeholder on a saved result, so the replay follows the new run's ids.

What a recording does not hold is reported in ``notes``: Codex's file edits (``apply_patch``) carry the
paths, not the content, so each one needs a ``run`` step that makes the change.

    python -m hydra_sandbox.testing.transcript run.jsonl --match FIX-CALC > fix_calc.yaml
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from hydra_sandbox.codex_events import unwrap_shell
from hydra_sandbox.errors import ScriptError
from hydra_sandbox.testing.script import ModelScript, parse_script

_ID_LIKE = re.compile(r"^(?=.*\d)[A-Za-z0-9][A-Za-z0-9_.:-]{5,127}$")
"""A returned value worth templating: an id-like token, not a word or a path."""


class Conversion(BaseModel):
    script: ModelScript
    notes: list[str] = Field(default_factory=list, description="What the recording did not hold; fix by hand.")

    def to_yaml(self) -> str:
        data = self.script.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
        header = "".join(f"# NOTE: {note}\n" for note in self.notes)
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def _records(source: Path | str | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(source, (str, Path)):
        return [dict(r) for r in source]
    text = Path(source).read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    except RecursionError:
        raise ScriptError(f"{source}: nested too deeply to be a recording") from None
    if isinstance(whole, dict) and isinstance(whole.get("events"), list):
        return list(whole["events"])
    if isinstance(whole, list):
        return whole
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ScriptError(f"{source}: line {number}: not JSON: {exc.msg}") from None
    return records


def _items(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Normalised items, ``kind`` run / call / reply / fail / edit, from either recording."""
    for record in records:
        kind = record.get("type")
        if kind == "item.completed":  # Codex JSONL
            item = record.get("item") or {}
            if item.get("type") == "command_execution":
                yield {"kind": "run", "command": unwrap_shell(str(item.get("command", "")))}
            elif item.get("type") == "mcp_tool_call":
                yield _call(item)
            elif item.get("type") == "agent_message":
                yield {"kind": "reply", "text": str(item.get("text", ""))}
            elif item.get("type") == "file_change":
                yield {"kind": "edit", "paths": [str(c.get("path")) for c in item.get("changes") or []]}
        elif kind == "turn.failed":
            yield {"kind": "fail", "message": str((record.get("error") or {}).get("message", "turn failed"))}
        elif kind == "command" and "data" in record:  # Hydra event
            data = record["data"]
            if "mcp" in record.get("tags", []) and data.get("mcp"):
                try:
                    yield _call(json.loads(data["mcp"]))
                except json.JSONDecodeError:
                    yield {"kind": "edit", "paths": [], "text": "an MCP call recorded truncated"}
            elif data.get("command"):
                yield {"kind": "run", "command": str(data["command"])}
        elif kind == "message" and (record.get("data") or {}).get("role") == "agent":
            yield {"kind": "reply", "text": str(record.get("text", ""))}
        elif kind == "diff" and "data" in record:
            yield {"kind": "edit", "paths": [str(c.get("path")) for c in record["data"].get("changes") or []]}


def _call(item: dict[str, Any]) -> dict[str, Any]:
    arguments = item.get("arguments") or {}
    if isinstance(arguments, str):
        arguments = json.loads(arguments or "{}")
    result = item.get("result") or {}
    structured = result.get("structured_content") if isinstance(result, dict) else None
    if structured is None and isinstance(result, dict):
        texts = [c.get("text", "") for c in result.get("content") or [] if isinstance(c, dict)]
        try:
            structured = json.loads("".join(texts)) if texts else None
        except json.JSONDecodeError:
            structured = None
    return {
        "kind": "call",
        "server": str(item.get("server") or "hydra"),
        "tool": str(item.get("tool")),
        "arguments": arguments,
        "result": structured if isinstance(structured, dict) else {},
    }


def _leaves(value: Any, path: tuple[str, ...] = (), depth: int = 0) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, value) of id-like strings in a result, shallow ones first."""
    if depth > 4:
        return
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    nested = []
    for key, child in children:
        if isinstance(child, str) and _ID_LIKE.match(child):
            yield (*path, str(key)), child
        elif isinstance(child, (dict, list)):
            nested.append((key, child))
    for key, child in nested:
        yield from _leaves(child, (*path, str(key)), depth + 1)


def _template(value: Any, known: dict[str, str], used: set[str]) -> Any:
    if isinstance(value, str):
        for literal, placeholder in known.items():
            if literal in value:
                used.add(placeholder.split(".")[0].strip("{ "))
                value = value.replace(literal, placeholder)
        return value
    if isinstance(value, dict):
        return {k: _template(v, known, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_template(v, known, used) for v in value]
    return value


def script_from_transcript(
    source: Path | str | Iterable[dict[str, Any]], *, match: str | None = None, label: str | None = None
) -> Conversion:
    """A one-route script replaying the recorded run (``match``: the marker of the route; none makes it
    the default route)."""
    steps: list[dict[str, Any]] = []
    notes: list[str] = []
    known: dict[str, str] = {}
    producers: dict[str, int] = {}
    for item in _items(_records(source)):
        used: set[str] = set()
        if item["kind"] == "run":
            steps.append({"run": _template(item["command"], known, used)})
        elif item["kind"] == "call":
            call = {"tool": item["tool"], "server": item["server"], "arguments": item["arguments"]}
            steps.append({"call": {**call, "arguments": _template(item["arguments"], known, used)}})
            name = f"step{len(steps)}"
            for path, literal in _leaves(item["result"]):
                known.setdefault(literal, "{{ " + ".".join((name, *path)) + " }}")
            producers[name] = len(steps) - 1
        elif item["kind"] == "reply":
            steps.append({"reply": item["text"]})
        elif item["kind"] == "fail":
            steps.append({"fail": {"status": 400, "message": item["message"]}})
        else:
            what = item.get("text") or "the model edited " + (", ".join(item["paths"]) or "files")
            notes.append(f"after step {len(steps)}: {what}; the recording has no content: add a run step for it")
        for name in used:
            steps[producers[name]]["save"] = name
    if not steps:
        raise ScriptError("the recording holds no command, tool call or message to replay")
    route: dict[str, Any] = {"steps": steps, **({"match": match} if match else {})}
    data = {"hydra_script": 1, "label": label or "replay of a recorded run (not a real model)", "routes": [route]}
    return Conversion(script=parse_script(data, "converted transcript"), notes=notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Turn a recorded run into a scripted-model script (YAML).")
    parser.add_argument("recording", type=Path, help="codex exec --json output, or hydra sessions logs --json")
    parser.add_argument("--match", help="the marker in the agent's task that selects this route")
    parser.add_argument("--label", help="the script's label")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        conversion = script_from_transcript(args.recording, match=args.match, label=args.label)
    except (ScriptError, OSError) as exc:
        parser.exit(2, f"error: {exc}\n")
    text = conversion.to_yaml()
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)


if __name__ == "__main__":
    main()
