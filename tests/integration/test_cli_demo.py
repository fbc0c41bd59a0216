"""`hydra demo`, the end of README's first command, as a new user runs it: a separate process, no
model account, real Docker and real Codex."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


def test_hydra_demo_runs_the_whole_loop_offline_and_cleans_up(agent_image: str, tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("hydra-demo-*"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "OPENAI_"))}
    env |= {"HYDRA_DATA_HOME": str(tmp_path / "data"), "NO_COLOR": "1", "COLUMNS": "160"}
    result = subprocess.run(
        [sys.executable, "-m", "hydra_sandbox", "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "model: scripted demo model (not a real model)" in out, "the scripted model is not labelled as such"
    assert "session ended: awaiting_approval" in out
    assert "+    return a + b" in out, "no diff shown"
    assert "✓ tests_passed" in out, "the checklist was not shown as done"
    hits = out.split("5. semantic search", 1)[1].split("6. apply", 1)[0]
    assert any(line.strip()[:1].isdigit() for line in hits.splitlines()), "no search hit shown"
    assert "applied 1 written" in out
    assert "cleaned up:" in out
    assert set(Path(tempfile.gettempdir()).glob("hydra-demo-*")) <= before, "the demo left its directory behind"
