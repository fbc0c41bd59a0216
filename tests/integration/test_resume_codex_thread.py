"""Resume continues the real Codex thread: the follow-up's request to the (scripted) model carries the
earlier turn, the task, the command and the agent's answer. The ``CODEX_HOME`` holding the thread is
kept while a diff awaits review, so the first run leaves a change; discarding it removes the thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastmcp import Client

from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.mcp.app import build_server
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.mcp_calls import call

pytestmark = pytest.mark.docker
MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"
FIRST_TASK, FIRST_ANSWER = "first task: write ONE.md (marker-one-7f3a)", "wrote ONE.md (answer-one-91c2)"
FOLLOW_UP = "follow-up: now explain what you did (marker-two-c4d8)"
TURNS = [
    [{"exec": "echo one > ONE.md"}],
    [{"message": FIRST_ANSWER}],
    [{"message": "I wrote ONE.md in the first turn."}],
]


async def test_a_follow_up_reaches_the_model_with_the_earlier_turn(
    agent_image: str, repo: Path, settings: HydraSettings
) -> None:
    try:
        async with ScriptedModel(Script.model_validate({"turns": TURNS})) as model:
            hydra = load_settings(
                data_home=settings.data_home, model_base_url=model.base_url, model="test-model",
                embedding_model_dir=MODEL_DIR,
            )  # fmt: skip
            async with Client(build_server(hydra)) as client:
                session_id = (await call(client, "spawn_agent", working_dir=str(repo), custom_prompt=FIRST_TASK))[
                    "session_id"
                ]
                first = await call(client, "wait_session", session_id=session_id, timeout_s=240)
                assert first["status"] == "awaiting_approval", json.dumps(first)[:2000]
                asked_before = len(model.requests)

                await call(client, "resume_session", session_id=session_id, prompt=FOLLOW_UP)
                second = await call(client, "wait_session", session_id=session_id, timeout_s=240)
                assert second["status"] == "awaiting_approval", json.dumps(second)[:2000]
                follow_ups = [json.dumps(r) for r in model.requests[asked_before:]]
                assert follow_ups and FOLLOW_UP in follow_ups[0]
                for earlier in (FIRST_TASK, "echo one > ONE.md", FIRST_ANSWER):
                    assert earlier in follow_ups[0], f"the resumed thread's request lacks {earlier!r}"
                await call(client, "discard_diff", session_id=session_id)
            model.raise_errors()
    finally:
        report = await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))
    assert not [v for v in report.volumes if v.startswith("hydra-codex-")], "the thread outlived its session"
