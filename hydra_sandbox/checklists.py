"""Checklists: built from a profile's template when a session starts; an item is marked done, with
the id of the event that proved it, when a matching event is recorded. Items never become undone."""

from __future__ import annotations

from functools import lru_cache

import pathspec
from pydantic import BaseModel

from hydra_sandbox.events import Event
from hydra_sandbox.linear_match import LinearPattern, compile_linear
from hydra_sandbox.profiles import (
    ChecklistItemTemplate,
    CommandSucceededRule,
    DecisionStatedRule,
    FileChangedRule,
    MessageMatchesRule,
    Profile,
    TestPassedRule,
)


class ChecklistItemState(BaseModel):
    id: str
    description: str
    rule: str
    done: bool = False
    proved_by: str | None = None


class ChecklistState(BaseModel):
    items: list[ChecklistItemState]

    @property
    def done_count(self) -> int:
        return sum(1 for i in self.items if i.done)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> LinearPattern:
    return compile_linear(pattern)


@lru_cache(maxsize=256)
def _glob(glob: str) -> LinearPattern:
    """The glob as one linear-time expression (pathspec's own would backtrack on agent file names)."""
    spec = pathspec.PathSpec.from_lines("gitignore", [glob])
    patterns = [p.regex.pattern for p in spec.patterns if p.include and p.regex is not None]  # type: ignore[attr-defined]
    return compile_linear("|".join(f"(?:{p})" for p in patterns) or "$^", dot_all=True)


def rule_matches(template: ChecklistItemTemplate, event: Event) -> bool:
    rule = template.rule
    data = event.data
    if isinstance(rule, TestPassedRule):
        return (
            event.type == "test"
            and data.get("passed") is True
            and (rule.runner is None or data.get("runner") == rule.runner)
        )
    if isinstance(rule, CommandSucceededRule):
        return (
            event.type == "command"
            and data.get("exit_code") == 0
            and data.get("test_verdict") in (None, "passed")
            and bool(_regex(rule.pattern).search(str(data.get("command", ""))))
        )
    if isinstance(rule, FileChangedRule):
        return (
            event.type == "diff"
            and event.data.get("change_set") is True
            and any(_glob(rule.glob).match(f) for f in event.related_files)
        )
    if isinstance(rule, DecisionStatedRule):
        return event.type == "decision" and bool(_regex(rule.pattern).search(event.text))
    if isinstance(rule, MessageMatchesRule):
        return (
            event.type == "message" and "reasoning" not in event.tags and bool(_regex(rule.pattern).search(event.text))
        )
    return False


class Checklist:
    def __init__(self, templates: list[ChecklistItemTemplate]) -> None:
        self._templates = templates
        self._items = {
            t.id: ChecklistItemState(id=t.id, description=t.description, rule=t.rule.kind) for t in templates
        }

    @classmethod
    def from_profile(cls, profile: Profile) -> Checklist:
        return cls(list(profile.checklist_template))

    def observe(self, event: Event) -> list[ChecklistItemState]:
        """Mark the items this event proves; returns the ones newly done."""
        done = []
        for template in self._templates:
            item = self._items[template.id]
            if not item.done and rule_matches(template, event):
                item.done = True
                item.proved_by = event.id
                done.append(item)
        return done

    def is_done(self, item_id: str) -> bool:
        item = self._items.get(item_id)
        return bool(item and item.done)

    def state(self) -> ChecklistState:
        return ChecklistState(items=[i.model_copy() for i in self._items.values()])
