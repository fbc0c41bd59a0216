"""The scripted Responses-API model: routes by a marker in the request, exec arguments."""

from __future__ import annotations

import json

import httpx

from hydra_sandbox.scripted_model import Script, ScriptedModel

SCRIPT = {
    "turns": [[{"message": "fallback"}]],
    "routes": [
        {"match": "AGENT-A", "turns": [[{"exec": "sleep 30", "yield_ms": 30000}], [{"message": "a done"}]]},
        {"match": "AGENT-B", "turns": [[{"message": "b only"}]]},
    ],
}


def _items(sse: str) -> list[dict[str, object]]:
    out = []
    for block in sse.split("\n\n"):
        if "response.output_item.done" in block:
            out.append(json.loads(block.split("data: ", 1)[1])["item"])
    return out


async def test_each_agent_takes_its_own_routes_turns_in_order_whatever_the_interleaving() -> None:
    async with ScriptedModel(Script.model_validate(SCRIPT)) as model:
        async with httpx.AsyncClient(base_url=model.base_url) as http:

            async def ask(text: str) -> list[dict[str, object]]:
                response = await http.post("/responses", json={"input": [{"role": "user", "content": text}]})
                return _items(response.text)

            first_a = await ask("task AGENT-A")
            assert first_a[0]["name"] == "exec_command"
            assert json.loads(str(first_a[0]["arguments"])) == {"cmd": "sleep 30", "yield_time_ms": 30000}
            assert (await ask("task AGENT-B"))[0]["content"][0]["text"] == "b only"  # type: ignore[index]
            assert (await ask("task AGENT-A"))[0]["content"][0]["text"] == "a done"  # type: ignore[index]
            assert (await ask("task AGENT-B"))[0]["content"][0]["text"] == "done"  # type: ignore[index]
            assert (await ask("no marker"))[0]["content"][0]["text"] == "fallback"  # type: ignore[index]
        assert len(model.requests) == 5


async def test_a_call_can_name_the_session_the_latest_tool_output_is_about() -> None:
    child, parent, older = "s-" + "c" * 12, "s-" + "a" * 12, "s-" + "0" * 12
    call = {"name": "apply_diff", "arguments": {"session_id": "{{result_session_id}}", "last": "{{session_id}}"}}
    script = {"turns": [[{"mcp_call": call}]]}
    spawned = json.dumps({"session_id": child, "session": {"parent_session_id": parent}})
    body = {
        "input": [
            {"role": "user", "content": f"work below {older}"},
            {"type": "function_call_output", "call_id": "c1", "output": spawned},
        ]
    }
    async with (
        ScriptedModel(Script.model_validate(script)) as model,
        httpx.AsyncClient(base_url=model.base_url) as http,
    ):
        items = _items((await http.post("/responses", json=body)).text)
    assert json.loads(str(items[0]["arguments"])) == {"session_id": child, "last": parent}
