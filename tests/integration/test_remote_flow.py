"""The whole flow on a second, real Docker engine reached over mutual TLS (tests/remote_engine.py), whose
containers cannot see this machine's files: the real agent image and Codex with a scripted model, the
workspace as archives, egress ``model-only`` enforced by a gateway container beside the agent.

The scripted model listens on the second engine's bridge address (a listener this test starts), which its
gateway container reaches; a listener of the test's own on the same address must get nothing, neither
from the agent directly (it has no network) nor through its gateway's proxy. The server is replaced
while the agent runs and the new one follows it; preview and apply then work as on one machine, and
``hydra gc`` removes what a server that died mid-run left there (the engine confirming, on the way, that
the gateway is hardened like the agent and that the model key is in neither container's inspectable state)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest
from pydantic import SecretStr

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.lifecycle import SessionStatus
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime
from hydra_sandbox.sandbox.budget import USAGE_EVENT
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.managers import manager_for
from tests.remote_engine import RemoteEngine

pytestmark = pytest.mark.docker
RUN_DEADLINE_S = 240.0
KEY = "sk-remote-flow-test-key-0123456789abcdef"


def bridge_address(engine: RemoteEngine) -> str:
    """This machine's address on the second engine's bridge: what its containers reach this host by."""
    ipam = docker.DockerClient(base_url=engine.socket_url).networks.get("bridge").attrs["IPAM"]["Config"][0]
    return str(ipam.get("Gateway") or ipam["Subnet"].rsplit(".", 1)[0] + ".1")


@contextlib.asynccontextmanager
async def forbidden_listener(host: str) -> AsyncIterator[tuple[int, list[str]]]:
    """A listener of the test's own that nothing in the sandbox may reach: its port and who connected."""
    reached: list[str] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(accepted, host, 0)
    try:
        yield server.sockets[0].getsockname()[1], reached
    finally:
        server.close()
        await server.wait_closed()


def remote_settings(base: HydraSettings, engine: RemoteEngine, model: ScriptedModel) -> HydraSettings:
    return load_settings(
        data_home=base.data_home, model_base_url=model.base_url, model="test-model",
        docker_host=engine.engine.url, docker_tls_dir=engine.tls_dir,
    )  # fmt: skip


async def until_said(manager: AgentManager, session_id: str, text: str) -> None:
    deadline = asyncio.get_running_loop().time() + RUN_DEADLINE_S
    while not any(text in e.text for e in await manager.events(session_id)):
        assert asyncio.get_running_loop().time() < deadline, f"the agent never said {text!r}"
        await asyncio.sleep(0.2)


def probes(host: str, port: int) -> str:
    """What the agent tries: the listener directly, and through its gateway's proxy (CONNECT and plain).
    Each outcome prints a marker computed by the shell (``$((6*7))``), so the command's own text never
    holds it."""
    url = f"http://{host}:{port}/"
    return (
        f"(curl -sS -m 3 {url} && echo direct-reached-$((6*7))) || echo direct-blocked-$((6*7)); "
        f"(curl -sS -m 5 -p -x http://127.0.0.1:18080 {url} && echo connect-reached-$((6*7))) "
        "|| echo connect-blocked-$((6*7)); "
        f"curl -sS -m 5 -x http://127.0.0.1:18080 {url}absolute; echo; "
        "ls -ln /run/hydra; ls /etc/hydra-gateway 2>&1; echo secret-variables-$(env | grep -ci -e key -e token); "
        "touch /run/hydra/planted 2>&1 || echo sockets-read-only-$((6*7))"
    )


