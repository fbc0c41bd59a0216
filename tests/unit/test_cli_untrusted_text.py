"""Agent text in every CLI view is shown as text: control characters escaped (no ANSI overprint), never
Rich markup (``[/]`` does not crash the view, ``[conceal]`` hides nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.cli.output import shown, visible
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.journal import Journal
from hydra_sandbox.settings import load_settings

SID = "s-0123456789ab"
OVERPRINT = "rm -rf ~\x1b[2K\r\x1b[1Aall good\x08\x08"
HOSTILE = ["closing [/] tag", "[conceal]hidden-from-you[/conceal] shown", "[bold red]fake error[/]", OVERPRINT]


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    journal = Journal(load_settings().journal_path)
    task = "[conceal]task[/conceal] \x1b[8m"
    checklist = {"items": [{"id": "x[/]", "description": "[conceal]desc[/conceal]\x1b[2K", "done": False}]}
    journal.save_session(
        SID,
        status="completed",
        profile_id="default",
        parent_session_id=None,
        data={"session_id": SID, "status": "completed", "task": task, "reason": OVERPRINT, "checklist": checklist},
    )
    for text in [*HOSTILE, "the last event"]:
        journal.append(SessionRef(session_id=SID), EventDraft(type="message", text=text))
    journal.close()
    return tmp_path / "data"


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def assert_safe(output: str) -> None:
    assert "\x1b" not in output and "\r" not in output and "\x08" not in output, repr(output)


def test_sessions_logs_show_markup_and_escapes_as_text(data_home: Path) -> None:
    output = run("sessions", "logs", SID)
    assert_safe(output)
    assert "closing [/] tag" in output and "[conceal]hidden-from-you[/conceal] shown" in output
    assert "[bold red]fake error[/]" in output and "\\x1b[2K\\x0d\\x1b[1Aall good\\x08\\x08" in output
    assert "the last event" in output, "an event after the hostile ones was lost"


def test_sessions_show_and_list_show_markup_and_escapes_as_text(data_home: Path) -> None:
    show = run("sessions", "show", SID)
    assert_safe(show)
    assert "[conceal]desc[/conceal]\\x1b[2K" in show and "x[/]" in show and "\\x0d" in show
    listing = run("sessions", "list")
    assert_safe(listing)
    assert "[conceal]task[/conceal]" in listing


def test_sessions_diff_escapes_the_file_content_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    preview: dict[str, Any] = {
        "unified": "diff --hydra a/x b/x\n+" + OVERPRINT + "\n",
        "refused": [{"path": "[conceal]evil[/conceal]\x1b[8m", "reason": "protected path"}],
        "stats": {"files_changed": 1, "insertions": 1, "deletions": 0},
        "masked_files": ["[/]m.py"],
        "digest": "sha256:00",
    }
    monkeypatch.setattr("hydra_sandbox.cli.sessions_cmd.server_call", lambda tool, args: preview)
    output = run("sessions", "diff", SID)
    assert_safe(output)
    assert "+rm -rf ~\\x1b[2K\\x0d" in output and "[conceal]evil[/conceal]\\x1b[8m" in output and "[/]m.py" in output


def test_search_shows_hits_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    hits = {"hits": [{"distance": 0.1, "id": "e1", "type": "message", "text": "[conceal]found[/conceal]" + OVERPRINT}]}
    monkeypatch.setattr("hydra_sandbox.cli.ops_cmd.server_call", lambda tool, args: hits)
    output = run("search", "anything")
    assert_safe(output)
    assert "[conceal]found[/conceal]rm -rf ~\\x1b[2K" in output


def test_visible_escapes_every_control_character_but_newline_and_tab() -> None:
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("\x00\x1b\x7f\x9b\u202e\u2066\u200b") == "\\x00\\x1b\\x7f\\x9b\\u202e\\u2066\\u200b"
    assert shown("[/]") == "\\[/]"
