"""Docker engines as the settings name them (:mod:`hydra_sandbox.docker_hosts`): a
:class:`~hydra_sandbox.sandbox.backends.docker.runtime.DockerRuntime` for each (clients are
:mod:`hydra_sandbox.docker_engines`), and the runtime that keeps this machine's paths off engines that may
be on another machine.
"""

from __future__ import annotations

from typing import Any

from hydra_sandbox.docker_hosts import EngineConfig, resolve_engines
from hydra_sandbox.errors import UnsafeSpecError
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import ContainerSpec
from hydra_sandbox.settings import HydraSettings

LOCAL = "local"
"""How an engine is named when ``HYDRA_DOCKER_HOST`` is unset (``DOCKER_HOST`` or the local socket)."""


def configured_engines(settings: HydraSettings) -> list[EngineConfig]:
    """The engines ``HYDRA_DOCKER_HOST`` lists, with their TLS files; empty when it is unset."""
    return resolve_engines(settings.docker_host, settings.docker_tls_dir, settings.docker_ssh_config)


class RemoteDockerRuntime(DockerRuntime):
    """A runtime on an engine that may be on another machine: a path there is not Hydra's, so binds and
    volumes over a path (``driver_opts``: a bind, an overlay of host folders) are refused before the
    engine is asked. A hostile spec must not reach the remote machine's files."""

    def __init__(self, engine: EngineConfig, **kwargs: Any) -> None:
        super().__init__(engine=engine, **kwargs)
        self.url = engine.url

    def _refuse_binds(self, spec: ContainerSpec) -> None:
        binds = [m.source for m in spec.mounts if m.type == "bind"]
        if binds:
            raise UnsafeSpecError(
                f"container spec mounts: {', '.join(binds)} would be bound from the machine of {self.url}",
                hint="an engine that may be remote gets named volumes only",
            )

    async def create(self, spec: ContainerSpec) -> str:
        self._refuse_binds(spec)
        return await super().create(spec)

    async def create_networked(self, spec: ContainerSpec, network: str) -> str:
        self._refuse_binds(spec)
        return await super().create_networked(spec, network)

    async def create_volume(self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None) -> str:
        if driver_opts:
            raise UnsafeSpecError(
                f"volume {name}: driver options {sorted(driver_opts)} would mount paths of the machine of {self.url}",
                hint="an engine that may be remote gets plain volumes only",
            )
        return await super().create_volume(name, labels)


def engine_runtime(engine: EngineConfig, *, max_threads: int = 16) -> DockerRuntime:
    """The container runtime of ``engine`` (connected on first use); for an engine that may be remote, one
    that refuses host paths."""
    if engine.remote:
        return RemoteDockerRuntime(engine, max_threads=max_threads)
    return DockerRuntime(engine=engine, max_threads=max_threads)


def default_runtime(settings: HydraSettings) -> DockerRuntime:
    """The runtime of the first configured engine, or of the local one when none is configured."""
    engines = configured_engines(settings)
    return engine_runtime(engines[0]) if engines else DockerRuntime()


def all_runtimes(settings: HydraSettings) -> dict[str, DockerRuntime]:
    """Every configured engine's runtime by URL (:data:`LOCAL` when none is configured)."""
    engines = configured_engines(settings)
    return {e.url: engine_runtime(e) for e in engines} if engines else {LOCAL: DockerRuntime()}


def runs_engine(settings: HydraSettings) -> EngineConfig | None:
    """The (first) engine runs use (``None``: the local one). Several listed engines are placed across
    (:mod:`.several`); a remote one (tcp:// or ssh://) gets the archive workspace transport and a gateway
    container beside its agents (:func:`hydra_sandbox.sandbox.backends.docker.docker_backend`)."""
    engines = configured_engines(settings)
    return engines[0] if engines else None
