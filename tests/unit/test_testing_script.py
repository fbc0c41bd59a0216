"""The scripted model's script format: what it accepts, and errors that name the bad route and step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hydra_sandbox.errors import ConfigError, ScriptError
from hydra_sandbox.settings import REPO_ROOT
from hydra_sandbox.testing import ModelScript, load_script, parse_script
from hydra_sandbox.testing.engine import compile_script

VALID: dict[str, Any] = {
    "hydra_script": 1,
    "label": "fix calc",
    "routes": [
        {
            "match": "FIX-CALC",
            "steps": [
                {"run": "python3 -m pytest -q", "save": "first"},
                {"wait": 1.5},
                {"call": {"tool": "spawn_agent", "arguments": {"working_dir": "/workspace"}}, "save": "child"},
                {"call": {"tool": "wait_session", "arguments": {"session_id": "{{ child.session_id }}"}}},
                {"fail": {"status": 503, "repeat": 2}},
                {"reply": "exit code was {{ first.exit_code }}"},
            ],
        },
        {"steps": [{"reply": "not my task"}]},
    ],
}


def with_steps(*steps: Any, match: str = "FIX-CALC") -> dict[str, Any]:
    return {"hydra_script": 1, "routes": [{"match": match, "steps": list(steps)}]}


def problem(data: Any) -> str:
    with pytest.raises(ScriptError) as caught:
        parse_script(data, "fix.yaml")
    return str(caught.value)


def test_a_valid_script_compiles_waits_into_the_next_turn_and_repeats_failures() -> None:
    script = parse_script(VALID, "fix.yaml")
    route = compile_script(script).routes[0]
    kinds = [t.items[0].kind if t.items else f"fail {t.failure.status}" for t in route.turns]  # type: ignore[union-attr]
    assert kinds == ["run", "call", "call", "fail 503", "fail 503", "reply"]
    assert [t.delay_s for t in route.turns] == [0, 1.5, 0, 0, 0, 0]
    assert compile_script(script).routes[1].match is None


def test_a_script_without_its_format_version_says_how_to_start_one() -> None:
    data = dict(VALID)
    del data["hydra_script"]
    with pytest.raises(ScriptError) as caught:
        parse_script(data, "fix.yaml")
    assert "fix.yaml: hydra_script is missing" in str(caught.value)
    assert "hydra_script: 1" in str(caught.value)


def test_an_unknown_format_version_is_refused_with_the_one_this_hydra_reads() -> None:
    assert "hydra_script 2 is not a version this Hydra reads (this Hydra reads version 1)" in problem(
        {**VALID, "hydra_script": 2}
    )


def test_a_step_with_two_actions_is_named_by_route_and_position() -> None:
    message = problem(with_steps({"run": "ls"}, {"run": "ls", "reply": "done"}))
    assert (
        "fix.yaml: route 1 (match 'FIX-CALC') step 2: a step has exactly one of run, call, reply, fail, wait" in message
    )
    assert "this one has run, reply" in message


def test_a_step_with_no_action_lists_the_keys_it_has() -> None:
    assert "step 1: a step has exactly one of run, call, reply, fail, wait; this one has none (keys: exec)" in problem(
        with_steps({"exec": "ls"})
    )


def test_a_step_that_is_not_a_mapping_is_named() -> None:
    assert "route 1 (match 'FIX-CALC') step 1: a step is a mapping" in problem(with_steps("run ls"))


def test_an_unknown_field_in_a_step_names_the_step_and_the_field() -> None:
    assert "fix.yaml: route 1 (match 'FIX-CALC') step 1: timeout: unknown field" in problem(
        with_steps({"run": "ls", "timeout": 5})
    )


def test_a_command_wait_beyond_what_codex_allows_is_refused_with_the_limit() -> None:
    message = problem(with_steps({"run": "sleep 60", "yield_ms": 60_000}))
    assert "route 1 (match 'FIX-CALC') step 1: yield_ms: Input should be less than or equal to 30000" in message


def test_a_call_without_a_tool_names_the_missing_field() -> None:
    assert "route 1 (match 'FIX-CALC') step 1: call.tool: required field is missing" in problem(
        with_steps({"call": {"arguments": {}}})
    )


def test_an_error_status_outside_4xx_and_5xx_is_refused() -> None:
    assert "step 1: fail.status: Input should be greater than or equal to 400" in problem(
        with_steps({"fail": {"status": 200}})
    )


def test_a_placeholder_on_a_result_no_earlier_step_saves_names_the_step_and_the_fix() -> None:
    message = problem(
        with_steps(
            {"call": {"tool": "spawn_agent"}},
            {"call": {"tool": "wait_session", "arguments": {"session_id": "{{ child.session_id }}"}}},
        )
    )
    assert "route 1 (match 'FIX-CALC') step 2 (call 'hydra.wait_session')" in message
    assert "{{ child }} refers to 'child', which no earlier step of this route saves" in message
    assert "add `save: child`" in message


def test_a_placeholder_may_not_use_a_result_saved_later() -> None:
    message = problem(with_steps({"reply": "{{ later.output }}"}, {"run": "ls", "save": "later"}))
    assert "step 1 (reply '{{ later.output }}')" in message


def test_the_same_save_name_twice_is_refused_at_the_second_step() -> None:
    message = problem(with_steps({"run": "ls", "save": "x"}, {"run": "pwd", "save": "x"}))
    assert "step 2 (run 'pwd'): save name 'x' is already taken" in message


def test_a_wait_at_the_end_of_a_route_is_refused() -> None:
    assert "step 2 (wait '2 s'): a wait must come before the step it delays" in problem(
        with_steps({"reply": "done"}, {"wait": 2})
    )


def test_only_the_last_route_may_leave_out_its_marker() -> None:
    data = {"hydra_script": 1, "routes": [{"steps": [{"reply": "a"}]}, {"match": "B", "steps": [{"reply": "b"}]}]}
    assert "only the last route may leave out match" in problem(data)


def test_a_route_without_steps_is_refused() -> None:
    assert "route 1 (match 'FIX-CALC'): steps: List should have at least 1 item" in problem(with_steps())


def test_a_script_file_in_yaml_or_json_loads(tmp_path: Path) -> None:
    yaml_file = tmp_path / "fix.yaml"
    yaml_file.write_text(
        "hydra_script: 1\nroutes:\n  - match: FIX\n    steps:\n      - run: ls\n      - reply: ok\n", encoding="utf-8"
    )
    json_file = tmp_path / "fix.json"
    json_file.write_text(ModelScript.model_validate(VALID).model_dump_json(exclude_none=True), encoding="utf-8")
    assert load_script(yaml_file).routes[0].match == "FIX"
    assert load_script(json_file) == parse_script(VALID)


def test_malformed_files_name_the_line(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("hydra_script: 1\nroutes: [\n", encoding="utf-8")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"hydra_script": 1,\n "routes": }', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: YAML syntax error"):
        load_script(bad_yaml)
    with pytest.raises(ScriptError, match=r"bad.json: line 2, column 12: not JSON"):
        load_script(bad_json)


def test_every_script_in_the_testing_guide_is_valid() -> None:
    guide = (REPO_ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "hydra_script:" in b]
    assert len(blocks) >= 2
    for block in blocks:
        parse_script(yaml.safe_load(block), "docs/testing.md")
    example = REPO_ROOT / "examples" / "testing" / "tests" / "scripts" / "fix_calc.yaml"
    assert load_script(example).routes[0].match == "FIX-CALC-7"
