"""Glob and checklist matching cannot backtrack (RE2, linear in the text), and their sizes are bounded."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from hydra_sandbox.limits import MAX_GLOB_CHARS
from hydra_sandbox.linear_match import MAX_GLOBS, compile_linear
from hydra_sandbox.policy import DirectoryPolicy, Policy
from hydra_sandbox.profiles import ChecklistItemTemplate

HOSTILE_GLOB = "*e*e*e*e*e*e*#"
HOSTILE_NAME = "e" * 150
# Run in a child process with a deadline: a backtracking engine takes minutes here (443 s measured on
# the old matcher) while holding the GIL, so the test ends instead of hanging the suite.
PROBE = f"""
from hydra_sandbox.policy import Policy
m = Policy(name="t", directory={{"deny": [{HOSTILE_GLOB!r}]}}).matcher
print(m.is_visible({HOSTILE_NAME!r}), m.is_visible("x" + {HOSTILE_NAME!r} + "#"))
"""


def test_an_agents_backtracking_glob_is_matched_in_linear_time() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["True", "False"]


def test_globs_keep_gitignore_meaning_on_the_linear_engine() -> None:
    matcher = Policy(name="t", directory={"allow": ["src/**", "!src/gen/**"], "deny": ["**/*.pem"]}).matcher
    assert matcher.is_visible("src/a.py") and not matcher.is_visible("src/gen/x.py")
    assert not matcher.is_visible("src/k.pem") and not matcher.is_visible("docs/a.md")
    assert not matcher.is_visible(".ENV") and not matcher.is_visible("a/.git/config")
    assert matcher.is_visible("src/name\nwith-newline.py")


def test_forty_thousand_globs_are_refused_with_the_limit_named() -> None:
    with pytest.raises(ValidationError, match=f"deny\n.*at most {MAX_GLOBS} items"):
        DirectoryPolicy(deny=[f"f{i}/**" for i in range(40_000)])


def test_an_overlong_glob_is_refused_with_the_limit_named() -> None:
    with pytest.raises(ValidationError, match=f"glob of {MAX_GLOB_CHARS + 1} characters; the limit is"):
        DirectoryPolicy(deny=["a" * (MAX_GLOB_CHARS + 1)])


CHECKLIST_PROBE = f"""
from hydra_sandbox.checklists import rule_matches
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.profiles import ChecklistItemTemplate
ref = SessionRef(session_id="s")
regex = {{"id": "x", "description": "d", "rule": {{"kind": "message_matches", "pattern": "^(a+)+$"}}}}
glob = {{"id": "g", "description": "d", "rule": {{"kind": "file_changed", "glob": {HOSTILE_GLOB!r}}}}}
message = Event.from_draft(EventDraft(type="message", text="a" * 5000 + "!"), ref, 0)
diff = Event.from_draft(EventDraft(type="diff", text="", related_files=[{HOSTILE_NAME!r}]), ref, 1)
print(rule_matches(ChecklistItemTemplate.model_validate(regex), message))
print(rule_matches(ChecklistItemTemplate.model_validate(glob), diff))
"""


def test_a_backtracking_checklist_pattern_is_matched_in_linear_time() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECKLIST_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False"]


def test_patterns_a_linear_engine_cannot_run_are_refused_when_the_profile_loads() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression for RE2"):
        ChecklistItemTemplate.model_validate(
            {"id": "x", "description": "d", "rule": {"kind": "message_matches", "pattern": r"(a)\1"}}
        )
    with pytest.raises(ValueError, match="RE2"):
        compile_linear("(?=x)")
