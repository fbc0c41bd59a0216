"""The client scripts in examples/ run as documented, against real Hydra, real Docker and real Codex
(driven by the scripted model)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import REPO_ROOT, HydraSettings
from tests.integration.test_transports_e2e import DELEGATION, server_env

pytestmark = pytest.mark.docker


async def test_delegate_and_review_example_applies_the_reviewed_change(
    agent_image: str, repo: Path, settings: HydraSettings
) -> None:
    script = REPO_ROOT / "examples" / "delegate_and_review.py"
    try:
        async with ScriptedModel(Script.model_validate(DELEGATION)) as model:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                str(repo),
                "CODER-7Q: fix add() in src/calc.py",
                "--apply",
                env=server_env(settings, model.base_url),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 600)
    finally:
        await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))
    transcript = out.decode()
    Path(settings.data_home, "example-transcript.txt").write_text(transcript)
    assert process.returncode == 0, transcript[-3000:] + err.decode()[-3000:]
    assert "coder called hydra.spawn_agent: refused: " in transcript and "is wider than the parent" in transcript
    assert "tests_run=yes, approved=yes" in transcript
    assert "modified  src/calc.py" in transcript and "applied:" in transcript
    assert (repo / "src" / "calc.py").read_text().endswith("a + b\n")
