"""Codex's ``exec --json`` output, line by line, into Hydra events.

Every line yields at least one event or is folded into one (``item.started`` is superseded by its
``item.completed``); unknown or malformed lines become ``error`` events carrying the raw line, masked
and truncated. Nothing is dropped silently and nothing raises.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from hydra_sandbox.events import EventDraft
from hydra_sandbox.test_verdicts import TestVerdict, failure_reported, judge

MAX_OUTPUT = 16_000
MAX_RAW = 2_000
_JSON_START = frozenset('{["-0123456789tfnIN')
"""Characters a JSON text can start with (``I``/``N``: Python's json accepts Infinity and NaN)."""
_DECISION = re.compile(r"^\s*(?:decision|decided|we decided|i decided)\s*[:\-]\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def decisions_in(text: str) -> list[str]:
    """The decisions ``text`` states, one per line that starts with ``Decision:`` (or ``decided -``, ...)."""
    return [decision.strip() for decision in _DECISION.findall(text)]


def note_draft(note: str, tags: Sequence[str] = ()) -> EventDraft:
    """A host's or agent's note as an event: a ``decision`` when it states one (the note kept whole,
    the decisions in ``data``), else a ``note``."""
    decisions = decisions_in(note)
    if decisions:
        return EventDraft(type="decision", text=note, tags=list(tags), data={"source": "note", "decisions": decisions})
    return EventDraft(type="note", text=note, tags=list(tags))


def unwrap_shell(command: str) -> str:
    """``/bin/bash -lc 'pytest -q'`` -> ``pytest -q``; anything else unchanged."""
    try:
        parts = shlex.split(command)
    except ValueError:
        return command
    if len(parts) >= 3 and parts[0].rsplit("/", 1)[-1] in {"bash", "sh", "zsh"} and parts[1] in {"-lc", "-c"}:
        return parts[2]
    return command


def match_runner(command: str, runners: Sequence[str]) -> str | None:
    """The test runner a command runs (its first simple command, after ``cd x &&``), if any."""
    inner = unwrap_shell(command)
    for segment in re.split(r"&&|;|\|\|", inner):
        words = segment.strip().split()
        while words and ("=" in words[0] and not words[0].startswith("-")):
            words = words[1:]
        text = " ".join(words)
        for runner in runners:
            if text == runner or text.startswith(runner + " "):
                return runner
    return None


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"\n[hydra: {len(text) - limit} more characters not shown]", True


def _test_event(runner: str, command: str, exit_code: object, verdict: TestVerdict) -> EventDraft:
    """A ``test`` event: the verdict, and whether it came from the runner's summary or the exit code."""
    how = "from the exit code" if verdict.source == "exit_code" else "per " + "+".join(verdict.formats) + " summary"
    label = verdict.verdict.replace("_", " ")
    return EventDraft(
        type="test",
        text=f"{runner} {label} ({how}): {command}",
        tags=[verdict.verdict],
        data={
            "runner": runner,
            "passed": verdict.passed,
            "verdict": verdict.verdict,
            "verdict_source": verdict.source,
            "formats": verdict.formats,
            "exit_code": exit_code,
            "command": command,
            "counts": verdict.counts,
        },
    )


class CodexEventParser:
    def __init__(self, test_runners: Sequence[str], mask: Callable[[str], str]) -> None:
        self.test_runners = list(test_runners)
        self.mask = mask
        self.thread_id: str | None = None
        self.usage: dict[str, int] = {}

    def _error(self, text: str, raw: str, *, masked: bool = False) -> EventDraft:
        """An error event for ``raw``; ``masked``: ``raw`` has been masked already (and ``text`` is ours)."""
        raw_text, _ = _truncate(raw if masked else self.mask(raw), MAX_RAW)
        return EventDraft(type="error", text=text if masked else self.mask(text), data={"raw": raw_text})

    def feed_line(self, line: str, *, masked: bool = False) -> list[EventDraft]:
        """Events for one line of Codex's JSONL. ``masked``: the line has been masked whole already (a
        line that is not JSON then becomes an error event without masking it again)."""
        line = line.strip()
        if not line:
            return []
        if line[0] not in _JSON_START:  # most of a flood of plain text: no JSON decoder needed
            return [self._error("unparsable output line from codex", line, masked=masked)]
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return [self._error("unparsable output line from codex", line, masked=masked)]
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return [self._error("codex output line without a type", line, masked=masked)]
        kind = obj["type"]
        if kind == "thread.started":
            self.thread_id = str(obj.get("thread_id") or "") or None
            return [
                EventDraft(
                    type="status",
                    text=f"codex thread {self.thread_id} started",
                    data={"thread_id": self.thread_id, "codex": "thread.started"},
                )
            ]
        if kind == "turn.started":
            return [EventDraft(type="status", text="turn started", data={"codex": "turn.started"})]
        if kind == "turn.completed":
            raw_usage = obj.get("usage")
            usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
            for key, value in usage.items():
                if isinstance(value, int):
                    self.usage[key] = self.usage.get(key, 0) + value
            return [
                EventDraft(
                    type="status", text="turn completed", data={"codex": "turn.completed", "usage": dict(self.usage)}
                )
            ]
        if kind == "turn.failed":
            error = obj.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            return [
                EventDraft(
                    type="error",
                    text=self.mask(f"turn failed: {message}"),
                    tags=["turn-failed"],
                    data={"codex": "turn.failed", "message": self.mask(str(message))},
                )
            ]
        if kind == "error":
            message = str(obj.get("message", ""))
            return [EventDraft(type="error", text=self.mask(message), tags=["codex"], data={"codex": "error"})]
        if kind == "item.started":
            return []  # the matching item.completed carries everything
        if kind in {"item.completed", "item.updated"}:
            item = obj.get("item")
            if not isinstance(item, dict):
                return [self._error("codex item without content", line)]
            if kind == "item.updated":
                return []
            return self._item(item, line)
        return [self._error(f"unknown codex event type {kind!r}", line)]

    def _item(self, item: dict[str, Any], line: str) -> list[EventDraft]:
        kind = item.get("type")
        if kind == "command_execution":
            command = self.mask(str(item.get("command", "")))
            full_output = self.mask(str(item.get("aggregated_output") or ""))
            output, truncated = _truncate(full_output, MAX_OUTPUT)
            exit_code = item.get("exit_code")
            runner = match_runner(command, self.test_runners)
            verdict = judge(full_output, exit_code) if runner is not None else failure_reported(full_output)
            data = {
                "command": unwrap_shell(command),
                "raw_command": command,
                "exit_code": exit_code,
                "status": item.get("status"),
                "output": output,
                "output_truncated": truncated,
                "output_chars": len(str(item.get("aggregated_output") or "")),
            }
            if verdict is not None:
                data["test_verdict"] = verdict.verdict
            events = [EventDraft(type="command", text=f"$ {unwrap_shell(command)}\n{output}".strip(), data=data)]
            if verdict is not None:
                name = runner or "+".join(verdict.formats)
                events.append(_test_event(name, unwrap_shell(command), exit_code, verdict))
            return events
        if kind == "agent_message":
            text = self.mask(str(item.get("text", "")))
            events = [EventDraft(type="message", text=text, data={"role": "agent"})]
            for decision in decisions_in(text):
                events.append(EventDraft(type="decision", text=decision, data={"source": "agent_message"}))
            return events
        if kind == "reasoning":
            return [
                EventDraft(
                    type="message",
                    text=self.mask(str(item.get("text", ""))),
                    tags=["reasoning"],
                    data={"role": "reasoning"},
                )
            ]
        if kind == "file_change":
            raw_changes = item.get("changes")
            changes: list[Any] = raw_changes if isinstance(raw_changes, list) else []
            paths = [self.mask(str(c.get("path", ""))) for c in changes if isinstance(c, dict)]
            kinds = [str(c.get("kind", "")) for c in changes if isinstance(c, dict)]
            return [
                EventDraft(
                    type="diff",
                    text="files changed: " + ", ".join(paths),
                    related_files=paths,
                    data={
                        "changes": [{"path": p, "kind": k} for p, k in zip(paths, kinds, strict=False)],
                        "status": item.get("status"),
                    },
                )
            ]
        if kind == "error":
            message = self.mask(str(item.get("message", "")))
            if "Model metadata for" in message:
                return [EventDraft(type="message", text=message, tags=["warning"], data={"role": "codex"})]
            return [EventDraft(type="error", text=message, tags=["codex"], data={"codex": "item.error"})]
        if kind == "mcp_tool_call":
            text = f"tool {item.get('server')}.{item.get('tool')} {item.get('status')}"
            return [
                EventDraft(
                    type="command",
                    text=self.mask(text),
                    tags=["mcp"],
                    data={
                        "command": self.mask(text),
                        "exit_code": 0 if item.get("status") == "completed" else 1,
                        "mcp": self.mask(json.dumps(item))[:MAX_OUTPUT],
                    },
                )
            ]
        if kind in {"todo_list", "web_search"}:
            return [
                EventDraft(
                    type="message",
                    text=self.mask(json.dumps(item))[:MAX_OUTPUT],
                    tags=[str(kind)],
                    data={"role": "codex"},
                )
            ]
        return [self._error(f"unknown codex item type {kind!r}", line)]

    def finish(self) -> list[EventDraft]:
        return []
