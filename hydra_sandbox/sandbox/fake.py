"""An in-memory :class:`~hydra_sandbox.sandbox.runtime.ContainerRuntime`, beside the seam it fakes.

A :class:`FakeRuntime` keeps containers, volumes, networks and images in dictionaries and behaves like
a Docker-shaped engine where the orchestrator can tell: it refuses specs that fail
:func:`~hydra_sandbox.sandbox.spec.check_hardening`, a missing image and a duplicate name; a container's
log replays from its start on every read (a re-attach sees it whole); stop and kill end a running
container; removing what is already gone is not an error. What a container does once started is a
:class:`FakeProgram` (output chunks, exit code, OOM, or running until the test ends it), so the
orchestrator is tested without Docker, and a test can count what was left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import itertools
import posixpath
import tarfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from hydra_sandbox.errors import RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.sandbox.spec import (
    LABEL_SESSION,
    ContainerInfo,
    ContainerSpec,
    ImageInfo,
    LogStream,
    NetworkInfo,
    VolumeInfo,
    check_hardening,
)

SIGTERM_EXIT = 143
SIGKILL_EXIT = 137


@dataclass
class FakeProgram:
    """What a fake container does once started: print ``output``, then exit with ``exit_code`` (or,
    with ``keeps_running``, run until stopped, killed or ended by :meth:`FakeRuntime.exit`)."""

    output: list[tuple[LogStream, bytes]] = field(default_factory=list)
    exit_code: int = 0
    oom_killed: bool = False
    keeps_running: bool = False


@dataclass
class FakeContainer:
    id: str
    spec: ContainerSpec
    program: FakeProgram
    status: str = "created"
    exit_code: int | None = None
    oom_killed: bool = False
    output: list[tuple[LogStream, bytes]] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        """Wake every reader and waiter; they look again at the state."""
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class FakeVolume:
    name: str
    labels: dict[str, str]
    driver_opts: dict[str, str]


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    """Docker's label filter; an empty selection means everything Hydra labelled."""
    if not wanted:
        return LABEL_SESSION in labels
    return all(labels.get(k) == v for k, v in wanted.items())


