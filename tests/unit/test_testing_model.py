"""The scripted model over HTTP: streamed answers, scripted failures, refusals, and the report and
request log it serves for tests that run it in a container."""

from __future__ import annotations

import json
from typing import Any

import httpx

from hydra_sandbox.testing import ScriptedModel, parse_script

SCRIPT = parse_script(
    {
        "hydra_script": 1,
        "routes": [
            {
                "match": "FIX-1",
                "steps": [{"fail": {"status": 503, "message": "overloaded"}}, {"run": "ls", "yield_ms": 2000}],
            }
        ],
    }
)


def items(sse: str) -> list[dict[str, Any]]:
    return [
        json.loads(block.split("data: ", 1)[1])["item"]
        for block in sse.split("\n\n")
        if "response.output_item.done" in block
    ]


def body(task: str) -> dict[str, Any]:
    return {"prompt_cache_key": "c1", "input": [{"role": "user", "content": [{"type": "input_text", "text": task}]}]}


async def test_the_model_streams_steps_fails_as_scripted_and_reports_over_http() -> None:
    async with ScriptedModel(SCRIPT) as model, httpx.AsyncClient(base_url=model.base_url) as http:
        failed = await http.post("/responses", json=body("FIX-1: go"))
        assert failed.status_code == 503 and failed.json()["error"]["message"] == "overloaded"
        answered = await http.post("/responses", json=body("FIX-1: go"))
        assert answered.headers["content-type"] == "text/event-stream"
        assert answered.text.startswith("event: response.created") and "response.completed" in answered.text
        assert json.loads(items(answered.text)[0]["arguments"]) == {"cmd": "ls", "yield_time_ms": 2000}
        refused = await http.post("/responses", json=body("unrelated task"))
        assert refused.status_code == 400 and "no route matches" in refused.json()["error"]["message"]

        root = model.base_url.removesuffix("/v1")
        report = (await http.get(f"{root}/_scripted/report")).json()
        assert report["requests"] == 3 and report["routes"][0]["taken"] == {"c1": 2}
        assert len(report["errors"]) == 1
        logged = (await http.get(f"{root}/_scripted/requests")).json()
        assert [r["input"][0]["content"][0]["text"] for r in logged] == ["FIX-1: go", "FIX-1: go", "unrelated task"]
        assert (await http.get(f"{root}/elsewhere")).status_code == 404
    assert model.report().requests == 3
