"""The real Codex CLI as the MCP host: Codex starts Hydra over stdio from its config.toml, its
(scripted) model calls Hydra's tools, and Hydra's child agent, another real Codex in a sandbox,
does the work. Both models are the scripted one; no real model is involved."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.codex import toml_value
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.images import stage_codex
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings

pytestmark = pytest.mark.docker
MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"
SID = "{{session_id}}"


def hydra_call(name: str, save: str | None = None, **arguments: Any) -> list[dict[str, Any]]:
    return [{"mcp_call": {"name": name, "arguments": arguments, "save": save}}]


def script(repo: Path) -> dict[str, Any]:
    return {
        "routes": [
            {
                "match": "HOST-MANAGER-5T",
                "turns": [
                    hydra_call("spawn_agent", working_dir=str(repo), custom_prompt="CHILD-WORKER-8R: fix add()"),
                    hydra_call("wait_session", session_id=SID, timeout_s=240),
                    hydra_call("get_diff", save="diff", session_id=SID),
                    hydra_call("apply_diff", session_id=SID, confirm=True, digest="{{diff.digest}}"),
                    [{"message": "Delegated the fix to a Hydra agent, reviewed its diff and applied it."}],
                ],
            },
            {
                "match": "CHILD-WORKER-8R",
                "turns": [
                    [{"exec": "sed -i 's/a - b/a + b/' src/calc.py && python3 -m pytest -q"}],
                    [{"message": "Summary: fixed the sign in add; the test passes."}],
                ],
            },
        ]
    }


def codex_config(model_url: str, settings: HydraSettings) -> str:
    server_env = {
        "HYDRA_DATA_HOME": str(settings.data_home),
        "HYDRA_MODEL_BASE_URL": model_url,
        "HYDRA_MODEL": "test-model",
        "HYDRA_EMBEDDING_MODEL_DIR": str(MODEL_DIR),
    }
    # The documented set-up (README, "Connecting Codex"), with the test's scripted model as provider.
    return "\n".join(
        [
            'model = "test-model"',
            'model_provider = "scripted"',
            "[model_providers.scripted]",
            'name = "scripted"',
            f"base_url = {toml_value(model_url)}",
            'wire_api = "responses"',
            "[mcp_servers.hydra]",
            f"command = {toml_value(sys.executable)}",
            'args = ["-m", "hydra_sandbox", "serve"]',
            f"env = {toml_value(server_env)}",
            "required = true",
            # codex exec never asks: without this, calls of tools not annotated read-only are refused
            'default_tools_approval_mode = "approve"',
            "startup_timeout_sec = 120",
            "tool_timeout_sec = 300",
            "",
        ]
    )


async def test_codex_as_host_delegates_through_hydra_and_applies_the_childs_diff(
    agent_image: str, repo: Path, settings: HydraSettings, tmp_path: Path
) -> None:
    codex = stage_codex(settings.codex_version, settings.cache_dir)
    codex_home = tmp_path / "host-codex-home"
    codex_home.mkdir()
    try:
        async with ScriptedModel(Script.model_validate(script(repo))) as model:
            (codex_home / "config.toml").write_text(codex_config(model.base_url, settings))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "OPENAI_"))}
            process = await asyncio.create_subprocess_exec(
                str(codex),
                "exec",
                "--json",
                "--skip-git-repo-check",
                "-C",
                str(tmp_path),
                "--",
                "HOST-MANAGER-5T: delegate the fix of add() in the repo to a Hydra agent and apply it",
                env=env | {"CODEX_HOME": str(codex_home)},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 600)
            host_requests = [r for r in model.requests if "HOST-MANAGER-5T" in json.dumps(r)]
    finally:
        await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))
    transcript = out.decode()
    assert process.returncode == 0, transcript[-3000:] + err.decode()[-3000:]
    items = [json.loads(line)["item"] for line in transcript.splitlines() if '"item.completed"' in line]
    calls = [i for i in items if i.get("type") == "mcp_tool_call"]
    assert [c["tool"] for c in calls] == ["spawn_agent", "wait_session", "get_diff", "apply_diff"], transcript[-6000:]
    assert all(c["status"] == "completed" and c["server"] == "hydra" for c in calls), json.dumps(calls)[:3000]
    waited = json.dumps(calls[1]["result"])
    assert "awaiting_approval" in waited, waited[:2000]
    assert "src/calc.py" in json.dumps(calls[2]["result"])
    assert (repo / "src" / "calc.py").read_text().endswith("a + b\n"), "the child's diff was not applied"
    offered = json.dumps(host_requests[0]["tools"])
    assert "mcp__hydra" in offered and "spawn_agent" in offered, "Hydra's tools were not offered to the host model"
