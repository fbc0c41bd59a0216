"""A session's model token budget with the real Codex CLI and the scripted model (issue 13, item 2): the
gateway counts each response's usage (the scripted model reports 120 tokens per response), refuses the
request after the budget is spent, and the run ends ``failed`` with the reason; the refused request never
reaches the model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.sandbox import RunRequest
from hydra_sandbox.sandbox.backends.docker import docker_sandbox
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings

pytestmark = pytest.mark.docker


async def test_past_max_model_tokens_the_gateway_refuses_and_the_run_fails_with_the_reason(
    agent_image: str, repo: Path, settings: HydraSettings
) -> None:
    script = Script.model_validate(
        {"turns": [[{"exec": "echo one"}], [{"exec": "echo two"}], [{"exec": "echo three"}], [{"message": "done"}]]}
    )
    async with ScriptedModel(script) as model:
        s = load_settings(data_home=settings.data_home, model_base_url=model.base_url, model="test-model")
        sandbox = docker_sandbox(s, SecretMasker())
        drafts: list[EventDraft] = []

        async def sink(draft: EventDraft) -> None:
            drafts.append(draft)

        policy = PolicyCatalog(s.policy_dirs).get("default")
        limits = policy.resources.model_copy(update={"max_model_tokens": 200})
        request = RunRequest(
            session_id="s-b0d9e7000001",
            profile_id="default",
            policy=policy.model_copy(update={"resources": limits}),
            prompt="x",
            working_dir=repo,
            model="test-model",
        )
        try:
            result = await asyncio.wait_for(sandbox.run(request, sink, asyncio.Event()), 600)
        finally:
            await sandbox.discard(request.session_id)
        answered = len(model.requests)
    assert result.status == "failed", result
    assert result.reason is not None and "used 240 tokens, resources.max_model_tokens is 200" in result.reason
    assert answered == 2, f"{answered} requests reached the model"  # the third was refused by the gateway
    totals = [d.data["session_tokens"] for d in drafts if d.data.get("gateway") == "model_usage"]
    assert totals == [120, 240]
    assert any(d.type == "error" and "max_model_tokens" in d.text for d in drafts)
