"""No credential in the sandbox (issue 13, item 1), with the real Codex CLI, the full server and the
scripted model: an agent that may delegate dumps every environment it can read (its own, every
``/proc/*/environ`` of its uid, the files under ``$CODEX_HOME`` and ``$HOME``) into its workspace; the raw
dump, read on the host past the masker, holds neither the model key nor the agent's Hydra token, while
the scripted model receives the key in each request's ``Authorization`` header, and the agent still
delegates to a child through its MCP client (the gateway adds the token on the host side)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastmcp import Client

from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.mcp.app import build_server
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.mcp_calls import call

pytestmark = pytest.mark.docker
MODEL_DIR = Path.home() / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"
KEY = "sk-proj-ENVCHECKabcdefghijklmnopqrstuvwxyz0123456789"
RESULT = "{{result_session_id}}"
DUMP = (
    "{ env; cat /proc/*/environ; find \"$CODEX_HOME\" \"$HOME\" /run/hydra -type f -exec cat {} +; } "
    "> /workspace/leak.dump 2>/dev/null; wc -c < /workspace/leak.dump"
)
CHILD = {"working_dir": "/workspace", "custom_prompt": "CHILD-LEAK-7Q: hi"}
SCRIPT = {
    "routes": [
        {
            "match": "PARENT-LEAK-7Q",
            "turns": [
                [{"exec": DUMP}],
                [{"mcp_call": {"name": "spawn_agent", "arguments": CHILD}}],
                [{"mcp_call": {"name": "wait_session", "arguments": {"session_id": RESULT, "timeout_s": 240}}}],
                [{"message": "dumped and delegated"}],
            ],
        },
        {"match": "CHILD-LEAK-7Q", "turns": [[{"message": "hi"}]]},
    ]
}


async def test_no_key_nor_token_is_readable_in_the_sandbox_while_the_model_gets_the_key(
    agent_image: str, repo: Path, settings: HydraSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued: list[str] = []
    issue = AgentTokens.issue

    def recording_issue(self: AgentTokens, session_id: str) -> str:
        token = issue(self, session_id)
        issued.append(token)
        return token

    monkeypatch.setattr(AgentTokens, "issue", recording_issue)
    try:
        async with ScriptedModel(Script.model_validate(SCRIPT)) as model:
            configured = load_settings(
                data_home=settings.data_home,
                model_base_url=model.base_url,
                model="test-model",
                model_api_key=KEY,
                embedding_model_dir=MODEL_DIR,
            )
            async with Client(build_server(configured)) as client:
                parent = await call(client, "spawn_agent", working_dir=str(repo), custom_prompt="PARENT-LEAK-7Q: go")
                waited = await call(client, "wait_session", session_id=parent["session_id"], timeout_s=400)
                children = (await call(client, "list_sessions", parent_session_id=parent["session_id"]))["sessions"]
                dumps = [p.read_bytes() for p in configured.sessions_dir.rglob("leak.dump")]
            authorizations = list(model.authorizations)
    finally:
        await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(settings.data_home))
    assert waited["session"]["status"] in {"completed", "awaiting_approval"}, json.dumps(waited)[:2000]
    assert len(children) == 1 and children[0]["status"] == "completed", children  # delegation works
    assert len(dumps) == 1, f"{len(dumps)} dumps"
    raw = dumps[0]
    # `env` and the environ of Codex and the agent's other processes were read
    assert raw.count(b"HYDRA_EGRESS_SOCKET=") >= 3 and b"CODEX_HOME=/codex-home" in raw, raw[:500]
    assert KEY.encode() not in raw and b"HYDRA_AGENT_TOKEN" not in raw
    assert issued and not [t for t in issued if t.encode() in raw], "an agent token is readable in the sandbox"
    assert len(authorizations) >= 4 and set(authorizations) == {f"Bearer {KEY}"}, authorizations
