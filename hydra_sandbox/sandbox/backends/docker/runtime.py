"""The ContainerRuntime on docker-py. Every blocking call runs in a worker thread.

:func:`container_create_kwargs` turns a :class:`ContainerSpec` into docker-py arguments with every
hardening rule applied, and refuses specs that would weaken the boundary. It is pure, so each rule
is tested without a daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
from docker.types import Mount as DockerMount

from hydra_sandbox.errors import HydraError, RuntimeUnavailableError
from hydra_sandbox.sandbox.spec import (
    ContainerInfo,
    ContainerSpec,
    LogStream,
    NetworkInfo,
    VolumeInfo,
)

_FORBIDDEN_BIND_PREFIXES = ("/var/run", "/run", "/proc", "/sys", "/dev", "/etc", "/boot", "/root", "/var/lib/docker")


_CHUNK = 64 * 1024
_MAX_PENDING = 4 * 1024 * 1024


def _read_exactly(raw: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = raw.read(n - len(buf))
        if not part:
            break
        buf += part
    return bytes(buf)


def _stamp_ns(stamp: bytes) -> int:
    """Docker's RFC 3339 timestamp with up to 9 fraction digits (trailing zeros trimmed) in ns."""
    text = stamp.decode("ascii").rstrip("Z")
    whole, _, fraction = text.partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


class _LogCursor:
    """Where a reader is in a container's log: the newest timestamp seen and how many frames carried
    it, so a pass that starts ``since`` that time skips exactly what was already delivered."""

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.at_last = 0
        self.new_in_pass = 0
        self._skip_at_last = 0

    def start_pass(self) -> None:
        self.new_in_pass = 0
        self._skip_at_last = self.at_last

    def seen(self, ns: int) -> bool:
        """Whether the frame stamped ``ns`` was delivered before (and must be skipped)."""
        if self.last_ns is not None and ns < self.last_ns:
            return True
        if self.last_ns is not None and ns == self.last_ns and self._skip_at_last > 0:
            self._skip_at_last -= 1
            return True
        if ns == self.last_ns:
            self.at_last += 1
        else:
            self.last_ns, self.at_last, self._skip_at_last = ns, 1, 0
        self.new_in_pass += 1
        return False


def _coalesce(
    items: list[tuple[LogStream, bytes] | BaseException | None],
) -> Iterator[tuple[LogStream, bytes] | BaseException | None]:
    """Join consecutive frames of the same stream into chunks of at most ``_CHUNK`` bytes."""
    stream: LogStream | None = None
    parts: list[bytes] = []
    size = 0
    for item in items:
        if isinstance(item, tuple) and item[0] == stream and size + len(item[1]) <= _CHUNK:
            parts.append(item[1])
            size += len(item[1])
            continue
        if stream is not None:
            yield stream, b"".join(parts)
        if isinstance(item, tuple):
            stream, parts, size = item[0], [item[1]], len(item[1])
        else:
            stream, parts, size = None, [], 0
            yield item
    if stream is not None:
        yield stream, b"".join(parts)


def _label_filter(labels: dict[str, str]) -> dict[str, list[str]]:
    """Docker label filters; an empty selection means everything Hydra labelled."""
    return {"label": [f"{k}={v}" for k, v in labels.items()] or ["hydra.session"]}


class UnsafeSpecError(HydraError):
    """A container spec that would weaken the sandbox boundary."""

    exit_code = 3


def _check_spec(spec: ContainerSpec) -> None:
    uid = spec.user.split(":")[0]
    if uid in {"0", "root"}:
        raise UnsafeSpecError("user: agents never run as root", hint="pass a non-zero uid:gid")
    if spec.network_mode == "host" or (
        spec.network_mode.startswith(("container:", "ns:")) and not (spec.network_mode.startswith("container:hydra-"))
    ):
        raise UnsafeSpecError(
            f"network_mode: {spec.network_mode!r} shares another namespace", hint="use 'none' or a Hydra network"
        )
    for mount in spec.mounts:
        if "docker.sock" in mount.source or "docker.sock" in mount.target:
            raise UnsafeSpecError(f"mounts: {mount.source} is the Docker socket; agents never get it")
        if mount.type == "bind":
            source = mount.source.rstrip("/") or "/"
            if source == "/" or any(source == p or source.startswith(p + "/") for p in _FORBIDDEN_BIND_PREFIXES):
                raise UnsafeSpecError(
                    f"mounts: binding host path {mount.source} into an agent is not allowed",
                    hint="bind only Hydra's own session directories",
                )


def _tmpfs(spec: ContainerSpec) -> dict[str, str]:
    """tmpfs mounts owned by the agent's uid (HOME) or sticky and world-writable (/tmp)."""
    uid, _, gid = spec.user.partition(":")
    out = {}
    for target, options in spec.tmpfs.items():
        extra = ",mode=1777" if target == "/tmp" else f",mode=0700,uid={uid},gid={gid}"
        out[target] = options + ("" if "mode=" in options else extra)
    return out


