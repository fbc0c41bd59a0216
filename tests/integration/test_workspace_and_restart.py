"""Workspace ownership (overlay for user-owned trees, copy for root-owned ones) and re-attaching to a
running agent after the server died."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.managers import manager_for

pytestmark = pytest.mark.docker

EDIT = [[{"exec": "id -u; sed -i 's/a - b/a + b/' src/calc.py && echo edited"}], [{"message": "done"}]]


async def run_edit(settings: HydraSettings, repo: Path) -> tuple[AgentManager, str]:
    manager = manager_for(settings, max_concurrent=2)
    await manager.start()
    session_id = (
        await manager.spawn(SpawnRequest(working_dir=str(repo), custom_prompt="edit"), principal=OPERATOR)
    ).session["session_id"]
    record = await manager.wait(session_id, 180, principal=OPERATOR)
    assert record.status == SessionStatus.AWAITING_APPROVAL, record.reason
    return manager, session_id


@pytest.mark.parametrize("owner", ["user", "root"])
async def test_non_root_agent_can_edit_existing_files(
    agent_image: str, repo: Path, settings: HydraSettings, owner: str
) -> None:
    if owner == "root":
        subprocess.run(["chown", "-R", "0:0", str(repo)], check=True)
    async with ScriptedModel(Script.model_validate({"turns": EDIT})) as model:
        s = load_settings(data_home=settings.data_home, model_base_url=model.base_url, model="test-model")
        manager, session_id = await run_edit(s, repo)
        try:
            ws = manager.sandbox.workspace(session_id)  # type: ignore[attr-defined]
            assert ws.mode == ("overlay" if owner == "user" else "copy")
            events = "\n".join(e.text for e in await manager.events(session_id))
            assert "edited" in events and ("1234" if owner == "user" else "1000") in events
            diff = await manager.diff(session_id, principal=OPERATOR)
            assert [f.path for f in diff.files] == ["src/calc.py"]
            await manager.apply(session_id, True, OPERATOR, digest=diff.digest)
            assert (repo / "src" / "calc.py").read_text().endswith("a + b\n")
            assert os.stat(repo / "src" / "calc.py").st_uid == (1234 if owner == "user" else 0) or owner == "user"
        finally:
            await manager.close()
            await collect_garbage(DockerRuntime(), set(), home=home_label(s.data_home))


async def test_a_restarted_server_follows_the_running_agent_without_duplicates(
    agent_image: str, repo: Path, settings: HydraSettings
) -> None:
    script = {
        "turns": [[{"exec": "echo before; sleep 4; echo after"}], [{"exec": "echo second"}], [{"message": "finished"}]]
    }
    async with ScriptedModel(Script.model_validate(script)) as model:
        s = load_settings(data_home=settings.data_home, model_base_url=model.base_url, model="test-model")
        first = manager_for(s, max_concurrent=2)
        await first.start()
        session_id = (await first.spawn(SpawnRequest(working_dir=str(repo)), principal=OPERATOR)).session["session_id"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not any("turn started" in e.text for e in await first.events(session_id)):
            assert loop.time() < deadline, "the agent never started"
            await asyncio.sleep(0.1)
        await first.close()  # the server dies; the container keeps running
        first.journal.close()
        second = manager_for(s, max_concurrent=2)
        await second.start()
        try:
            record = await second.wait(session_id, 180, principal=OPERATOR)
            assert record.status in {SessionStatus.COMPLETED, SessionStatus.AWAITING_APPROVAL}, record.reason
            events = await second.events(session_id)
            assert [e.counter for e in events] == list(range(len(events)))
            keyed = [(e.data.get("run"), e.data["seq"]) for e in events if "seq" in e.data]
            assert len(keyed) == len(set(keyed)), "an event was recorded twice"
            texts = "\n".join(e.text for e in events)
            assert "re-attached" in texts and "after" in texts and "second" in texts
        finally:
            await second.close()
            await collect_garbage(DockerRuntime(), set(), home=home_label(s.data_home))
