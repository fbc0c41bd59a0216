"""The :class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime` on docker-py. Every blocking call runs
in a worker thread (at most ``max_threads`` at once); docker-py's errors become
:class:`~hydra_sandbox.errors.RuntimeUnavailableError` with a hint.

The spec's translation is :mod:`.create_args`, following logs is :mod:`.logs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import docker
import docker.errors
import docker.tls

from hydra_sandbox.docker_engines import UNREACHABLE_HINT, EngineClient, connect
from hydra_sandbox.docker_hosts import EngineConfig
from hydra_sandbox.errors import RuntimeUnavailableError, UnsafeSpecError, WorkspaceError
from hydra_sandbox.sandbox.backends.docker.create_args import container_create_kwargs
from hydra_sandbox.sandbox.backends.docker.logs import follow_logs
from hydra_sandbox.sandbox.spec import ContainerInfo, ContainerSpec, ImageInfo, LogStream, NetworkInfo, VolumeInfo


def _label_filter(labels: dict[str, str]) -> dict[str, list[str]]:
    """Docker label filters; an empty selection means everything Hydra labelled."""
    return {"label": [f"{k}={v}" for k, v in labels.items()] or ["hydra.session"]}


def _parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 times have nanoseconds; Python takes microseconds."""
    if not value or value.startswith("0001-"):
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", value)
    if match is None:
        return None
    fraction = (match.group(2) or ".0")[:7]
    return datetime.fromisoformat(match.group(1) + fraction).replace(tzinfo=UTC)


def _info(container: Any) -> ContainerInfo:
    attrs = container.attrs
    state = attrs.get("State", {})
    return ContainerInfo(
        id=container.id,
        name=container.name,
        image=attrs.get("Config", {}).get("Image", ""),
        labels=container.labels or {},
        status=state.get("Status", container.status),
        exit_code=state.get("ExitCode") if state.get("Status") in {"exited", "dead"} else None,
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or None,
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
    )