def container_create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """docker-py ``containers.create`` arguments for ``spec``, hardened. Pure: no daemon needed."""
    _check_spec(spec)
    memory = f"{spec.limits.memory_mb}m"
    return {
        "image": spec.image,
        "command": list(spec.argv),
        "entrypoint": [],
        "environment": dict(spec.env),
        "working_dir": spec.workdir,
        "user": spec.user,
        "labels": dict(spec.labels),
        "name": spec.name,
        "detach": True,
        "stdin_open": False,
        "tty": False,
        "read_only": True,
        "tmpfs": _tmpfs(spec),
        "cap_drop": ["ALL"],
        "cap_add": [],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "devices": [],
        "pids_limit": spec.limits.pids,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(spec.limits.cpus * 1e9),
        "network_mode": spec.network_mode,
        "ipc_mode": "private",
        "mounts": [
            DockerMount(
                target=m.target,
                source=m.source,
                type=m.type,
                read_only=m.read_only,
                propagation="rprivate" if m.type == "bind" else None,
            )
            for m in spec.mounts
        ],
        "init": True,
        "oom_kill_disable": False,
    }


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
    def __init__(self, client: docker.DockerClient | None = None, *, max_threads: int = 16) -> None:
        self._client = client
        self._client_lock = threading.Lock()
        self._limit = asyncio.Semaphore(max_threads)

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = docker.from_env(timeout=120)
                    self._client.ping()
                except Exception as exc:
                    self._client = None
                    raise RuntimeUnavailableError(
                        f"cannot reach the Docker daemon: {exc}",
                        hint="start dockerd or set DOCKER_HOST; `hydra doctor` checks",
                    ) from None
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

    async def start(self, container_id: str) -> None:
        await self._call(lambda: self.client.containers.get(container_id).start())

    async def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:  # type: ignore[override]
        """Demultiplexed output from the start, following until the container exits.

        Docker frames output line by line. A reader thread appends frames to a buffer and wakes the event
        loop at most once per drain; the consumer joins consecutive frames of one stream into chunks of up
        to 64 KiB. When more than ``_MAX_PENDING`` bytes wait, the reader waits too: a slow consumer slows
        the container's log reader instead of growing memory."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        cond = threading.Condition()
        frames: deque[tuple[LogStream, bytes] | BaseException | None] = deque()
        state = {"pending": 0, "notified": False, "stop": False}

        def push(item: tuple[LogStream, bytes] | BaseException | None) -> bool:
            with cond:
                while state["pending"] > _MAX_PENDING and not state["stop"]:
                    cond.wait(0.5)
                if state["stop"]:
                    return False
                frames.append(item)
                if isinstance(item, tuple):
                    state["pending"] += len(item[1])
                if not state["notified"]:
                    state["notified"] = True
                    loop.call_soon_threadsafe(wake.set)
            return True

        def reader() -> None:
            try:
                cursor = _LogCursor()
                follow = True
                while True:
                    if not self._read_logs(container_id, cursor, follow, push):
                        return  # the consumer went away
                    # Docker's follow stream can end when the container exits before a slow reader
                    # has caught up; read on from the last frame seen until nothing new arrives.
                    if cursor.new_in_pass == 0 and not follow:
                        break
                    state_now = self.client.api.inspect_container(container_id)["State"]
                    follow = bool(state_now.get("Running"))
                push(None)
            except BaseException as exc:
                push(exc)

        thread = threading.Thread(target=reader, name=f"logs-{container_id[:12]}", daemon=True)
        thread.start()
        try:
            while True:
                await wake.wait()
                wake.clear()
                with cond:
                    items = list(frames)
                    frames.clear()
                    state["pending"] = 0
                    state["notified"] = False
                    cond.notify_all()
                for chunk in _coalesce(items):
                    if chunk is None:
                        return
                    if isinstance(chunk, BaseException):
                        raise RuntimeUnavailableError(f"lost the output of container {container_id[:12]}: {chunk}")
                    yield chunk
                    # A chatty container must not starve the event loop (other sessions, tool calls):
                    # with output always pending, nothing above would ever suspend.
                    await asyncio.sleep(0)
        finally:
            with cond:
                state["stop"] = True
                cond.notify_all()

    def _read_logs(
        self,
        container_id: str,
        cursor: _LogCursor,
        follow: bool,
        push: Callable[[tuple[LogStream, bytes] | BaseException | None], bool],
    ) -> bool:
        """One pass over the container's log from ``cursor`` on; False when the consumer went away."""
        api = self.client.api
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 1}
        if cursor.last_ns is not None:
            params["since"] = f"{cursor.last_ns // 1_000_000_000}.{cursor.last_ns % 1_000_000_000:09d}"
        response = api._get(api._url("/containers/{0}/logs", container_id), params=params, stream=True)
        api._raise_for_status(response)
        api._disable_socket_timeout(api._get_raw_response_socket(response))
        cursor.start_pass()
        try:
            while True:
                header = _read_exactly(response.raw, 8)  # stream id, 3 zero bytes, big-endian length
                if not header:
                    return True
                length = int.from_bytes(header[4:8], "big")
                frame = _read_exactly(response.raw, length)
                if len(header) < 8 or len(frame) < length:
                    raise RuntimeUnavailableError(f"the log stream of container {container_id[:12]} broke mid-frame")
                stamp, _, data = frame.partition(b" ")
                if cursor.seen(_stamp_ns(stamp)):
                    continue
                if not push(("stderr" if header[0] == 2 else "stdout", data)):
                    return False
        finally:
            response.close()

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
                self.client.containers.get(container_id).remove(force=True, v=False)

        await self._call(_remove)

    async def create_volume(self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None) -> str:
        volume = await self._call(
            self.client.volumes.create, name=name, driver="local", driver_opts=driver_opts or {}, labels=labels
        )
        return str(volume.name)

    async def remove_volume(self, name: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(name).remove(force=True)

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
