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
    from typing import Any

    from hydra_sandbox.agent_endpoint import AgentEndpoint
    from hydra_sandbox.masking import SecretMasker
    from hydra_sandbox.policy import ResourceLimits
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


async def missing_apis(settings: HydraSettings, runtime: ContainerRuntime) -> list[str]:
    """The APIs the chosen backend's settings rely on and its cluster does not serve: with
    ``HYDRA_KUBERNETES_WARM_POOL``, the agent-sandbox CRDs (API discovery); nothing otherwise."""
    if settings.backend == "kubernetes" and settings.kubernetes_warm_pool is not None:
        from hydra_sandbox.sandbox.backends.kubernetes.crd_discovery import missing_crd_resources
        from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime

        assert isinstance(runtime, KubernetesRuntime), "open_runtime gives the chosen backend's runtime"
        return await missing_crd_resources(runtime)
    return []


def warm_pool_manifests(
    settings: HydraSettings, name: str, *, replicas: int, limits: ResourceLimits, uid: int, gid: int
) -> list[dict[str, Any]]:
    """The agent-sandbox SandboxTemplate and SandboxWarmPool of a Kubernetes warm pool named ``name`` in
    ``HYDRA_KUBERNETES_NAMESPACE``, with the agent image, RuntimeClass and seccomp profile of ``settings``."""
    from hydra_sandbox.sandbox.backends.kubernetes.manifests import PodOptions
    from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import WarmPoolOptions
    from hydra_sandbox.sandbox.backends.kubernetes.warm_pool import warm_pool_manifests as manifests
    from hydra_sandbox.sandbox.spec import home_label

    pool = WarmPoolOptions(
        name=name, image=settings.agent_image, replicas=replicas, uid=uid, gid=gid, limits=limits,
        home=home_label(settings.data_home),
    )  # fmt: skip
    options = PodOptions(
        namespace=settings.kubernetes_namespace,
        runtime_class=settings.kubernetes_runtime_class,
        seccomp_localhost=settings.kubernetes_seccomp_profile,
    )
    return manifests(pool, options)
