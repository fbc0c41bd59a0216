"""The test kit's containerised Hydra, seen from a hostile agent: the server container holds the host's
Docker socket (docs/testing.md says why), so an agent it starts must get neither that socket nor any
network route, and must not run as root; and everything the kit started is gone afterwards."""

from __future__ import annotations

import docker
import pytest

from hydra_sandbox.settings import REPO_ROOT
from hydra_sandbox.testing import HydraContainer, spawn

pytestmark = pytest.mark.docker
CALC = REPO_ROOT / "examples" / "testing" / "tests" / "fixtures" / "calc"
PROBE = (
    "id -u; cat /proc/net/route; ls -l /var/run/docker.sock /run/docker.sock 2>&1; "
    "python3 -c \"import socket; socket.create_connection(('scripted-model', 8080), 3); print('CONNECTED')\" 2>&1 "
    "| tail -1"
)
SCRIPT = {
    "hydra_script": 1,
    "routes": [{"match": "PROBE-5S", "steps": [{"run": PROBE, "save": "probe"}, {"reply": "Summary: probed."}]}],
}


async def test_an_agent_of_the_containerised_hydra_gets_no_docker_socket_no_route_and_no_root(
    hydra_workspace, hydra_container
) -> None:
    repo = hydra_workspace(CALC)
    hydra: HydraContainer = hydra_container(SCRIPT, workspaces=[repo])
    server = hydra.get_wrapped_container()
    server.reload()
    mounts = {m["Destination"] for m in server.attrs["Mounts"]}
    assert "/var/run/docker.sock" in mounts, "the server itself reaches Docker through the socket"
    async with hydra.get_client() as client:
        session = await spawn(client, repo, "PROBE-5S: look around")
        outcome = await session.wait(timeout_s=300)
        assert outcome.status in {"completed", "awaiting_approval"}, outcome.reason
        commands = [e for e in await session.events() if e.type == "command" and "mcp" not in e.tags]
    output = commands[0].data["output"]
    lines = output.splitlines()
    assert lines[0] != "0", "the agent runs as root"
    routes = [line for line in lines if line.startswith(("Iface", "eth", "lo"))]
    assert routes == [routes[0]] and routes[0].startswith("Iface"), f"the agent has a route out: {output}"
    assert output.count("No such file or directory") == 2, f"a Docker socket is visible to the agent: {output}"
    assert "CONNECTED" not in output and "gaierror" in lines[-1], f"the agent reached the model's container: {output}"
    client_ = docker.from_env()
    agent = client_.containers.list(all=True, filters={"label": f"hydra.session={session.session_id}"})
    assert all("/var/run/docker.sock" not in {m["Destination"] for m in c.attrs["Mounts"]} for c in agent)


def test_stopping_the_kit_leaves_none_of_its_containers_networks_or_data_behind(hydra_workspace) -> None:
    from testcontainers.core.network import Network

    from hydra_sandbox.testing import ScriptedModelContainer, parse_script

    client = docker.from_env()
    repo = hydra_workspace(CALC)
    with Network() as network, ScriptedModelContainer(parse_script(SCRIPT), network=network) as model:
        hydra = HydraContainer(workspaces=[repo]).with_scripted_model(model)
        with hydra:
            data_home = hydra.data_home
            names = {model.get_wrapped_container().name, hydra.get_wrapped_container().name}
            assert data_home.is_dir()
        network_name = network.name
    left = {c.name for c in client.containers.list(all=True)} & names
    assert not left, f"left behind: {left}"
    assert not client.networks.list(names=[network_name])
    assert not data_home.exists()
