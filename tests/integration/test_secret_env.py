"""The model key is in the agent container for Codex, never in the environment of the commands the
agent runs (real Codex, real sandbox)."""

from __future__ import annotations

import asyncio
import os
import subprocess
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
PROBE = "printenv OPENAI_API_KEY | wc -c; printenv | grep -c -e PYTEST_ADDOPTS -e HYDRA_EGRESS_PORT"
KEY = "sk-proj-ENVCHECKabcdefghijklmnopqrstuvwxyz0123456789"


async def test_agent_commands_cannot_read_the_model_key(
    agent_image: str, settings: HydraSettings, tmp_path: Path
) -> None:
    repo = tmp_path / "envrepo"
    repo.mkdir()
    (repo / "a.txt").write_text("x\n")
    subprocess.run(["chown", "-R", "1234:1234", str(repo)], check=True)
    os.chmod(tmp_path, 0o755)
    script = Script.model_validate(
        {
            "turns": [
                [{"exec": PROBE}],
                [{"message": "ok"}],
            ]
        }
    )
    async with ScriptedModel(script) as model:
        s = load_settings(
            data_home=settings.data_home, model_base_url=model.base_url, model="test-model", model_api_key=KEY
        )
        sandbox = docker_sandbox(s, SecretMasker([KEY]))
        drafts: list[EventDraft] = []

        async def sink(draft: EventDraft) -> None:
            drafts.append(draft)

        policy = PolicyCatalog(s.policy_dirs).get("default")
        request = RunRequest(
            session_id="s-envcheck",
            profile_id="default",
            policy=policy,
            prompt="x",
            working_dir=repo,
            model="test-model",
        )
        try:
            result = await sandbox.run(request, sink, asyncio.Event())
        finally:
            await sandbox.discard("s-envcheck")
    assert result.status == "completed"
    output = next(d for d in drafts if d.type == "command").data["output"].split()
    assert output == ["0", "2"], output  # no key (not even masked); the other variables are still there
