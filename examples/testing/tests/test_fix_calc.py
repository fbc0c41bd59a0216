"""A scripted agent fixes a failing test in a fixture repository, through a real Hydra: real Docker
sandboxes, the real Codex CLI, a scripted model instead of a real one. The same workflow runs twice:
against Hydra in this process, and against Hydra's server image over streamable HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hydra_sandbox.testing import AgentSession, spawn

pytestmark = pytest.mark.requires_docker

TASK = "FIX-CALC-7: the test in test_calc.py fails. Fix the code (not the test) and run the tests."


async def check_the_fix(session: AgentSession, repo: Path) -> None:
    """What both variants assert: the agent's diff and checklist, then the applied files."""
    outcome = await session.wait(timeout_s=300)
    assert outcome.status == "awaiting_approval", outcome.reason
    assert outcome.checklist_done() == {"tests_passed": True, "summary_given": True}

    diff = await session.diff()
    assert {f.path: f.status for f in diff.files} == {"calc.py": "modified"}
    assert "-    return a - b" in diff.unified and "+    return a + b" in diff.unified
    assert (repo / "calc.py").read_text().endswith("return a - b\n"), "the repository changed before apply"

    events = await session.events()
    tests = [e.data["passed"] for e in events if e.type == "test"]
    assert tests == [False, True], "the agent should have seen the test fail, then pass"
    assert any("tests exit with 0" in e.text for e in events if e.type == "message")

    applied = await session.apply()
    assert applied.applied and applied.written == ["calc.py"]
    assert (repo / "calc.py").read_text().endswith("return a + b\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_calc.py"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:]


async def test_in_process_a_scripted_agent_fixes_the_failing_test(
    hydra_workspace, hydra_scripted_model, hydra_in_process
) -> None:
    repo = hydra_workspace("fixtures/calc")
    model = await hydra_scripted_model("scripts/fix_calc.yaml")
    hydra = await hydra_in_process(model)

    session = await hydra.spawn(repo, TASK)
    await check_the_fix(session, repo)
    assert model.report().errors == []


async def test_in_a_container_over_http_the_same_agent_fixes_the_same_test(hydra_workspace, hydra_container) -> None:
    repo = hydra_workspace("fixtures/calc")
    hydra = hydra_container("scripts/fix_calc.yaml", workspaces=[repo])
    assert hydra.get_mcp_url().startswith("http://") and hydra.get_token()

    async with hydra.get_client() as client:
        session = await spawn(client, repo, TASK)
        await check_the_fix(session, repo)
