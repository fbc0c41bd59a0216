"""Codex argv building and the JSONL parser, over output recorded from the real binary."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from hydra_sandbox.codex import build_invocation, toml_value
from hydra_sandbox.codex_events import CodexEventParser, match_runner, unwrap_shell

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codex"
RUNNERS = ["pytest", "python3 -m pytest", "npm test", "make test"]


def parse(name: str, mask=lambda s: s):  # type: ignore[no-untyped-def]
    parser = CodexEventParser(RUNNERS, mask)
    drafts = []
    for line in (FIXTURES / name).read_text().splitlines():
        drafts += parser.feed_line(line)
    return parser, drafts


def test_prompt_is_one_argv_element_after_double_dash() -> None:
    prompt = "--dangerously-do-things; rm -rf / $(whoami) `id`\nsecond line"
    argv = build_invocation(prompt, model="m").argv
    assert argv[-2:] == ["--", prompt]
    assert argv[:3] == ["codex", "exec", "--json"]
    assert "--dangerously-bypass-approvals-and-sandbox" in argv


def test_resume_names_the_thread_before_the_prompt() -> None:
    argv = build_invocation("continue", model="m", resume_thread_id="0199-thread").argv
    assert argv[:3] == ["codex", "exec", "resume"]
    assert argv[-3:] == ["0199-thread", "--", "continue"]


def test_provider_override_is_valid_toml_even_with_hostile_values() -> None:
    url = 'http://127.0.0.1:9/v1" \n[evil]\nx = "1'
    argv = build_invocation("p", model="m", base_url=url, api_key_env="OPENAI_API_KEY").argv
    value = next(a for a in argv if a.startswith("model_providers.hydra=")).split("=", 1)[1]
    parsed = tomllib.loads(f"x = {value}")
    assert parsed["x"]["base_url"] == url and parsed["x"]["wire_api"] == "responses"
    assert tomllib.loads(f"y = {toml_value({'a': [1, True, 'q']})}")["y"] == {"a": [1, True, "q"]}


def test_recorded_run_becomes_typed_events() -> None:
    parser, drafts = parse("commands_and_decision.jsonl")
    types = [d.type for d in drafts]
    assert types.count("command") == 2
    assert "decision" in types and "message" in types
    assert parser.thread_id and parser.usage["input_tokens"] == 300
    warning = next(d for d in drafts if "Model metadata" in d.text)
    assert warning.type == "message" and "warning" in warning.tags
    command = next(d for d in drafts if d.type == "command")
    assert command.data["command"] == "echo hello > hello.txt && cat hello.txt"
    assert command.data["exit_code"] == 0 and command.data["output"] == "hello\n"


def test_test_runner_commands_yield_test_events_with_verdict() -> None:
    parser = CodexEventParser(RUNNERS, lambda s: s)
    line = {
        "type": "item.completed",
        "item": {
            "type": "command_execution",
            "command": "/bin/bash -lc 'pytest -q'",
            "aggregated_output": "1 failed, 3 passed in 0.2s",
            "exit_code": 1,
            "status": "failed",
        },
    }
    drafts = parser.feed_line(json.dumps(line))
    test = next(d for d in drafts if d.type == "test")
    assert test.data["passed"] is False and test.data["counts"]["failed"] == 1 and test.data["runner"] == "pytest"


def test_runner_matching_sees_through_shell_wrappers_and_cd() -> None:
    assert unwrap_shell("/bin/bash -lc 'cd app && pytest -q'") == "cd app && pytest -q"
    assert match_runner("/bin/bash -lc 'cd app && pytest -q'", RUNNERS) == "pytest"
    assert match_runner("bash -lc 'PYTHONPATH=. python3 -m pytest'", RUNNERS) == "python3 -m pytest"
    assert match_runner("bash -lc 'echo pytest'", RUNNERS) is None


def test_malformed_and_unknown_lines_become_masked_error_events() -> None:
    parser = CodexEventParser(RUNNERS, lambda s: s.replace("SECRET", "[MASKED:x]"))
    bad = parser.feed_line("{not json SECRET" + "x" * 5000)
    assert bad[0].type == "error" and "SECRET" not in bad[0].data["raw"] and len(bad[0].data["raw"]) < 2200
    unknown = parser.feed_line(json.dumps({"type": "brand.new", "SECRET": 1}))
    assert unknown[0].type == "error" and "brand.new" in unknown[0].text
    assert parser.feed_line(json.dumps([1, 2]))[0].type == "error"
    assert parser.feed_line("   ") == []


def test_secrets_in_command_output_are_masked_by_the_parser() -> None:
    parser = CodexEventParser(RUNNERS, lambda s: s.replace("sk-live-123", "[MASKED:k]"))
    line = {
        "type": "item.completed",
        "item": {"type": "command_execution", "command": "cat key", "aggregated_output": "sk-live-123", "exit_code": 0},
    }
    drafts = parser.feed_line(json.dumps(line))
    assert "sk-live-123" not in json.dumps([d.model_dump(mode="json") for d in drafts])


def test_resumed_thread_keeps_its_id() -> None:
    parser, drafts = parse("resume.jsonl")
    assert drafts[0].data["thread_id"] == parser.thread_id


def test_commands_never_inherit_secret_variables() -> None:
    argv = build_invocation("p", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_MODEL_CRED").argv
    value = argv[argv.index("-c") + 1]
    assert value.startswith("shell_environment_policy.exclude=")
    excluded = tomllib.loads("x = " + value.split("=", 1)[1])["x"]
    assert {"MY_MODEL_CRED", "*KEY*", "*TOKEN*", "*SECRET*"} <= set(excluded)


def test_a_secret_across_the_length_cut_of_a_tool_call_leaves_no_fragment() -> None:
    from hydra_sandbox.codex_events import MAX_OUTPUT
    from hydra_sandbox.masking import SecretMasker

    secret = "sk-proj-CUTACROSSTHEBOUNDARYabcdefghijklmnopqrstuvwxyz0123456789"
    masker = SecretMasker([secret])
    item = {"id": "item_1", "type": "mcp_tool_call", "server": "hydra", "tool": "log_context", "status": "completed"}
    prefix = json.dumps({**item, "arguments": {"note": ""}})
    padding = "x" * (MAX_OUTPUT - len(prefix) - 8)  # the secret starts 8 characters before the cut
    item["arguments"] = {"note": padding + secret}  # type: ignore[assignment]
    parser = CodexEventParser(RUNNERS, masker.mask)
    (draft,) = parser.feed_line(json.dumps({"type": "item.completed", "item": item}))
    assert secret[:8] not in draft.data["mcp"], "a fragment of the secret survived the cut"


def test_a_first_run_works_in_the_workspace_and_a_resume_where_its_thread_started() -> None:
    first = build_invocation("p", model="m", workdir="/workspace").argv
    resumed = build_invocation("p", model="m", resume_thread_id="t1", workdir="/workspace").argv
    assert first[first.index("-C") + 1] == "/workspace"
    assert "-C" not in resumed  # `codex exec resume` continues in the thread's own directory
    same = [a for a in first if a not in {"-C", "/workspace"}]
    assert same == [a for a in resumed if a not in {"resume", "t1"}]  # the rest is built once, the same
