"""Session summaries: a structured part (counts, commands, files, tests, checklist, outcome, tokens)
and a short deterministic narrative, recorded every N events or T seconds and at the end of a run."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from hydra_sandbox.events import Event, EventDraft

if TYPE_CHECKING:
    from hydra_sandbox.checklists import Checklist

MAX_LISTED = 20


class SummaryBuilder:
    def __init__(self, session_id: str, every_n_events: int = 50, every_s: float = 30.0) -> None:
        self.session_id = session_id
        self.every_n_events = every_n_events
        self.every_s = every_s
        self._counts: Counter[str] = Counter()
        self._commands: list[str] = []
        self._files: list[str] = []
        self._files_total: int | None = None
        self._tests = {"passed": 0, "failed": 0}
        self._tokens = {"input": 0, "output": 0}
        self._since_last = 0
        self._last_at = time.monotonic()
        self._last_message = ""

    def observe(self, event: Event) -> None:
        if event.type == "summary":
            self._since_last = 0
            self._last_at = time.monotonic()
            return
        self._counts[event.type] += 1
        self._since_last += 1
        if event.type == "command":
            self._commands.append(str(event.data.get("command", ""))[:200])
        elif event.type == "diff" and event.data.get("change_set"):
            self._files = list(event.related_files)  # the workspace's change set replaces what the agent said
            self._files_total = int(event.data.get("files_total", len(self._files)))
        elif event.type == "diff":
            for path in event.related_files:
                if path not in self._files:
                    self._files.append(path)
        elif event.type == "test":
            self._tests["passed" if event.data.get("passed") else "failed"] += 1
        elif event.type == "message" and "reasoning" not in event.tags and "stderr" not in event.tags:
            self._last_message = event.text
        usage = event.data.get("usage")
        if isinstance(usage, dict):
            self._tokens["input"] = max(self._tokens["input"], int(usage.get("input_tokens", 0) or 0))
            self._tokens["output"] = max(self._tokens["output"], int(usage.get("output_tokens", 0) or 0))

    @property
    def _files_changed_total(self) -> int:
        return max(self._files_total or 0, len(self._files))

    def due(self, now: float) -> bool:
        if self._since_last == 0:
            return False
        return self._since_last >= self.every_n_events or now - self._last_at >= self.every_s

    def build(self, checklist: Checklist | None, outcome: str | None, final: bool) -> EventDraft:
        state = checklist.state() if checklist else None
        data: dict[str, Any] = {
            "final": final,
            "outcome": outcome,
            "counts": dict(self._counts),
            "commands": self._commands[-MAX_LISTED:],
            "commands_total": len(self._commands),
            "files_changed": self._files[:MAX_LISTED],
            "files_changed_total": self._files_changed_total,
            "tests": dict(self._tests),
            "checklist": state.model_dump(mode="json") if state else None,
            "tokens": dict(self._tokens),
        }
        parts = [f"Session {self.session_id}" + (f" ended {outcome}." if final and outcome else " so far:")]
        parts.append(f"{len(self._commands)} command(s) run, {self._files_changed_total} file(s) changed")
        if self._tests["passed"] or self._tests["failed"]:
            parts.append(f"tests passed {self._tests['passed']} time(s), failed {self._tests['failed']} time(s)")
        if state:
            parts.append(
                f"checklist {state.done_count}/{len(state.items)} done"
                + (": " + ", ".join(i.id for i in state.items if i.done) if state.done_count else "")
            )
        if self._files:
            parts.append("files: " + ", ".join(self._files[:5]) + ("…" if len(self._files) > 5 else ""))
        if self._last_message:
            parts.append("last message: " + self._last_message[:300])
        return EventDraft(
            type="summary",
            text="; ".join(parts) + ".",
            data=data,
            tags=["final"] if final else ["progress"],
            related_files=self._files[:MAX_LISTED],
        )
