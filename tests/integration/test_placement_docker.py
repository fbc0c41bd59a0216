"""Agents placed across two real Docker engines (second dockerd processes of tests/remote_engine.py,
through their Unix sockets: engines on this machine, so the overlay workspace and the egress socket work
there; not the main engine, whose load from other Hydras on a shared machine the test cannot know),
with the real agent image and Codex on a scripted model: one agent on each engine (one place per
engine), each session's ``host`` recorded and listed, a restarted server re-attaching to both where they
run, review on both, and ``hydra gc`` visiting both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.cli import app
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.image_copy import copy_image
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.docker_fixtures import hydra_objects
from tests.managers import manager_for
from tests.remote_engine import RemoteEngine, second_engine

pytestmark = pytest.mark.docker


def agent(marker: str, name: str) -> dict[str, object]:
    """An agent that works long enough for both to run at once and for a restart in between."""
    return {
        "match": marker,
        "turns": [
            [{"exec": f"echo before; sleep 8; echo {name} > {name}.txt; echo after", "yield_ms": 20000}],
            [{"message": f"wrote {name}.txt"}],
        ],
    }


async def until_running(manager: AgentManager, session_ids: list[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    for session_id in session_ids:
        while not any("turn started" in e.text for e in await manager.events(session_id)):
            record = manager.get(session_id, principal=OPERATOR)
            assert record.active, f"{session_id} ended before it ran: {record.status} {record.reason}"
            assert loop.time() < deadline, f"{session_id} never started"
            await asyncio.sleep(0.1)


async def test_agents_are_placed_on_two_engines_listed_by_host_and_followed_there_after_a_restart(
    remote_engine: RemoteEngine,
    remote_agent_image: str,
    repo: Path,
    settings: HydraSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with second_engine() as third:  # a private one too: the main engine may run other Hydras' agents
        copy_image(docker.from_env(), docker.DockerClient(base_url=third.socket_url), [remote_agent_image])
        engines = [remote_engine.socket_url, third.socket_url]
        monkeypatch.setenv("HYDRA_DOCKER_HOST", ",".join(engines))
        try:
            await place_restart_review(engines, repo, settings)
        finally:
            swept = await asyncio.to_thread(CliRunner().invoke, app, ["gc"])  # outside the event loop
            for engine in engines:  # whatever the CLI left, so a failure leaves nothing either
                await collect_garbage(DockerRuntime(base_url=engine), set(), home=home_label(settings.data_home))
        assert swept.exit_code == 0, swept.output
        for engine in engines:
            assert f"on {engine}" in swept.output.replace("\n", ""), swept.output
        assert hydra_objects(docker.DockerClient(base_url=third.socket_url)) == []


async def place_restart_review(engines: list[str], repo: Path, settings: HydraSettings) -> None:
    script = Script.model_validate({"routes": [agent("PLACE-A1", "one"), agent("PLACE-B2", "two")]})
    async with ScriptedModel(script) as model:
        s = load_settings(
            data_home=settings.data_home,
            model_base_url=model.base_url,
            model="test-model",
            docker_host=",".join(engines),
            engine_max_agents=1,
            max_concurrent_agents=2,
        )
        first = manager_for(s)
        await first.start()
        try:
            ids = [
                (
                    await first.spawn(
                        SpawnRequest(working_dir=str(repo), custom_prompt=f"{marker}: write a file"),
                        principal=OPERATOR,
                    )
                ).session["session_id"]
                for marker in ("PLACE-A1", "PLACE-B2")
            ]
            await until_running(first, ids)
            listed = {r.session_id: r.public()["host"] for r in first.list_sessions(OPERATOR, limit=10)}
            assert sorted(listed.values()) == sorted(engines), listed  # one on each engine: one place each
            status = await first.sandbox.status()
            assert status["docker"] == "ok" and set(status["engines"]) == set(engines)  # type: ignore[arg-type]
        finally:
            await first.close()  # the server dies; both agents keep running where they are
            first.journal.close()

        second = manager_for(s)
        await second.start()
        try:
            for session_id in ids:
                record = await second.wait(session_id, 180, principal=OPERATOR)
                assert record.status == SessionStatus.AWAITING_APPROVAL, record.reason
                assert record.host == listed[session_id], "the host changed across the restart"
                texts = "\n".join(e.text for e in await second.events(session_id))
                assert "re-attached" in texts and "after" in texts
            model.raise_errors()
            one, two = ids
            diff = await second.diff(one, principal=OPERATOR)
            assert [f.path for f in diff.files] == ["one.txt"]
            await second.apply(one, True, OPERATOR, digest=diff.digest)
            assert (repo / "one.txt").read_text() == "one\n"
            assert [f.path for f in (await second.diff(two, principal=OPERATOR)).files] == ["two.txt"]
            await second.discard(two, principal=OPERATOR)
        finally:
            await second.close()
            second.journal.close()