class FakeRuntime:
    """In-memory containers, volumes, networks and images. ``program`` says what containers do (one
    for all, or a function of the spec); ``images`` exist from the start."""

    def __init__(
        self,
        program: FakeProgram | Callable[[ContainerSpec], FakeProgram] | None = None,
        *,
        images: Iterable[str] = (),
    ) -> None:
        self._program = program or FakeProgram()
        self.images: set[str] = set(images)
        self.image_labels: dict[str, dict[str, str]] = {}
        """Tag -> the labels its (imaginary) build wrote."""
        self.image_ids: dict[str, str] = {}
        """Tag -> image id (a rebuild changes it); unset: one derived from the tag."""
        self.containers: dict[str, FakeContainer] = {}
        self.volumes: dict[str, FakeVolume] = {}
        self.networks: dict[str, NetworkInfo] = {}
        self.volume_files: dict[str, dict[str, tuple[tarfile.TarInfo, bytes]]] = {}
        """Volume -> path in it ("" is its root) -> (tar member, content): what archives put there."""
        self.calls: list[str] = []
        self.networks_of: dict[str, str] = {}
        """Container id -> the network :meth:`create_networked` attached it to."""
        self.failures: dict[str, Exception] = {}
        """Method name -> the error its next call raises (then it works again)."""
        self._ids = itertools.count(1)

    # -- test controls -----------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        error = self.failures.pop(method, None)
        if error is not None:
            raise error

    def _get(self, container_id: str) -> FakeContainer:
        container = self.containers.get(container_id)
        if container is None:
            raise RuntimeUnavailableError(f"not found: no such container: {container_id}")
        return container

    def emit(self, container_id: str, stream: LogStream, data: bytes) -> None:
        """The running container prints ``data``."""
        container = self._get(container_id)
        container.output.append((stream, data))
        container.touch()

    def exit(self, container_id: str, exit_code: int = 0, *, oom_killed: bool = False) -> None:
        """The container's process ends (no-op when it is not running)."""
        container = self._get(container_id)
        if container.status != "running":
            return
        container.status, container.exit_code, container.oom_killed = "exited", exit_code, oom_killed
        container.finished_at = datetime.now(UTC)
        container.touch()

    def running(self) -> list[str]:
        return [c.id for c in self.containers.values() if c.status == "running"]

    # -- containers --------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        self._enter("create")
        check_hardening(spec)
        if spec.image not in self.images:
            raise RuntimeUnavailableError(f"image not found: {spec.image}", hint="run `hydra images build`")
        if spec.name is not None and any(c.spec.name == spec.name for c in self.containers.values()):
            raise RuntimeUnavailableError(f"Docker refused: Conflict. The container name {spec.name} is already in use")
        program = self._program(spec) if callable(self._program) else self._program
        container_id = f"fake{next(self._ids):060d}"
        self.containers[container_id] = FakeContainer(id=container_id, spec=spec, program=program)
        return container_id

    async def create_networked(self, spec: ContainerSpec, network: str) -> str:
        """As :meth:`create`; the network is kept in :attr:`networks_of` (the id's network)."""
        container_id = await self.create(spec)
        self.calls[-1] = "create_networked"
        self.networks_of[container_id] = network
        return container_id

    async def start(self, container_id: str) -> None:
        self._enter("start")
        container = self._get(container_id)
        container.status, container.started_at = "running", datetime.now(UTC)
        container.output.extend(container.program.output)
        container.touch()
        if not container.program.keeps_running:
            self.exit(container_id, container.program.exit_code, oom_killed=container.program.oom_killed)

    async def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
        self.calls.append("stream_logs")
        container = self._get(container_id)
        sent = 0
        while True:
            while sent < len(container.output):
                yield container.output[sent]
                sent += 1
            if container.status != "running":
                return
            await container.changed.wait()

    async def wait(self, container_id: str, timeout_s: float | None = None) -> int | None:
        self._enter("wait")
        container = self._get(container_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while container.status in {"created", "running"}:
                    await container.changed.wait()
        return container.exit_code if container.status == "exited" else None

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        self._enter("stop")
        self.exit(container_id, SIGTERM_EXIT)

    async def kill(self, container_id: str) -> None:
        self._enter("kill")
        self.exit(container_id, SIGKILL_EXIT)

    async def inspect(self, container_id: str) -> ContainerInfo:
        self._enter("inspect")
        return self._info(self._get(container_id))

    def _info(self, c: FakeContainer) -> ContainerInfo:
        return ContainerInfo(
            id=c.id,
            name=c.spec.name or c.id[:12],
            image=c.spec.image,
            labels=dict(c.spec.labels),
            status=c.status,
            exit_code=c.exit_code,
            oom_killed=c.oom_killed,
            started_at=c.started_at,
            finished_at=c.finished_at,
        )

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        self._enter("list_containers")
        return [self._info(c) for c in self.containers.values() if _matches(c.spec.labels, labels)]

    async def remove(self, container_id: str) -> None:
        self._enter("remove")
        container = self.containers.pop(container_id, None)
        if container is not None:
            container.status = "removed"
            container.touch()

    # -- volumes, networks, images -----------------------------------------------------------

    async def create_volume(self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None) -> str:
        self._enter("create_volume")
        self.volumes.setdefault(name, FakeVolume(name, dict(labels), dict(driver_opts or {})))
        return name

    async def remove_volume(self, name: str) -> None:
        self._enter("remove_volume")
        if any(m.source == name for c in self.containers.values() for m in c.spec.mounts):
            raise RuntimeUnavailableError(f"Docker refused: remove {name}: volume is in use")
        self.volumes.pop(name, None)
        self.volume_files.pop(name, None)

    async def list_volumes(self, labels: dict[str, str]) -> list[VolumeInfo]:
        self._enter("list_volumes")
        return [VolumeInfo(name=v.name, labels=v.labels) for v in self.volumes.values() if _matches(v.labels, labels)]

    async def create_network(self, name: str, labels: dict[str, str], internal: bool = True) -> str:
        self._enter("create_network")
        network = self.networks.setdefault(name, NetworkInfo(id=f"net-{name}", name=name, labels=dict(labels)))
        return network.id

    async def remove_network(self, name: str) -> None:
        self._enter("remove_network")
        self.networks.pop(name, None)

    async def list_networks(self, labels: dict[str, str]) -> list[NetworkInfo]:
        self._enter("list_networks")
        return [n for n in self.networks.values() if _matches(n.labels, labels)]

    async def image_exists(self, tag: str) -> bool:
        self._enter("image_exists")
        return tag in self.images

    async def image_info(self, tag: str) -> ImageInfo | None:
        self._enter("image_info")
        if tag not in self.images:
            return None
        image_id = self.image_ids.get(tag, f"sha256:fake-{tag}")
        return ImageInfo(id=image_id, labels=dict(self.image_labels.get(tag, {})))

    # -- archives (the ArchiveRuntime calls) --------------------------------------------------

    def _volume_at(self, container_id: str, path: str) -> tuple[str, str]:
        """The volume of the container holding ``path``, and the path inside it."""
        mounts = [m for m in self._get(container_id).spec.mounts if m.type == "volume"]
        for mount in sorted(mounts, key=lambda m: len(m.target), reverse=True):
            if path == mount.target or path.startswith(mount.target + "/"):
                return mount.source, path[len(mount.target) :].lstrip("/")
        raise RuntimeUnavailableError(f"Docker refused: {path} is not in a volume and the root is read-only")

    async def put_archive(self, container_id: str, path: str, data: BinaryIO) -> None:
        self._enter("put_archive")
        with tarfile.open(fileobj=data, mode="r|") as tar:
            for member in tar:
                volume, rel = self._volume_at(container_id, posixpath.normpath(f"{path}/{member.name}"))
                content = tar.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
                self.volume_files.setdefault(volume, {})[rel] = (copy.copy(member), content)

    async def get_archive(self, container_id: str, path: str, dest: BinaryIO, max_bytes: int) -> None:
        self._enter("get_archive")
        volume, below = self._volume_at(container_id, posixpath.normpath(path))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, (member, content) in sorted(self.volume_files.get(volume, {}).items()):
                if below and not (rel == below or rel.startswith(below + "/")):
                    continue
                entry = copy.copy(member)
                entry.name = "./" + rel[len(below) :].lstrip("/") if rel != below else "."
                tar.addfile(entry, io.BytesIO(content) if entry.isreg() else None)
        if out.tell() > max_bytes:
            raise WorkspaceError(f"container {container_id[:12]}: the archive of {path} is over {max_bytes} bytes")
        dest.write(out.getvalue())
