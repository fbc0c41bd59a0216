"""The Docker backend: agents in containers of a Docker engine, this machine's or a remote one.

Docker's part of a run is the runtime (docker-py), the workspace as an overlay volume over the local
layer (or, with ``HYDRA_WORKSPACE_TRANSPORT=archive`` and always on a remote engine, copied in and out
as archives), and egress relays served on this host behind a bind-mounted Unix socket (on a remote
engine: in a gateway container beside the agent). Everything else is the
backend-neutral :class:`~hydra_sandbox.sandbox.orchestrator.SandboxOrchestrator`.
"""

from __future__ import annotations

import dataclasses
from typing import cast

from hydra_sandbox.agent_endpoint import AgentEndpoint
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox.archive_transport import ArchiveRuntime, ArchiveVolumeTransport
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.backends.docker.engines import (
    RemoteDockerRuntime,
    configured_engines,
    engine_runtime,
    runs_engine,
)
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.backends.docker.sidecar_egress import SidecarEgress
from hydra_sandbox.sandbox.backends.docker.workspace import OverlayVolumeTransport, VolumeDriverRuntime
from hydra_sandbox.sandbox.egress import runtime_dir
from hydra_sandbox.sandbox.engine_set import EngineSet
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.sandbox.workspace import WorkspaceTransport
from hydra_sandbox.settings import HydraSettings

NAME = "docker"


def docker_backend(settings: HydraSettings, runtime: VolumeDriverRuntime | None = None) -> Backend:
    """Docker's parts for ``settings`` on ``runtime`` (default: the engine of ``HYDRA_DOCKER_HOST``, see
    :func:`.engines.runs_engine`, else the local one of ``DOCKER_HOST`` and friends).

    On an engine that shares this machine's files, egress relays are served here behind bind-mounted
    sockets (relay sockets in the ``runtime_dir`` setting) and the workspace is the overlay volume
    unless ``HYDRA_WORKSPACE_TRANSPORT=archive``. On a :class:`.engines.RemoteDockerRuntime` the workspace
    goes as archives (an explicit ``overlay`` is refused) and egress runs in a gateway container beside
    each agent (:class:`.sidecar_egress.SidecarEgress`)."""
    if runtime is None:
        engine = runs_engine(settings)
        runtime = engine_runtime(engine) if engine is not None else DockerRuntime()
    if isinstance(runtime, RemoteDockerRuntime):
        return _remote_backend(settings, runtime)
    egress = HostSocketEgress(lambda: runtime_dir(settings.runtime_dir))
    workspace: WorkspaceTransport = OverlayVolumeTransport(runtime)
    if settings.workspace_transport == "archive":
        workspace = ArchiveVolumeTransport(cast(ArchiveRuntime, runtime), settings.agent_image)
    return Backend(name=NAME, runtime=runtime, workspace=workspace, egress=egress)


def _remote_backend(settings: HydraSettings, runtime: RemoteDockerRuntime) -> Backend:
    if "workspace_transport" in settings.model_fields_set and settings.workspace_transport != "archive":
        raise ConfigError(
            f"HYDRA_WORKSPACE_TRANSPORT={settings.workspace_transport}: the engine {runtime.url} may be on another "
            "machine, where an overlay of this machine's folders cannot be mounted",
            hint="unset HYDRA_WORKSPACE_TRANSPORT (remote engines use 'archive') or set it to 'archive'",
        )
    egress = SidecarEgress(
        runtime, settings.gateway_image, home=home_label(settings.data_home), network=settings.gateway_network
    )
    workspace = ArchiveVolumeTransport(runtime, settings.agent_image)
    return Backend(name=NAME, runtime=runtime, workspace=workspace, egress=egress)


def docker_sandbox(
    settings: HydraSettings,
    masker: SecretMasker,
    agent_endpoint: AgentEndpoint | None = None,
    *,
    runtime: VolumeDriverRuntime | None = None,
) -> SandboxOrchestrator | EngineSet:
    """The sandbox that runs agents on Docker: on ``runtime``, else on the engine of ``HYDRA_DOCKER_HOST``
    (placed across them when it lists several, see :mod:`.several`), else on the local one."""
    if runtime is not None:
        return SandboxOrchestrator(settings, masker, docker_backend(settings, runtime), agent_endpoint)
    engines = configured_engines(settings)
    if len(engines) > 1:
        from hydra_sandbox.sandbox.backends.docker.several import engine_set

        return engine_set(settings, masker, agent_endpoint, [(e, engine_runtime(e)) for e in engines])
    backend = docker_backend(settings)
    if engines:
        from hydra_sandbox.sandbox.backends.docker.several import engine_host

        backend = dataclasses.replace(backend, host=engine_host(engines[0]))
    return SandboxOrchestrator(settings, masker, backend, agent_endpoint)


__all__ = ["DockerRuntime", "docker_backend", "docker_sandbox"]
