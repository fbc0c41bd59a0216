"""Test verdicts read from the runners' own summaries, over outputs recorded from the real runners
(tests/fixtures/runners/README.md says which were recorded and which are hand-written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydra_sandbox.checklists import Checklist
from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.profiles import ChecklistItemTemplate
from hydra_sandbox.test_verdicts import failure_reported, judge

RUNNERS = Path(__file__).parent.parent / "fixtures" / "runners"

EXPECTED = {
    "pytest_q_pass.txt": ("passed", {"passed": 2}),
    "pytest_verbose_pass.txt": ("passed", {"passed": 2}),
    "pytest_q_fail.txt": ("failed", {"failed": 1, "passed": 1}),
    "pytest_verbose_fail.txt": ("failed", {"failed": 1, "passed": 1}),
    "pytest_q_err.txt": ("failed", {"errors": 1, "passed": 1}),
    "pytest_q_coll.txt": ("failed", {"errors": 1}),
    "pytest_q_no_tests.txt": ("no_tests", {}),
    "unittest_pass.txt": ("passed", {"passed": 1, "skipped": 1}),
    "unittest_verbose_pass.txt": ("passed", {"passed": 1}),
    "unittest_fail.txt": ("failed", {"failed": 1, "errors": 1}),
    "unittest_err.txt": ("failed", {"errors": 1}),
    "unittest_no_tests.txt": ("no_tests", {"ran": 0}),
    "cargo_pass.txt": ("passed", {"passed": 1, "ignored": 1}),
    "cargo_fail.txt": ("failed", {"failed": 1, "passed": 1}),
    "cargo_build.txt": ("failed", {"errors": 1}),
    "go_pass.txt": ("passed", {"packages_ok": 1}),
    "go_verbose_pass.txt": ("passed", {"packages_ok": 1}),
    "go_fail.txt": ("failed", {"failed": 1, "packages_failed": 1}),
    "go_build_failed.txt": ("failed", {"packages_failed": 1}),
    "go_multi_package_fail.txt": ("failed", {"packages_ok": 1, "packages_failed": 1}),
    "go_no_test_files.txt": ("no_tests", {}),
    "jest_pass.txt": ("passed", {"passed": 2}),
    "jest_fail.txt": ("failed", {"failed": 1, "suites_failed": 1}),
    "npm_jest_pass.txt": ("passed", {"passed": 2}),
    "npm_jest_fail.txt": ("failed", {"failed": 1}),
    "vitest_pass.txt": ("passed", {"passed": 2}),
    "vitest_fail.txt": ("failed", {"failed": 1, "files_failed": 1}),
    "make_pytest_fail.txt": ("failed", {"failed": 1}),
    "make_unittest_pass.txt": ("passed", {"passed": 1}),
}


def test_every_recorded_fixture_has_an_expected_verdict() -> None:
    assert {p.name for p in RUNNERS.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_runner_output_gives_the_runners_verdict_whatever_the_exit_code(name: str) -> None:
    verdict_name, counts = EXPECTED[name]
    output = (RUNNERS / name).read_text()
    for exit_code in (0, 1, None):  # `|| true`, a real failure, an unknown code: the summary decides
        verdict = judge(output, exit_code)
        assert verdict.verdict == verdict_name and verdict.source == "summary"
        assert counts.items() <= verdict.counts.items()


def test_exit_code_decides_only_without_a_summary() -> None:
    assert judge("collecting...\nsomething odd\n", 0).verdict == "passed"
    assert judge("collecting...\nsomething odd\n", 0).source == "exit_code"
    assert judge("", 2).verdict == "failed"
    assert judge("", None).verdict == "failed"


def test_colour_codes_do_not_hide_a_summary() -> None:
    coloured = "\x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m3 passed\x1b[0m\x1b[31m in 0.20s\x1b[0m\n"
    assert judge(coloured, 0).verdict == "failed"


def test_a_later_failing_runner_is_not_hidden_by_an_earlier_passing_one() -> None:
    output = (RUNNERS / "pytest_q_pass.txt").read_text() + (RUNNERS / "cargo_fail.txt").read_text()
    verdict = judge(output, 0)
    assert verdict.verdict == "failed" and verdict.formats == ["pytest", "cargo"]


def test_a_non_runner_command_is_a_failed_test_only_when_its_output_reports_failures() -> None:
    assert failure_reported((RUNNERS / "pytest_q_fail.txt").read_text()) is not None
    assert failure_reported((RUNNERS / "pytest_q_pass.txt").read_text()) is None
    assert failure_reported("make: *** [Makefile:2: build] Error 1\n") is None
    assert failure_reported("nothing to see\n") is None


def _command_line(command: str, output: str, exit_code: int) -> str:
    item = {"type": "command_execution", "command": command, "aggregated_output": output, "exit_code": exit_code}
    return json.dumps({"type": "item.completed", "item": item})


def _drafts(command: str, output: str, exit_code: int) -> list[EventDraft]:
    parser = CodexEventParser(["pytest", "python3 -m pytest", "make test"], lambda s: s)
    return parser.feed_line(_command_line(command, output, exit_code))


@pytest.mark.parametrize(
    "command",
    ["/bin/bash -lc 'python3 -m pytest -q || true'", "/bin/bash -lc 'pytest -q | tail -3'", "bash -lc 'pytest; echo'"],
)
def test_masked_exit_code_cannot_turn_a_failing_run_into_a_pass(command: str) -> None:
    drafts = _drafts(command, (RUNNERS / "pytest_q_fail.txt").read_text(), 0)
    test = next(d for d in drafts if d.type == "test")
    assert test.data["passed"] is False and test.data["verdict"] == "failed" and "failed" in test.tags
    assert test.data["verdict_source"] == "summary"
    assert next(d for d in drafts if d.type == "command").data["test_verdict"] == "failed"


def test_summary_far_past_the_stored_output_limit_still_decides() -> None:
    output = "x" * 40_000 + "\n" + (RUNNERS / "pytest_q_fail.txt").read_text()
    drafts = _drafts("pytest -q", output, 0)
    assert next(d for d in drafts if d.type == "test").data["verdict"] == "failed"
    assert next(d for d in drafts if d.type == "command").data["output_truncated"] is True


def test_script_wrapping_a_runner_records_its_failure() -> None:
    drafts = _drafts("bash -lc './ci.sh'", (RUNNERS / "pytest_q_fail.txt").read_text(), 0)
    test = next(d for d in drafts if d.type == "test")
    assert test.data["runner"] == "pytest" and test.data["passed"] is False
    assert [d.type for d in _drafts("bash -lc './ci.sh'", (RUNNERS / "pytest_q_pass.txt").read_text(), 0)] == [
        "command"
    ]


def _event(draft: EventDraft, counter: int) -> Event:
    return Event.from_draft(draft, SessionRef(session_id="s"), counter)


def test_checklist_items_are_proved_only_by_events_whose_verdict_is_true() -> None:
    checklist = Checklist(
        [
            ChecklistItemTemplate.model_validate(
                {"id": "tests", "description": "tests pass", "rule": {"kind": "test_passed"}}
            ),
            ChecklistItemTemplate.model_validate(
                {"id": "ran", "description": "ran pytest", "rule": {"kind": "command_succeeded", "pattern": "pytest"}}
            ),
        ]
    )
    failing = _drafts("bash -lc 'pytest -q || true'", (RUNNERS / "pytest_q_fail.txt").read_text(), 0)
    for counter, draft in enumerate(failing):
        checklist.observe(_event(draft, counter))
    assert not checklist.is_done("tests") and not checklist.is_done("ran")
    passing = _drafts("bash -lc 'pytest -q'", (RUNNERS / "pytest_q_pass.txt").read_text(), 0)
    for counter, draft in enumerate(passing, start=len(failing)):
        checklist.observe(_event(draft, counter))
    assert checklist.is_done("tests") and checklist.is_done("ran")
