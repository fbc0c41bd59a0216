from __future__ import annotations

from hydra_sandbox.checklists import Checklist
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.settings import REPO_ROOT


def make(session: str, counter: int, type_: str, text: str = "", **data: object) -> Event:
    return Event.from_draft(
        EventDraft(type=type_, text=text, data=dict(data), related_files=list(data.pop("files", []))),
        SessionRef(session_id=session),
        counter,
    )  # type: ignore[arg-type]


def test_checklist_items_are_proved_by_matching_events_only() -> None:
    profiles = ProfileCatalog([REPO_ROOT / "profiles"])
    checklist = Checklist.from_profile(profiles.get("data_migration"))
    assert checklist.observe(make("s", 0, "test", passed=False)) == []
    assert checklist.observe(make("s", 1, "diff", files=["src/app.py"], change_set=True)) == []
    # what the agent says it wrote proves nothing; the session's change set does
    assert checklist.observe(make("s", 2, "diff", files=["db/migrations/0002_add.py"])) == []
    done = checklist.observe(make("s", 2, "diff", files=["db/migrations/0002_add.py"], change_set=True))
    assert [i.id for i in done] == ["migration_written"] and done[0].proved_by == "s:2"
    assert [i.id for i in checklist.observe(make("s", 3, "test", passed=True))] == ["tests_passed"]
    assert [i.id for i in checklist.observe(make("s", 4, "decision", "Rollback drops the column"))] == [
        "decision_stated"
    ]
    assert checklist.observe(make("s", 5, "test", passed=False)) == []
    assert checklist.is_done("tests_passed") and checklist.state().done_count == 3


def test_reviewer_approval_needs_the_verdict_line_and_a_successful_test_command() -> None:
    checklist = Checklist.from_profile(ProfileCatalog([REPO_ROOT / "profiles"]).get("code_reviewer"))
    checklist.observe(make("r", 0, "command", command="pytest -q", exit_code=1))
    assert not checklist.is_done("tests_run")
    checklist.observe(make("r", 1, "command", command="pytest -q", exit_code=0))
    checklist.observe(make("r", 2, "message", "VERDICT: REQUEST_CHANGES"))
    assert checklist.is_done("tests_run") and not checklist.is_done("approved")
    checklist.observe(make("r", 3, "message", "all good\nVERDICT: APPROVE"))
    assert checklist.is_done("approved")
