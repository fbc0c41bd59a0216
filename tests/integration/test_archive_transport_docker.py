"""HYDRA_WORKSPACE_TRANSPORT=archive end to end on the local engine, with the real agent image and Codex
and a scripted model: the agent edits, adds and deletes files and cannot see .env; the preview lists the
same statuses and refusals as the same session over the overlay volume, and apply writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.mcp.app import build_server
from hydra_sandbox.sandbox.archive_transport import ArchiveVolumeTransport
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import Mount, home_label
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.mcp_calls import call

pytestmark = pytest.mark.docker
MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"
AGENT = [
    [{"exec": "cat .env; ls -a"}],
    [{"exec": "sed -i 's/a - b/a + b/' src/calc.py && echo notes > NOTES.md && rm test_calc.py && echo x > .env"}],
    [{"message": "Fixed add, added NOTES.md, removed the old test."}],
]


async def one_session(model: ScriptedModel, data_home: Path, repo: Path, transport: str) -> dict[str, Any]:
    """Spawn, wait, read the preview; apply it for the archive transport, discard it for the overlay."""
    settings = load_settings(
        data_home=data_home, model_base_url=model.base_url, model="test-model", embedding_model_dir=MODEL_DIR,
        workspace_transport=transport,
    )  # fmt: skip
    async with Client(build_server(settings)) as client:
        session_id = (await call(client, "spawn_agent", working_dir=str(repo), custom_prompt="fix add()"))["session_id"]
        waited = await call(client, "wait_session", session_id=session_id, timeout_s=240)
        assert waited["status"] == "awaiting_approval", json.dumps(waited)[:3000]
        events = (await call(client, "tail_logs", session_id=session_id, limit=1000))["events"]
        commands = "\n".join(e["text"] for e in events if e["type"] == "command")
        assert "hunter2" not in commands and "No such file or directory" in commands
        diff = await call(client, "get_diff", session_id=session_id)
        if transport == "archive":
            assert (repo / "src" / "calc.py").read_text().endswith("a - b\n"), "the host changed before apply"
            applied = await call(client, "apply_diff", session_id=session_id, confirm=True, digest=diff["digest"])
            assert applied["applied"] is True
        else:
            await call(client, "discard_diff", session_id=session_id)
        return diff


async def test_the_archive_transport_previews_and_applies_what_the_overlay_would(
    agent_image: str, repo: Path, settings: HydraSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed: list[str] = []
    real_attach = ArchiveVolumeTransport.attach

    async def attach(self: ArchiveVolumeTransport, ws: StagedWorkspace) -> Mount:
        packed.append(ws.session_id)
        return await real_attach(self, ws)

    monkeypatch.setattr(ArchiveVolumeTransport, "attach", attach)
    try:
        async with ScriptedModel(Script.model_validate({"turns": AGENT + AGENT})) as model:
            overlay = await one_session(model, settings.data_home, repo, "overlay")
            archive = await one_session(model, settings.data_home, repo, "archive")
            model.raise_errors()
    finally:
        await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))
    assert len(packed) == 1, "the archive transport did not carry exactly the second session"
    statuses = {f["path"]: f["status"] for f in archive["files"]}
    assert statuses == {"src/calc.py": "modified", "NOTES.md": "added", "test_calc.py": "deleted"}
    assert statuses == {f["path"]: f["status"] for f in overlay["files"]}
    assert archive["refused"] == overlay["refused"] and ".env" in {r["path"] for r in archive["refused"]}
    assert (repo / "src" / "calc.py").read_text().endswith("a + b\n") and (repo / "NOTES.md").read_text() == "notes\n"
    assert not (repo / "test_calc.py").exists() and "hunter2" in (repo / ".env").read_text()
