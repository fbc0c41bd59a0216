"""docker_backend(settings, runtime) gives a remote engine's runtime the archive workspace and a gateway
container beside each agent (an explicit overlay is refused), and this machine's engine what it had."""

from __future__ import annotations

import pytest

from hydra_sandbox.docker_hosts import parse_docker_hosts
from hydra_sandbox.errors import ConfigError, UnsafeSpecError
from hydra_sandbox.sandbox.archive_transport import ArchiveVolumeTransport
from hydra_sandbox.sandbox.backends.docker import docker_backend
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.backends.docker.engines import RemoteDockerRuntime, runs_engine
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.backends.docker.sidecar_egress import SidecarEgress
from hydra_sandbox.sandbox.backends.docker.workspace import OverlayVolumeTransport
from hydra_sandbox.sandbox.spec import ContainerSpec, Mount
from hydra_sandbox.settings import load_settings

REMOTE = "tcp://127.0.0.1:2376"


def remote_runtime() -> RemoteDockerRuntime:
    return RemoteDockerRuntime(parse_docker_hosts(REMOTE)[0])  # connects on first use only


def test_a_remote_engine_gets_the_archive_transport_and_a_gateway_beside_the_agent() -> None:
    backend = docker_backend(load_settings(), remote_runtime())
    assert isinstance(backend.egress, SidecarEgress) and not backend.egress.reaches_hydra
    assert isinstance(backend.workspace, ArchiveVolumeTransport)


def test_an_explicit_overlay_on_a_remote_engine_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="HYDRA_WORKSPACE_TRANSPORT=overlay") as raised:
        docker_backend(load_settings(workspace_transport="overlay"), remote_runtime())
    assert "archive" in (raised.value.hint or "")
    explicit_archive = docker_backend(load_settings(workspace_transport="archive"), remote_runtime())
    assert isinstance(explicit_archive.egress, SidecarEgress)


def test_this_machines_engine_keeps_host_sockets_and_the_chosen_transport() -> None:
    local = docker_backend(load_settings(), DockerRuntime())
    assert isinstance(local.egress, HostSocketEgress) and isinstance(local.workspace, OverlayVolumeTransport)
    archive = docker_backend(load_settings(workspace_transport="archive"), DockerRuntime())
    assert isinstance(archive.egress, HostSocketEgress) and isinstance(archive.workspace, ArchiveVolumeTransport)


def test_a_remote_engine_runs_agents_alone_or_first_of_several() -> None:
    engine = runs_engine(load_settings(docker_host="ssh://builder@build1"))
    assert engine is not None and engine.remote
    first = runs_engine(load_settings(docker_host="ssh://build1,ssh://build2"))
    assert first is not None and first.url == "ssh://build1"


def test_the_gateway_network_setting_refuses_the_engines_own_network() -> None:
    for network in ("host", "none"):
        with pytest.raises(ConfigError, match="HYDRA_GATEWAY_NETWORK"):
            load_settings(gateway_network=network)
    with pytest.raises(ConfigError, match="HYDRA_GATEWAY_NETWORK"):
        load_settings(gateway_network="container:hydra-x")


async def test_only_a_gateway_gets_a_network_and_never_the_engines_own_nor_another_containers() -> None:
    runtime = remote_runtime()  # never connected: every refusal comes before the engine is asked
    spec = ContainerSpec(image="hydra-gateway:x", argv=["true"], user="10002:10002")
    for network in ("host", "none", "container:hydra-gw-x", "ns:/proc/1/ns/net"):
        with pytest.raises(UnsafeSpecError, match=f"network '{network}' is the engine's own or another container's"):
            await runtime.create_networked(spec, network)
    bound = spec.model_copy(update={"mounts": [Mount(type="bind", source="/srv/x", target="/run/hydra")]})
    with pytest.raises(UnsafeSpecError, match="would be bound from the machine of"):
        await runtime.create_networked(bound, "bridge")
    weakened = spec.model_copy(update={"cap_add": ["NET_ADMIN"]})
    with pytest.raises(UnsafeSpecError, match="cap_add"):
        await runtime.create_networked(weakened, "bridge")
