"""Sandbox backends. Which one runs agents is a setting (``HYDRA_BACKEND``); :func:`open_backend` is
the only way the rest of Hydra gets a :class:`~hydra_sandbox.sandbox.protocol.Sandbox`, so nothing
outside this package imports a backend.

A backend contributes a :class:`~hydra_sandbox.sandbox.orchestrator.Backend` (runtime, workspace
transport, egress placement) to the one orchestrator; see the "Sandbox seam" section of
docs/architecture.md for what a new backend implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra_sandbox.errors import ConfigError

if TYPE_CHECKING:
    from hydra_sandbox.agent_endpoint import AgentEndpoint
    from hydra_sandbox.masking import SecretMasker
    from hydra_sandbox.sandbox.protocol import Sandbox
    from hydra_sandbox.sandbox.runtime import ContainerRuntime
    from hydra_sandbox.settings import HydraSettings

BACKENDS = ("docker", "kubernetes")


def _unknown(name: str) -> ConfigError:
    return ConfigError(f"HYDRA_BACKEND: {name!r} is not a sandbox backend", hint=f"use one of {', '.join(BACKENDS)}")


def open_backend(settings: HydraSettings, masker: SecretMasker, agent_endpoint: AgentEndpoint | None = None) -> Sandbox:
    """The sandbox of the backend ``settings.backend`` names (imported only when chosen)."""
    if settings.backend == "docker":
        from hydra_sandbox.sandbox.backends.docker import docker_sandbox

        return docker_sandbox(settings, masker, agent_endpoint)
    if settings.backend == "kubernetes":
        from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_sandbox

        return kubernetes_sandbox(settings, masker, agent_endpoint)
    raise _unknown(settings.backend)


def open_runtime(settings: HydraSettings) -> ContainerRuntime:
    """The chosen backend's container runtime alone, for maintenance outside a run (``hydra gc``); for
    Docker, the first engine of ``HYDRA_DOCKER_HOST`` when it is set."""
    if settings.backend == "docker":
        from hydra_sandbox.sandbox.backends.docker.engines import default_runtime

        return default_runtime(settings)
    if settings.backend == "kubernetes":
        from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_runtime

        return kubernetes_runtime(settings)
    raise _unknown(settings.backend)


def open_runtimes(settings: HydraSettings) -> dict[str, ContainerRuntime]:
    """Every engine's runtime by name, for maintenance that must visit each (``hydra gc`` with several
    Docker engines in ``HYDRA_DOCKER_HOST``; the one namespace of the Kubernetes backend)."""
    if settings.backend == "docker":
        from hydra_sandbox.sandbox.backends.docker.engines import all_runtimes

        return dict(all_runtimes(settings))
    if settings.backend == "kubernetes":
        from hydra_sandbox.sandbox.backends.kubernetes import kubernetes_runtime

        return {f"namespace {settings.kubernetes_namespace}": kubernetes_runtime(settings)}
    raise _unknown(settings.backend)


async def missing_rights(settings: HydraSettings, runtime: ContainerRuntime) -> list[str]:
    """What the chosen backend's account needs on ``runtime`` (from :func:`open_runtime`) and is refused:
    Kubernetes asks its cluster, one review per right of the chart's Role; nothing for Docker, whose
    socket gives all or nothing."""
    if settings.backend == "kubernetes":
        from hydra_sandbox.sandbox.backends.kubernetes.permissions import missing_permissions
        from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime

        assert isinstance(runtime, KubernetesRuntime), "open_runtime gives the chosen backend's runtime"
        return [str(p) for p in await missing_permissions(runtime)]
    return []
