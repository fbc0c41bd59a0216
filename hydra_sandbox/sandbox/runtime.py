"""The container runtime seam: what the orchestrator needs from a container engine.

:class:`~hydra_sandbox.sandbox.backends.docker.runtime.DockerRuntime` implements it with docker-py
(blocking calls off the event loop); :class:`~hydra_sandbox.sandbox.fake.FakeRuntime` in memory, for
tests. A backend refuses a spec that fails :func:`~hydra_sandbox.sandbox.spec.check_hardening`, and
labels everything it creates (:data:`~hydra_sandbox.sandbox.spec.LABEL_SESSION` and friends) so a
restarted server can find it again and ``hydra gc`` can remove it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from hydra_sandbox.sandbox.spec import ContainerInfo, ContainerSpec, ImageInfo, LogStream, NetworkInfo, VolumeInfo


@runtime_checkable
class ContainerRuntime(Protocol):
    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container for ``spec``; its id. Refuses a spec that is not hardened."""
        ...

    async def start(self, container_id: str) -> None: ...

    def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
        """stdout/stderr chunks from the container's start, following until it exits."""
        ...

    async def wait(self, container_id: str, timeout_s: float | None = None) -> int | None:
        """Exit code, or ``None`` when ``timeout_s`` passed first."""
        ...

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        ...

    async def kill(self, container_id: str) -> None: ...
    async def inspect(self, container_id: str) -> ContainerInfo: ...
    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """Containers carrying every label of ``labels``; an empty selection means all of Hydra's."""
        ...

    async def remove(self, container_id: str) -> None:
        """Remove the container (force); a container already gone is not an error."""
        ...

    async def create_volume(self, name: str, labels: dict[str, str]) -> str: ...
    async def remove_volume(self, name: str) -> None:
        """A volume already gone is not an error."""
        ...

    async def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]: ...
    async def create_network(self, name: str, labels: dict[str, str], internal: bool = True) -> str: ...
    async def remove_network(self, name: str) -> None: ...
    async def list_networks(self, labels: dict[str, str]) -> list[NetworkInfo]: ...
    async def image_exists(self, tag: str) -> bool: ...
    async def image_info(self, tag: str) -> ImageInfo | None:
        """The image ``tag`` names (its id and labels), or ``None`` when there is none."""
        ...
