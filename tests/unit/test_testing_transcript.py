"""A recorded run (Codex's --json output or a Hydra timeline) becomes a script that replays it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hydra_sandbox.errors import ScriptError
from hydra_sandbox.testing import load_script, script_from_transcript
from hydra_sandbox.testing.transcript import main

SESSION = "s-0a1b2c3d4e5f"


def codex_jsonl() -> list[dict[str, Any]]:
    def done(item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "item.completed", "item": item}

    return [
        {"type": "thread.started", "thread_id": "t-1"},
        {"type": "turn.started"},
        done({"type": "reasoning", "text": "let me look"}),
        done({"type": "command_execution", "command": "/bin/bash -lc 'python3 -m pytest -q'", "exit_code": 1}),
        done({"type": "file_change", "changes": [{"path": "/workspace/calc.py", "kind": "update"}]}),
        done(
            {
                "type": "mcp_tool_call",
                "server": "hydra",
                "tool": "spawn_agent",
                "arguments": {"working_dir": "/workspace", "profile_id": "code_reviewer"},
                "result": {"content": [], "structured_content": {"session_id": SESSION, "status": "queued"}},
                "status": "completed",
            }
        ),
        done(
            {
                "type": "mcp_tool_call",
                "server": "hydra",
                "tool": "wait_session",
                "arguments": json.dumps({"session_id": SESSION, "timeout_s": 60}),
                "result": {"content": [{"type": "text", "text": json.dumps({"status": "completed"})}]},
                "status": "completed",
            }
        ),
        done({"type": "agent_message", "text": f"Summary: fixed calc.py; review {SESSION} approved."}),
        {"type": "turn.completed", "usage": {}},
    ]


def test_a_codex_recording_replays_commands_calls_and_the_reply_with_the_new_runs_ids() -> None:
    conversion = script_from_transcript(codex_jsonl(), match="FIX-CALC")
    steps = [s.model_dump(exclude_none=True) for s in conversion.script.routes[0].steps]
    assert steps == [
        {"run": "python3 -m pytest -q"},
        {
            "call": {
                "tool": "spawn_agent",
                "server": "hydra",
                "arguments": {"working_dir": "/workspace", "profile_id": "code_reviewer"},
            },
            "save": "step2",
        },
        {
            "call": {
                "tool": "wait_session",
                "server": "hydra",
                "arguments": {"session_id": "{{ step2.session_id }}", "timeout_s": 60},
            }
        },
        {"reply": f"Summary: fixed calc.py; review {SESSION} approved."},
    ]
    assert conversion.script.routes[0].match == "FIX-CALC"
    assert conversion.notes == [
        "after step 1: the model edited /workspace/calc.py; the recording has no content: add a run step for it"
    ]


def test_a_hydra_timeline_converts_the_same_way(tmp_path: Path) -> None:
    events = [
        {"type": "status", "text": "turn started", "data": {}},
        {"type": "command", "text": "$ ls", "data": {"command": "ls", "exit_code": 0}},
        {
            "type": "command",
            "text": "tool hydra.list_agents completed",
            "tags": ["mcp"],
            "data": {
                "command": "tool hydra.list_agents completed",
                "mcp": json.dumps({"server": "hydra", "tool": "list_agents", "arguments": {}}),
            },
        },
        {"type": "message", "text": "Summary: listed.", "data": {"role": "agent"}},
        {"type": "message", "text": "thinking", "data": {"role": "reasoning"}},
    ]
    recording = tmp_path / "timeline.jsonl"
    recording.write_text("\n".join(json.dumps(e) for e in events) + "\n", encoding="utf-8")
    steps = script_from_transcript(recording).script.routes[0].steps
    assert [s.kind for s in steps] == ["run", "call", "reply"]


def test_the_command_line_writes_a_script_that_loads_with_the_notes_as_comments(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    recording.write_text("\n".join(json.dumps(r) for r in codex_jsonl()), encoding="utf-8")
    out = tmp_path / "replay.yaml"
    main([str(recording), "--match", "FIX-CALC", "-o", str(out)])
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# NOTE: after step 1: the model edited /workspace/calc.py")
    assert yaml.safe_load(text)["hydra_script"] == 1
    assert load_script(out).routes[0].steps[2].call.arguments["session_id"] == "{{ step2.session_id }}"  # type: ignore[union-attr]


def test_a_recording_with_nothing_to_replay_is_refused() -> None:
    with pytest.raises(ScriptError, match="holds no command, tool call or message"):
        script_from_transcript([{"type": "thread.started"}])


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    recording.write_text('{"type": "turn.started"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ScriptError, match=r"run.jsonl: line 2: not JSON"):
        script_from_transcript(recording)
