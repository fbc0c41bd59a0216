"""What the scripted model answers, request by request (no I/O): routing by the task's marker, progress
per conversation, placeholders filled from earlier results, and the problems it reports."""

from __future__ import annotations

import json
from typing import Any

from hydra_sandbox.testing import parse_script
from hydra_sandbox.testing.engine import ScriptState, compile_script

SCRIPT = {
    "hydra_script": 1,
    "routes": [
        {
            "match": "CODER-1",
            "steps": [
                {"call": {"tool": "spawn_agent", "arguments": {"custom_prompt": "REVIEW-2: check"}}, "save": "child"},
                {
                    "call": {
                        "tool": "wait_session",
                        "arguments": {"session_id": "{{ child.session_id }}", "timeout_s": "{{ child.depth }}"},
                    }
                },
                {"run": "echo {{ child.session_id }}", "save": "echoed"},
                {"reply": "exit {{ echoed.exit_code }}: {{ echoed.output }}"},
            ],
        },
        {"match": "REVIEW-2", "steps": [{"reply": "VERDICT: APPROVE"}]},
        {"match": "SHARED-3", "progress": "shared", "steps": [{"reply": "first"}, {"reply": "second"}]},
    ],
}


def request(task: str, conversation: str = "conv-a", *history: dict[str, Any]) -> tuple[dict[str, Any], str]:
    body = {
        "prompt_cache_key": conversation,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "REVIEW-2 in dev"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": task}]},
            *history,
        ],
    }
    return body, json.dumps(body)


def output(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def state() -> ScriptState:
    return ScriptState(compile_script(parse_script(SCRIPT)))


def test_a_conversation_follows_its_route_with_ids_from_earlier_results() -> None:
    model = state()
    first = model.answer(*request("CODER-1: fix it")).items[0]
    assert first["namespace"] == "mcp__hydra" and first["name"] == "spawn_agent"
    spawned = output(first["call_id"], 'Wall time: 0.1 seconds\nOutput:\n{"session_id": "s-0123456789ab", "depth": 1}')
    history = [first, spawned]
    second = model.answer(*request("CODER-1: fix it", "conv-a", *history)).items[0]
    assert json.loads(second["arguments"]) == {"session_id": "s-0123456789ab", "timeout_s": 1}
    history += [second, output(second["call_id"], "Output:\n{}")]
    third = model.answer(*request("CODER-1: fix it", "conv-a", *history)).items[0]
    assert json.loads(third["arguments"]) == {"cmd": "echo s-0123456789ab"}
    ran = output(third["call_id"], "Chunk ID: 1\nProcess exited with code 0\nOutput:\ns-0123456789ab\n")
    fourth = model.answer(*request("CODER-1: fix it", "conv-a", *history, third, ran)).items[0]
    assert fourth["content"][0]["text"] == "exit 0: s-0123456789ab\n"
    assert model.errors == [] and model.overruns == []


def test_routing_reads_the_task_not_other_messages_or_tool_arguments() -> None:
    script = {
        "hydra_script": 1,
        "routes": [  # the reviewer's route comes first: a match anywhere in the request would take it
            {"match": "REVIEW-2", "steps": [{"reply": "VERDICT: APPROVE"}]},
            {
                "match": "CODER-1",
                "steps": [
                    {"call": {"tool": "spawn_agent", "arguments": {"custom_prompt": "REVIEW-2: check"}}},
                    {"reply": "coder done"},
                ],
            },
        ],
    }
    model = ScriptState(compile_script(parse_script(script)))
    call = model.answer(*request("CODER-1: fix it")).items[0]
    assert call["name"] == "spawn_agent", "the developer message's REVIEW-2 must not route the coder"
    # the coder's next request carries the reviewer's marker in a tool argument too
    again = model.answer(*request("CODER-1: fix it", "conv-a", call, output(call["call_id"], "{}"))).items[0]
    assert again["content"][0]["text"] == "coder done"
    reviewer = model.answer(*request("REVIEW-2: check", "conv-b")).items[0]
    assert reviewer["content"][0]["text"] == "VERDICT: APPROVE"


def test_each_conversation_that_matches_starts_at_the_first_step() -> None:
    model = state()
    a = model.answer(*request("CODER-1 a", "conv-a")).items[0]
    b = model.answer(*request("CODER-1 b", "conv-b")).items[0]
    assert a["name"] == b["name"] == "spawn_agent" and a["call_id"] != b["call_id"]


def test_a_shared_route_hands_its_steps_to_whichever_agent_asks_next() -> None:
    model = state()
    texts = [model.answer(*request("SHARED-3", conv)).items[0]["content"][0]["text"] for conv in ("x", "y", "z")]
    assert texts[:2] == ["first", "second"]
    assert "has no step left" in texts[2]
    assert model.overruns == ["route 3 (match 'SHARED-3'): request 3 after its 2 step(s)"]


def test_a_placeholder_on_a_missing_field_fails_the_request_and_names_the_step_and_the_result() -> None:
    model = state()
    call = model.answer(*request("CODER-1")).items[0]
    answer = model.answer(*request("CODER-1", "conv-a", call, output(call["call_id"], 'Output:\n{"status": "queued"}')))
    assert answer.status == 400
    assert model.errors == [
        "route 1 (match 'CODER-1') step 2 (call 'hydra.wait_session'): {{ child.session_id }}: "
        'the result has no \'session_id\' (it has: status); the result was {"status": "queued"}'
    ]


def test_a_request_no_route_matches_is_refused_with_the_markers() -> None:
    model = state()
    answer = model.answer(*request("something else"))
    assert answer.status == 400 and answer.error is not None
    assert "no route matches this conversation's task (markers: 'CODER-1', 'REVIEW-2', 'SHARED-3')" in answer.error
    assert len(model.report().errors) == 1


def test_failures_repeat_and_waits_delay_the_next_answer() -> None:
    script = {
        "hydra_script": 1,
        "routes": [{"steps": [{"wait": 2}, {"fail": {"status": 503, "repeat": 2}}, {"reply": "back"}]}],
    }
    model = ScriptState(compile_script(parse_script(script)))
    answers = [model.answer(*request("anything")) for _ in range(3)]
    assert [(a.status, a.delay_s) for a in answers] == [(503, 2), (503, 0), (200, 0)]
    assert model.report().routes[0].taken == {"conv-a": 3}


def test_the_report_counts_each_conversations_progress() -> None:
    model = state()
    model.answer(*request("CODER-1", "conv-a"))
    model.answer(*request("REVIEW-2", "conv-b"))
    report = model.report()
    assert report.requests == 2
    assert [r.taken for r in report.routes] == [{"conv-a": 1}, {"conv-b": 1}, {}]


def test_the_builtin_placeholders_take_the_last_id_mentioned_and_the_first_id_of_the_latest_result() -> None:
    script = {
        "hydra_script": 1,
        "routes": [
            {
                "steps": [
                    {"call": {"tool": "spawn_agent"}},
                    {
                        "call": {
                            "tool": "wait_session",
                            "arguments": {"a": "{{ result_session_id }}", "b": "{{session_id}}"},
                        }
                    },
                ]
            }
        ],
    }
    model = ScriptState(compile_script(parse_script(script)))
    call = model.answer(*request("anything")).items[0]
    answer = '{"session_id": "s-00000000000c", "parent_session_id": "s-00000000000p"}'.replace("p", "a")
    second = model.answer(*request("anything", "conv-a", call, output(call["call_id"], answer))).items[0]
    assert json.loads(second["arguments"]) == {"a": "s-00000000000c", "b": "s-00000000000a"}
