"""The Docker backend: agents in containers of a Docker engine that shares this machine's filesystem.

Docker's part of a run is the runtime (docker-py), the workspace as an overlay volume over the local
layer (or, with ``HYDRA_WORKSPACE_TRANSPORT=archive``, copied in and out as archives), and egress
relays served on this host behind a bind-mounted Unix socket. Everything else is the
backend-neutral :class:`~hydra_sandbox.sandbox.orchestrator.SandboxOrchestrator`.
"""

from __future__ import annotations

import dataclasses
from typing import cast

from hydra_sandbox.agent_endpoint import AgentEndpoint
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox.archive_transport import ArchiveRuntime, ArchiveVolumeTransport
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.backends.docker.engines import configured_engines, engine_runtime, runs_engine
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.backends.docker.workspace import OverlayVolumeTransport, VolumeDriverRuntime
from hydra_sandbox.sandbox.egress import runtime_dir
from hydra_sandbox.sandbox.engine_set import EngineSet
from hydra_sandbox.sandbox.orchestrator import Backend, SandboxOrchestrator
from hydra_sandbox.sandbox.workspace import WorkspaceTransport
from hydra_sandbox.settings import HydraSettings

NAME = "docker"


def docker_backend(settings: HydraSettings, runtime: VolumeDriverRuntime | None = None) -> Backend:
    """Docker's parts for ``settings``; ``runtime`` defaults to the engine of ``HYDRA_DOCKER_HOST`` (a
    remote one is refused: see :func:`.engines.runs_engine`), else the local one (``DOCKER_HOST`` and
    friends). Relay sockets go to the ``runtime_dir`` setting."""
    if runtime is None:
        engine = runs_engine(settings)
        runtime = engine_runtime(engine) if engine is not None else DockerRuntime()
    egress = HostSocketEgress(lambda: runtime_dir(settings.runtime_dir))
    workspace: WorkspaceTransport = OverlayVolumeTransport(runtime)
    if settings.workspace_transport == "archive":
        workspace = ArchiveVolumeTransport(cast(ArchiveRuntime, runtime), settings.agent_image)
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
    runs_engine(settings)  # refuses engines that cannot run agents, naming them
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
