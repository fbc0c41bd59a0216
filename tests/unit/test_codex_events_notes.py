"""Notes that state a decision are recorded as decision events; every other note stays a note."""

from __future__ import annotations

import pytest

from hydra_sandbox.codex_events import decisions_in, note_draft


@pytest.mark.parametrize(
    ("note", "decisions"),
    [
        ("Decision: use RE2 for globs", ["use RE2 for globs"]),
        ("context first\nWe decided - keep SQLite\ndecided: no Redis", ["keep SQLite", "no Redis"]),
        ("I decided: ship it", ["ship it"]),
        ("the decision: is pending", []),  # a decision mentioned mid-sentence is not one stated
        ("decided to use sqlite", []),
    ],
)
def test_decisions_are_lines_that_state_one(note: str, decisions: list[str]) -> None:
    assert decisions_in(note) == decisions


def test_a_decision_note_keeps_its_whole_text_and_tags() -> None:
    draft = note_draft("Decision: use RE2\nwhy: linear time", ["globs"])
    assert (draft.type, draft.text, draft.tags) == ("decision", "Decision: use RE2\nwhy: linear time", ["globs"])
    assert draft.data == {"source": "note", "decisions": ["use RE2"]}
    assert note_draft("just a hint").type == "note"
