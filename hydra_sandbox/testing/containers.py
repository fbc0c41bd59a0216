"""testcontainers for Hydra: the server image over streamable HTTP, and the scripted model in its own
container. Needs the ``testing`` extra (``pip install 'hydra-sandbox[testing]'``).

How the Hydra container reaches Docker, and the risk: it starts agent containers, so it needs a Docker
API. It gets the host's Docker socket bind-mounted, found the way testcontainers finds it for its own
reaper (``TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE``, else the socket docker-py connects to), and runs as
the test's own uid and gid with the socket's group added. Whoever controls that socket controls the host
(it can start a privileged container), so the Hydra container is as trusted as the test itself: it runs
Hydra's own code, publishes its port only on the address testcontainers connects to (see
:func:`_publish`), requires a generated bearer token, and the agents it starts never get the socket
(Hydra's hardening, and tests/integration/test_testing_containers.py). Docker resolves the paths of
the bind mounts and overlay volumes Hydra asks for on the host, so the container sees its data home and
every workspace at the same absolute path as the host does.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.transports import StreamableHttpTransport
from testcontainers.core.config import ConnectionMode, testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HttpWaitStrategy

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.settings import load_settings
from hydra_sandbox.testing import _hydra
from hydra_sandbox.testing.engine import ScriptReport
from hydra_sandbox.testing.inprocess import SCRIPTED_MODEL_NAME
from hydra_sandbox.testing.script import ModelScript

HYDRA_PORT = 8765
MODEL_PORT = 8080
MODEL_ALIAS = "scripted-model"
LABEL = "hydra.testing"


def _publish(container: DockerContainer, port: int) -> str | None:
    """Publish ``port`` on a random host port, on the one address testcontainers will connect to rather
    than on every interface: the loopback of a local daemon, or (when the tests run inside a container
    that hosts the daemon) the gateway of the container's network. Only a remote daemon gets the
    default, every interface."""
    client = container.get_docker_client()
    mode = client.get_connection_mode()
    address: str | None = "127.0.0.1"
    if mode == ConnectionMode.gateway_ip:
        joined = container._network  # testcontainers keeps the network it was given here, with no getter
        network = joined.name if joined is not None else "bridge"
        configs = client.client.networks.get(network).attrs.get("IPAM", {}).get("Config") or [{}]
        address = configs[0].get("Gateway")
    elif mode == ConnectionMode.docker_host and client.host() not in {"localhost", "127.0.0.1", "::1"}:
        address = None
    container.ports[str(port)] = cast(Any, (address, None)) if address else None
    return address


def _mount_this_code(container: DockerContainer) -> None:
    """Run this process's hydra_sandbox code in the container (read-only, over the image's copy), so the
    image is rebuilt only when the dependencies change and the container never runs stale code."""
    target = _hydra.image_package_dir(container.image)
    container.with_volume_mapping(str(_hydra.package_dir()), target, "ro")
    container.with_envs(  # the built-ins come with the mounted code, whatever an older image's ENV says
        HYDRA_BUILTIN_PROFILES_DIR=f"{target}/builtin/profiles",
        HYDRA_BUILTIN_POLICIES_DIR=f"{target}/builtin/policies",
    )


def docker_socket() -> Path:
    """The host's Docker socket, as testcontainers finds it for its reaper; an error if it is not a
    Unix socket on this machine (a remote daemon cannot see this machine's paths)."""
    path = Path(testcontainers_config.ryuk_docker_socket)
    if not path.exists() or not stat.S_ISSOCK(path.stat().st_mode):
        raise RuntimeUnavailableError(
            f"HydraContainer needs the Docker daemon's Unix socket on this machine; {path} is not one",
            hint="set TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE to the socket's path, or use InProcessHydra",
        )
    return path


class ScriptedModelContainer(DockerContainer):
    """The scripted model (:mod:`hydra_sandbox.testing.model`) in its own container, from the server
    image. Give it a ``network`` to share with a :class:`HydraContainer`; there it answers at
    ``http://scripted-model:8080/v1``. Its report and requests are read over a loopback port."""

    def __init__(self, script: ModelScript, *, network: Network | None = None, image: str | None = None) -> None:
        self._settings = load_settings()
        super().__init__(image or "hydra-server:unresolved", network=network, network_aliases=[MODEL_ALIAS])
        self.network = network
        self._image_given = image is not None
        self.script = script
        self.with_kwargs(
            entrypoint=["python3", "-m", "hydra_sandbox.testing.model"],
            labels={LABEL: "model"},
        )
        self.with_command(["--script", "/tmp/script.json", "--host", "0.0.0.0", "--port", str(MODEL_PORT)])
        payload = json.dumps(script.model_dump(mode="json", exclude_none=True)).encode()
        self.with_copy_into_container(payload, "/tmp/script.json")
        self.waiting_for(HttpWaitStrategy(MODEL_PORT, "/_scripted/report").with_startup_timeout(60))

    def start(self) -> ScriptedModelContainer:
        if not self._image_given:
            self.image = _hydra.ensure_server_image(self._settings)
        _mount_this_code(self)
        _publish(self, MODEL_PORT)
        super().start()
        return self

    @property
    def base_url_in_network(self) -> str:
        """The model's URL for containers on the same network."""
        return f"http://{MODEL_ALIAS}:{MODEL_PORT}/v1"

    def _get(self, path: str) -> Any:
        url = f"http://{self.get_container_host_ip()}:{self.get_exposed_port(MODEL_PORT)}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def report(self) -> ScriptReport:
        return ScriptReport.model_validate(self._get("/_scripted/report"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self._get("/_scripted/requests"))


class HydraContainer(DockerContainer):
    """Hydra's server image running ``hydra serve`` over streamable HTTP, with a generated bearer token.

        with HydraContainer(model_url=...).with_workspace(repo) as hydra:
            async with hydra.get_client() as client: ...

    ``workspaces`` are directories agents may work on (bind-mounted at the same path). ``settings`` are
    further ``HYDRA_*`` variables (``{"HYDRA_MAX_CONCURRENT_AGENTS": "2"}``). See the module docstring for
    how it reaches Docker and what that means. The images are built locally when missing (cached)."""

    def __init__(
        self,
        image: str | None = None,
        *,
        model_url: str | None = None,
        network: Network | None = None,
        workspaces: Iterable[Path | str] = (),
        settings: dict[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self._host_settings = load_settings()
        super().__init__(image or "hydra-server:unresolved", network=network)
        self._image_given = image is not None
        self._token = token or secrets.token_urlsafe(32)
        self._scratch: Path | None = None
        self.with_envs(
            HYDRA_HTTP_TOKEN=self._token,
            HYDRA_MODEL=SCRIPTED_MODEL_NAME,
            HYDRA_AGENT_IMAGE=self._host_settings.agent_image,
            HOME="/tmp",
        )
        if model_url is not None:
            self.with_env("HYDRA_MODEL_BASE_URL", model_url)
        self.with_envs(**(settings or {}))
        for workspace in workspaces:
            self.with_workspace(workspace)
        self.waiting_for(HttpWaitStrategy(HYDRA_PORT, "/healthz").with_startup_timeout(120))

    def with_workspace(self, path: Path | str) -> HydraContainer:
        """Let agents work on ``path`` (an absolute host directory; Hydra may write it on apply_diff)."""
        resolved = str(Path(path).resolve())
        return cast(HydraContainer, self.with_volume_mapping(resolved, resolved, "rw"))

    def with_scripted_model(self, model: ScriptedModelContainer) -> HydraContainer:
        """Use ``model`` (started or not) as the agents' model: both on ``model``'s network."""
        if model.network is None:
            raise RuntimeUnavailableError(
                "the scripted model container has no network to share",
                hint="create both with the same testcontainers Network: ScriptedModelContainer(script, network=n)",
            )
        self.with_network(model.network)
        return cast(HydraContainer, self.with_env("HYDRA_MODEL_BASE_URL", model.base_url_in_network))

    @property
    def data_home(self) -> Path:
        """The server's data home (a temporary directory made at start), the same path on the host and
        in the container."""
        if self._scratch is None:
            raise RuntimeError("HydraContainer is not started: its data home is made at start")
        return self._scratch / "data"

    def start(self) -> HydraContainer:
        try:
            self._prepare()
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        socket = docker_socket()
        self._scratch = Path(tempfile.mkdtemp(prefix="hydra-tc-"))  # 0700: the server runs as its owner
        (self._scratch / "run").mkdir(mode=0o700)
        self.with_volume_mapping(str(self._scratch), str(self._scratch), "rw")
        self.with_envs(HYDRA_DATA_HOME=str(self.data_home), HYDRA_RUNTIME_DIR=str(self._scratch / "run"))
        self.with_volume_mapping(str(socket), "/var/run/docker.sock", "rw")
        self.with_kwargs(
            user=f"{os.getuid()}:{os.getgid()}",
            group_add=[socket.stat().st_gid],
            labels={LABEL: "server"},
        )
        embedding = self._host_settings.embedding_model_dir
        if embedding is not None and (Path(embedding) / "model.onnx").is_file():
            self.with_volume_mapping(str(embedding), str(embedding), "ro")
            self.with_env("HYDRA_EMBEDDING_MODEL_DIR", str(embedding))
        _hydra.ensure_agent_image(self._host_settings)
        if not self._image_given:
            self.image = _hydra.ensure_server_image(self._host_settings)
        _mount_this_code(self)
        address = _publish(self, HYDRA_PORT)
        if address not in {None, "127.0.0.1"}:  # the server answers loopback Host headers, and this one
            self.with_env("HYDRA_HTTP_ALLOWED_HOSTS", json.dumps([address]))

    def get_mcp_url(self) -> str:
        return f"http://{self.get_container_host_ip()}:{self.get_exposed_port(HYDRA_PORT)}/mcp"

    def get_token(self) -> str:
        return self._token

    def get_client(self, timeout_s: float = 300) -> Client:
        """An MCP client for this server (open it with ``async with``), with the bearer token."""
        transport = StreamableHttpTransport(self.get_mcp_url(), auth=BearerAuth(self._token))
        return Client(transport, timeout=timeout_s)

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        """Stop the server (SIGTERM first), remove every sandbox it started, then the container and the
        temporary data home."""
        try:
            if self._container is not None:
                self._container.stop(timeout=20)
            if self._scratch is not None:
                _in_thread(_hydra.remove_sandboxes(self.data_home))
        finally:
            super().stop(force=force, delete_volume=delete_volume)
            self._container = None  # stopping twice (start failed inside a with block) is harmless
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None


def _in_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end on a loop of its own (``stop`` may be called inside a running loop)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=run, name="hydra-testing-cleanup")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
