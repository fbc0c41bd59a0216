"""Egress for agents on a remote Docker engine: per session a **gateway container** beside the agent, on
the same engine, runs the session's gateways (:mod:`hydra_sandbox.sandbox.gateway_process`, the same
:func:`~hydra_sandbox.sandbox.gateways.session_gateways` the local backend serves in Hydra's process)
behind Unix sockets in a **socket volume** that the agent's container mounts read-only at ``/run/hydra``.

* The agent keeps ``network_mode="none"``: no route anywhere. Its ``hydra-agent-entry`` relays its
  loopback port to the socket, as on this machine.
* The agent's container is created and started while the gateway starts (only the socket volume must
  exist first): its entry's relay retries connecting to the socket until the gateway serves, and stops
  the agent with a message when it has not within ``READY_DEADLINE_S``; Hydra awaits the gateway's
  ready line beside the agent and fails the run with the gateway's reason when it does not come.
* The gateway is the only container with a network (``HYDRA_GATEWAY_NETWORK``, the engine's default
  bridge unless set; never ``host``), and is hardened like the agent: non-root, read-only root, every
  capability dropped, no new privileges, Hydra's seccomp profile, pids/memory/CPU limits, no Docker socket.
* The model key reaches it as a file (0400, the gateway user's) put into a **config volume** of its own
  before it starts: not its environment, labels or command line, which ``docker inspect`` shows, and not
  the socket volume the agent sees. The gateway removes the file once read (``--consume``).
* Usage: the gateway prints a numbered JSON line per model response; Hydra follows the container's log
  and tells ``on_usage``. Once that says the budget is spent, the gateway is stopped: no further model
  request gets through. A re-attached server replays the gateway's log from its start; its budget
  starts from zero, so each response of this run is counted once, and the numbers let the recorder
  keep each usage event once.
* Delegation (a gateway to Hydra's agent MCP endpoint) cannot reach Hydra from another machine:
  :attr:`SidecarEgress.reaches_hydra` is false, and the orchestrator runs such agents without it and
  records why.
* A server shutdown mid-run leaves the gateway, its volumes and the agent running; the next server finds
  the gateway by its labels and follows it. Otherwise the gateway and both volumes go when the run ends
  (the agent's container is removed first), and ``hydra gc`` removes what a crash left.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol

from hydra_sandbox import __version__
from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError
from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.sandbox.backends.docker.egress import SOCKET_DIR_IN_CONTAINER
from hydra_sandbox.sandbox.egress import ActiveEgress, EgressPlan, GatewaySecrets
from hydra_sandbox.sandbox.gateway_beside import GatewayBeside
from hydra_sandbox.sandbox.gateway_lines import gateway_line
from hydra_sandbox.sandbox.gateway_process import GatewayProcessConfig
from hydra_sandbox.sandbox.gateways import ENTRYPOINT, agent_wiring
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, LABEL_SESSION, LABEL_VERSION, ContainerSpec, Mount

log = logging.getLogger(__name__)

ROLE = "gateway"
GATEWAY_UID = 10002
"""The gateway image's user (``images/gateway/Dockerfile``)."""
CONFIG_DIR = "/etc/hydra-gateway"
CONFIG_FILE = "config.json"
READY_DEADLINE_S = 60.0
WAIT_ENV = "HYDRA_EGRESS_WAIT_S"
"""How long the agent's entry waits for the gateway's sockets (``hydra-agent-entry``): the same deadline."""
STDERR_KEPT = 4096
GATEWAY_LIMITS = ResourceLimits(memory_mb=256, cpus=0.5, pids=64)
GATEWAY_TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=16m"}


class GatewayRuntime(ContainerRuntime, Protocol):
    """A runtime that can give one (Hydra-built, hardened) container a network, and put files into it."""

    async def create_networked(self, spec: ContainerSpec, network: str) -> str:
        """Create ``spec`` (still hardened, still refused if not) attached to the Docker network ``network``."""
        ...

    async def put_archive(self, container_id: str, path: str, data: BinaryIO) -> None: ...


def gateway_name(session_id: str) -> str:
    return f"hydra-gw-{session_id}"