class DockerRuntime:
    """``engine`` (one of ``HYDRA_DOCKER_HOST``), or ``base_url`` (with ``tls``), names the engine; unset,
    the one of ``DOCKER_HOST`` and friends. :mod:`.engines` builds these from ``HYDRA_DOCKER_HOST``."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        base_url: str | None = None,
        tls: docker.tls.TLSConfig | None = None,
        engine: EngineConfig | None = None,
        max_threads: int = 16,
    ) -> None:
        self._client = client
        self._engine_config = engine
        self._engine: dict[str, Any] | None = {"base_url": base_url, "tls": tls or False} if base_url else None
        self._client_lock = threading.Lock()
        self._limit = asyncio.Semaphore(max_threads)

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None and self._engine_config is not None:
                self._client = connect(self._engine_config)  # its errors name the engine and the cause
            if self._client is None:
                where = self._engine["base_url"] if self._engine else "the Docker daemon"
                try:
                    if self._engine:
                        self._client = EngineClient(timeout=120, **self._engine)
                    else:
                        self._client = docker.from_env(timeout=120)
                    self._client.ping()
                except Exception as exc:
                    self._client = None
                    raise RuntimeUnavailableError(f"cannot reach {where}: {exc}", hint=UNREACHABLE_HINT) from None
            return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._limit:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except docker.errors.ImageNotFound as exc:
                raise RuntimeUnavailableError(
                    f"image not found: {exc.explanation}", hint="run `hydra images build`"
                ) from None
            except docker.errors.NotFound as exc:
                raise RuntimeUnavailableError(f"not found: {exc.explanation}") from None
            except docker.errors.APIError as exc:
                raise RuntimeUnavailableError(f"Docker refused: {exc.explanation or exc}") from None
            except docker.errors.DockerException as exc:
                raise RuntimeUnavailableError(f"Docker failed: {exc}", hint="is dockerd running?") from None

    async def create(self, spec: ContainerSpec) -> str:
        kwargs = container_create_kwargs(spec)
        container = await self._call(self.client.containers.create, **kwargs)
        return str(container.id)

    async def create_networked(self, spec: ContainerSpec, network: str) -> str:
        """Create ``spec`` (hardened, checked as every spec) attached to the Docker network ``network``: for
        Hydra's egress gateway beside a remote agent, never for an agent. The engine's own network
        (``host``) and another container's namespace are refused."""
        kwargs = container_create_kwargs(spec)
        if network in {"host", "none"} or ":" in network:
            raise UnsafeSpecError(
                f"container {spec.name}: network {network!r} is the engine's own or another container's",
                hint="name a bridge network",
            )
        container = await self._call(self.client.containers.create, **kwargs | {"network_mode": network})
        return str(container.id)

    async def start(self, container_id: str) -> None:
        await self._call(self.client.api.start, container_id)  # one request: no inspect first

    def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
        """Demultiplexed output from the start, following until the container exits (see :mod:`.logs`)."""
        return follow_logs(self.client.api, container_id)

    async def wait(self, container_id: str, timeout_s: float | None = None) -> int | None:
        def _wait() -> int | None:
            try:
                result = self.client.containers.get(container_id).wait(timeout=timeout_s)
            except Exception as exc:  # requests' read timeout: still running
                if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                    return None
                raise
            return int(result.get("StatusCode", -1))

        return await self._call(_wait)  # type: ignore[no-any-return]

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        await self._call(lambda: self.client.containers.get(container_id).stop(timeout=int(grace_s)))

    async def kill(self, container_id: str) -> None:
        await self._call(lambda: self.client.containers.get(container_id).kill())

    async def inspect(self, container_id: str) -> ContainerInfo:
        return await self._call(lambda: _info(self.client.containers.get(container_id)))  # type: ignore[no-any-return]

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        containers = await self._call(self.client.containers.list, all=True, filters=_label_filter(labels))
        return [_info(c) for c in containers]

    async def remove(self, container_id: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(container_id, force=True, v=False)

        await self._call(_remove)

    async def create_volume(self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None) -> str:
        volume = await self._call(
            self.client.volumes.create, name=name, driver="local", driver_opts=driver_opts or {}, labels=labels
        )
        return str(volume.name)

    async def remove_volume(self, name: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_volume(name, force=True)

        await self._call(_remove)

    async def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        volumes = await self._call(self.client.volumes.list, filters=_label_filter(labels))
        return [VolumeInfo(name=v.name, labels=v.attrs.get("Labels") or {}) for v in volumes]

    async def create_network(self, name: str, labels: dict[str, str], internal: bool = True) -> str:
        network = await self._call(
            self.client.networks.create, name, driver="bridge", internal=internal, labels=labels, check_duplicate=True
        )
        return str(network.id)

    async def remove_network(self, name: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.networks.get(name).remove()

        await self._call(_remove)

    async def list_networks(self, labels: dict[str, str]) -> list[NetworkInfo]:
        networks = await self._call(self.client.networks.list, filters=_label_filter(labels))
        return [NetworkInfo(id=n.id, name=n.name, labels=n.attrs.get("Labels") or {}) for n in networks]

    async def image_exists(self, tag: str) -> bool:
        def _exists() -> bool:
            try:
                self.client.images.get(tag)
                return True
            except docker.errors.ImageNotFound:
                return False

        return await self._call(_exists)  # type: ignore[no-any-return]

    async def image_info(self, tag: str) -> ImageInfo | None:
        def _info() -> ImageInfo | None:
            try:
                image = self.client.images.get(tag)
            except docker.errors.ImageNotFound:
                return None
            return ImageInfo(id=str(image.id), labels=image.labels or {})

        return await self._call(_info)  # type: ignore[no-any-return]

    async def put_archive(self, container_id: str, path: str, data: BinaryIO) -> None:
        """Extract a tar into ``path`` of a (created) container, streamed from ``data``; Docker extracts
        into the container's volumes even when its root is read-only, keeping owners and modes."""
        chunks = iter(lambda: data.read(1 << 20), b"")  # sent chunked: ``data`` may be a pipe of unknown length
        done = await self._call(self.client.api.put_archive, container_id, path, chunks)
        if not done:
            raise RuntimeUnavailableError(f"Docker refused the archive for {path} in container {container_id[:12]}")

    async def get_archive(self, container_id: str, path: str, dest: BinaryIO, max_bytes: int) -> None:
        """Write the tar of ``path`` in the container to ``dest``, refusing more than ``max_bytes``."""

        def _copy() -> None:
            stream, _ = self.client.api.get_archive(container_id, path, chunk_size=1 << 20)
            written = 0
            for chunk in stream:
                written += len(chunk)
                if written > max_bytes:
                    stream.close()
                    raise WorkspaceError(
                        f"container {container_id[:12]}: the archive of {path} is over {max_bytes} bytes",
                        hint="the agent wrote more than the session's disk quota allows",
                    )
                dest.write(chunk)

        await self._call(_copy)