async def test_a_remote_agent_reaches_only_its_model_through_a_gateway_beside_it_and_survives_a_restart(
    agent_image: str, remote_agent_image: str, remote_gateway_image: str, remote_engine: RemoteEngine,
    repo: Path, settings: HydraSettings,
) -> None:  # fmt: skip
    host = bridge_address(remote_engine)
    async with forbidden_listener(host) as (port, reached):
        script = {
            "turns": [
                [{"exec": probes(host, port)}],
                [{"exec": "echo before; sleep 5; echo after"}],
                [{"exec": "sed -i 's/a - b/a + b/' src/calc.py && echo notes > NOTES.md && echo edited"}],
                [{"message": "Fixed add()."}],
            ]
        }
        async with ScriptedModel(Script.model_validate(script), host=host) as model:
            s = remote_settings(settings, remote_engine, model)
            first = manager_for(s, max_concurrent=2)
            await first.start()
            request = SpawnRequest(working_dir=str(repo), custom_prompt="fix add")
            spawned = await first.spawn(request, principal=OPERATOR)
            session_id = spawned.session["session_id"]
            second: AgentManager | None = None
            try:
                await until_said(first, session_id, "before")
                await first.close()  # the server dies; the agent and its gateway keep running on the engine
                first.journal.close()
                second = manager_for(s, max_concurrent=2)
                await second.start()
                record = await second.wait(session_id, RUN_DEADLINE_S, principal=OPERATOR)
                assert record.status == SessionStatus.AWAITING_APPROVAL, record.reason
                events = await second.events(session_id)
                texts = "\n".join(e.text for e in events)
                assert "re-attached" in texts and "after" in texts and "edited" in texts
                assert "direct-blocked-42" in texts and "connect-blocked-42" in texts, texts[-4000:]
                assert "direct-reached-42" not in texts and "connect-reached-42" not in texts
                assert "sockets-read-only-42" in texts and "secret-variables-0" in texts, texts[-4000:]
                assert " egress.sock" in texts
                assert "config.json" not in texts, "the gateway's configuration is visible to the agent"
                usage = [e.data["seq"] for e in events if e.data.get("gateway") == USAGE_EVENT]
                assert usage == list(range(len(usage))) and len(usage) >= 3, f"usage recorded as {usage}"
                diff = await second.diff(session_id, principal=OPERATOR)
                assert {f.path: f.status for f in diff.files} == {"src/calc.py": "modified", "NOTES.md": "added"}
                assert (repo / "src" / "calc.py").read_text().endswith("a - b\n"), "the host changed before apply"
                await second.apply(session_id, True, OPERATOR, digest=diff.digest)
                assert (repo / "src" / "calc.py").read_text().endswith("a + b\n")
                assert (repo / "NOTES.md").read_text() == "notes\n"
                model.raise_errors()
            finally:
                if second is not None:
                    await second.close()
                await collect_garbage(engine_runtime(remote_engine.engine), set(), home=home_label(s.data_home))
        assert reached == [], f"the test's own listener was reached from the sandbox: {reached}"


def assert_hardened_on_the_engine(gateway: dict[str, Any], agent: dict[str, Any]) -> None:
    """What the engine itself says about the two containers: the gateway hardened like the agent, only it
    on a network, the agent's socket volume read-only, the model key in neither's inspectable state."""
    for attrs in (gateway, agent):
        host = attrs["HostConfig"]
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and not host["Privileged"]
        assert "no-new-privileges:true" in host["SecurityOpt"] and host["PidsLimit"] > 0 and host["Memory"] > 0
        assert not [m for m in attrs["Mounts"] if m["Type"] == "bind"]
        assert KEY not in json.dumps(attrs), "the model key is in what docker inspect shows"
    assert gateway["Config"]["User"] == "10002:10002" and gateway["HostConfig"]["NetworkMode"] == "bridge"
    assert agent["HostConfig"]["NetworkMode"] == "none"
    (sockets,) = [m for m in agent["Mounts"] if m["Destination"] == "/run/hydra"]
    assert sockets["Name"].startswith("hydra-egress-") and sockets["RW"] is False


async def test_gc_removes_what_a_server_that_died_mid_run_left_on_the_remote_engine(
    agent_image: str, remote_agent_image: str, remote_gateway_image: str, remote_engine: RemoteEngine,
    repo: Path, settings: HydraSettings,
) -> None:  # fmt: skip
    host = bridge_address(remote_engine)
    script = {"turns": [[{"exec": "echo started; sleep 60"}], [{"message": "done"}]]}
    async with ScriptedModel(Script.model_validate(script), host=host) as model:
        s = remote_settings(settings, remote_engine, model).model_copy(update={"model_api_key": SecretStr(KEY)})
        manager = manager_for(s, max_concurrent=2)
        await manager.start()
        spawned = await manager.spawn(SpawnRequest(working_dir=str(repo), custom_prompt="wait"), principal=OPERATOR)
        session_id = spawned.session["session_id"]
        runtime = engine_runtime(remote_engine.engine)
        try:
            await until_said(manager, session_id, "started")
            await manager.close()
            manager.journal.close()
            client = engine_client(remote_engine.engine)
            labelled = {"label": [f"hydra.session={session_id}"]}
            containers = {c.labels["hydra.role"]: c for c in client.containers.list(all=True, filters=labelled)}
            volumes = {v.name for v in client.volumes.list(filters=labelled)}
            assert set(containers) == {"agent", "gateway"}
            assert_hardened_on_the_engine(containers["gateway"].attrs, containers["agent"].attrs)
            assert {f"hydra-egress-{session_id}", f"hydra-gwconf-{session_id}"} <= volumes
            report = await collect_garbage(runtime, set(), home=home_label(s.data_home))
            assert len(report.containers) == 2 and set(report.volumes) >= volumes
            assert not client.containers.list(all=True, filters=labelled)
            assert not client.volumes.list(filters=labelled)
        finally:
            await collect_garbage(runtime, set(), home=home_label(s.data_home))