def socket_volume(session_id: str) -> str:
    return f"hydra-egress-{session_id}"


def config_volume(session_id: str) -> str:
    return f"hydra-gwconf-{session_id}"


def config_archive(config: GatewayProcessConfig) -> bytes:
    """A tar of the one configuration file, owned by the gateway user, mode 0400."""
    data = json.loads(config.model_dump_json())
    if config.model_key is not None:  # SecretStr dumps as stars: the gateway needs the value
        data["model_key"] = config.model_key.get_secret_value()
    content = json.dumps(data).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo(CONFIG_FILE)
        member.size, member.mode, member.mtime = len(content), 0o400, 0
        member.uid = member.gid = GATEWAY_UID
        tar.addfile(member, io.BytesIO(content))
    return out.getvalue()


class SidecarEgress(GatewayBeside):
    """The :class:`~hydra_sandbox.sandbox.egress.EgressPlacement` of a remote Docker engine: a gateway
    container on the agent's engine (the lifecycle is :class:`~hydra_sandbox.sandbox.gateway_beside.GatewayBeside`)."""

    where = "beside an agent on a remote engine"

    def __init__(self, runtime: GatewayRuntime, image: str, *, home: str, network: str = "bridge") -> None:
        if network in {"host", "none"} or network.startswith("container:"):
            raise ConfigError(
                f"HYDRA_GATEWAY_NETWORK: {network!r} is not a network a gateway may use",
                hint="name a bridge network of the engine (default 'bridge')",
            )
        self._runtime = runtime
        self._image = image
        self._home = home
        self._network = network
        self._stderr: dict[str, bytes] = {}  # container id -> the tail of its stderr, for a failed start

    def _labels(self, session_id: str) -> dict[str, str]:
        return {LABEL_HOME: self._home, LABEL_SESSION: session_id, LABEL_ROLE: ROLE, LABEL_VERSION: __version__}

    def gateway_spec(self, session_id: str) -> ContainerSpec:
        """The gateway container: hardened as an agent is; only its network differs (given at create)."""
        return ContainerSpec(
            image=self._image,
            argv=[
                *("python3", "-m", "hydra_sandbox.sandbox.gateway_process"),
                *("--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--consume"),
            ],
            workdir="/",
            user=f"{GATEWAY_UID}:{GATEWAY_UID}",
            labels=self._labels(session_id),
            name=gateway_name(session_id),
            mounts=[
                Mount(type="volume", source=socket_volume(session_id), target=SOCKET_DIR_IN_CONTAINER),
                Mount(type="volume", source=config_volume(session_id), target=CONFIG_DIR, read_only=False),
            ],
            tmpfs=dict(GATEWAY_TMPFS),
            limits=GATEWAY_LIMITS,
        )

    async def _find_or_start(self, plan: EgressPlan, secrets: GatewaySecrets) -> str:
        container_id = await self._running_gateway(plan.session_id)
        return container_id if container_id is not None else await self._start_gateway(plan, secrets)

    async def _early_agent_side(self, plan: EgressPlan) -> ActiveEgress:
        """The agent's side, before its gateway starts: the gateway image is checked and the socket
        volume made (the agent mounts it read-only; the gateway's sockets appear in it once it serves,
        which the agent's entry waits for, at most ``READY_DEADLINE_S``)."""
        session_id = plan.session_id
        labels = self._labels(session_id)
        present, volumes = await asyncio.gather(
            self._runtime.image_exists(self._image), self._runtime.list_volumes(labels)
        )
        if not present:
            raise RuntimeUnavailableError(
                f"session {session_id}: the gateway image {self._image} is missing on the agent's engine",
                hint="run `hydra images build --gateway`, then `hydra images copy` (HYDRA_GATEWAY_IMAGE names it)",
            )
        existing = {v.name for v in volumes}
        if socket_volume(session_id) not in existing:  # kept when an agent still running mounts it
            await self._runtime.create_volume(socket_volume(session_id), labels)
        wiring = agent_wiring(plan, SOCKET_DIR_IN_CONTAINER, delegate=False)
        mount = Mount(type="volume", source=socket_volume(session_id), target=SOCKET_DIR_IN_CONTAINER, read_only=True)
        return ActiveEgress(
            env=wiring.env | {WAIT_ENV: str(int(READY_DEADLINE_S))},
            mounts=[mount],
            model_base_url=wiring.model_base_url,
            entrypoint=ENTRYPOINT,
        )

    async def _running_gateway(self, session_id: str) -> str | None:
        """The session's gateway left running by a previous server (re-attach); stale ones are removed."""
        found = await self._runtime.list_containers(self._labels(session_id))
        running = [c.id for c in found if c.status == "running"]
        for container in found:
            if container.id not in running[:1]:
                await self._runtime.remove(container.id)
        return running[0] if running else None

    async def _start_gateway(self, plan: EgressPlan, secrets: GatewaySecrets) -> str:
        """A new gateway (its socket volume exists: :meth:`_early_agent_side`), its configuration put in
        before it starts."""
        session_id = plan.session_id
        labels = self._labels(session_id)
        await self._runtime.remove_volume(config_volume(session_id))
        await self._runtime.create_volume(config_volume(session_id), labels)
        container_id = await self._runtime.create_networked(self.gateway_spec(session_id), self._network)
        config = GatewayProcessConfig(plan=plan, model_key=secrets.model_key, socket_dir=Path(SOCKET_DIR_IN_CONTAINER))
        await self._runtime.put_archive(container_id, CONFIG_DIR, io.BytesIO(config_archive(config)))
        await self._runtime.start(container_id)
        return container_id

    async def _until_ready(self, container_id: str, ready: asyncio.Future[None], follower: asyncio.Task[None]) -> None:
        done, _ = await asyncio.wait({ready, follower}, timeout=READY_DEADLINE_S, return_when=asyncio.FIRST_COMPLETED)
        if ready in done and ready.exception() is None:
            return
        info = await self._runtime.inspect(container_id)
        how = f"not ready after {READY_DEADLINE_S:.0f} s"
        if info.status != "running":
            how = f"exited with {info.exit_code}"
        said = self._stderr.pop(container_id, b"").decode(errors="replace").strip()
        if said:
            how += f": {said.splitlines()[-1]}"
        if follower in done and not follower.cancelled() and follower.exception() is not None:
            how += f" (following its log failed: {follower.exception()})"
        raise RuntimeUnavailableError(
            f"the egress gateway container {container_id[:12]} {how}",
            hint=f"check that {self._image} is on the engine (`hydra images copy`) and `docker logs` of the gateway",
        )

    async def _follow(self, container_id: str, ready: asyncio.Future[None], on_usage: UsageCallback | None) -> None:
        """Read the gateway's stdout lines: the ready line, then each response's usage for ``on_usage``."""
        pending = b""
        async for stream, chunk in self._runtime.stream_logs(container_id):
            if stream != "stdout":
                self._stderr[container_id] = (self._stderr.get(container_id, b"") + chunk)[-STDERR_KEPT:]
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                await self._line(container_id, line, ready, on_usage)
        if ready.done():  # its log ended before the run did: the agent's model requests now fail
            said = self._stderr.get(container_id, b"").decode(errors="replace").strip().splitlines()[-1:]
            log.warning("egress gateway %s exited while its agent runs %s", container_id[:12], "".join(said))

    async def _line(
        self, container_id: str, line: bytes, ready: asyncio.Future[None], on_usage: UsageCallback | None
    ) -> None:
        reason = await gateway_line(line, ready, on_usage)
        if reason:  # the budget is spent: no further model request may pass
            log.warning("gateway %s stopped: %s", container_id[:12], reason)
            with contextlib.suppress(RuntimeUnavailableError):
                await self._runtime.kill(container_id)

    async def remove(self, session_id: str) -> None:
        """Remove the session's gateway and both its volumes (after the agent's container is gone)."""
        with contextlib.suppress(RuntimeUnavailableError):
            for container in await self._runtime.list_containers(self._labels(session_id)):
                await self._runtime.remove(container.id)
        for volume in (config_volume(session_id), socket_volume(session_id)):
            with contextlib.suppress(RuntimeUnavailableError):
                await self._runtime.remove_volume(volume)
