"""The one place where hydra_sandbox.testing reaches into Hydra's internals (the server factory, garbage
collection of sandboxes, image builds). Everything else in the package goes through public surfaces: the
MCP tools over a client, HydraSettings, the ``hydra`` image. When those internals move, this file moves."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra_sandbox
from hydra_sandbox import __version__
from hydra_sandbox.docker_runtime import DockerRuntime
from hydra_sandbox.errors import ImageBuildError, RuntimeUnavailableError
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.images import build_agent_image, build_server_image
from hydra_sandbox.mcp.app import build_server as _build_server
from hydra_sandbox.runtime import home_label
from hydra_sandbox.settings import REPO_ROOT, HydraSettings

if TYPE_CHECKING:
    from fastmcp import FastMCP

SERVER_REPOSITORY = "hydra-server"
SERVER_TAG_PREFIX = f"{__version__}-testing-"
PROBE_LABEL = {"hydra.testing": "probe"}


def build_server(settings: HydraSettings) -> FastMCP:
    """Hydra's MCP server for ``settings``, to be opened with an in-memory ``fastmcp.Client``."""
    return _build_server(settings)


async def remove_sandboxes(data_home: Path) -> int:
    """Remove every container, volume and network of the Hydra whose data home is ``data_home`` (and
    nothing of any other Hydra); the number removed."""
    report = await collect_garbage(DockerRuntime(), keep_sessions=set(), home=home_label(data_home))
    return report.total


def docker_client() -> Any:
    import docker
    import requests

    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise RuntimeUnavailableError(
            f"cannot reach the Docker daemon: {exc}", hint="start dockerd, or set DOCKER_HOST to a reachable daemon"
        ) from None
    return client


def _exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_agent_image(settings: HydraSettings) -> str:
    """The agent image of ``settings``: used as it is when present, built locally (``hydra images
    build``: no registry) when missing."""
    if _exists(docker_client(), settings.agent_image):
        return settings.agent_image
    return build_agent_image(settings).tag


def package_dir() -> Path:
    """Where this process imports hydra_sandbox from (a checkout, or site-packages for a wheel)."""
    return Path(hydra_sandbox.__file__).resolve().parent


_REQUIRES = (
    "import importlib.metadata as m; d = m.distribution('hydra-sandbox'); "
    "print(d.version); print(*sorted(r for r in d.requires or [] if 'extra ==' not in r), sep='\\n')"
)


def _declared() -> str:
    """This installation's version and dependencies (the image installs no extra), one per line."""
    declared = importlib.metadata.distribution("hydra-sandbox").requires or []
    return "\n".join([__version__, *sorted(r for r in declared if "extra ==" not in r)])


def dependencies_hash() -> str:
    """A hash of what the server image's Python environment holds besides Hydra's own code: the
    version and the declared dependencies. Hydra's code itself is mounted over the image's copy at run
    time (see :func:`image_package_dir`), so a code change needs no rebuild."""
    return hashlib.sha256(_declared().encode()).hexdigest()[:12]


def _same_dependencies(client: Any, image: str) -> bool:
    """Whether ``image`` (say, ``hydra images build --server``'s) was built from these dependencies."""
    out = client.containers.run(
        image, ["-c", _REQUIRES], entrypoint=["python3"], remove=True, network_mode="none", labels=PROBE_LABEL
    )
    return bool(out.decode().strip() == _declared())


def ensure_server_image(settings: HydraSettings) -> str:
    """An image of the top-level Dockerfile (``hydra serve``) for this version and these dependencies,
    tagged by their hash: the image ``hydra images build --server`` made when it has the same
    dependencies, else built once (locally, no registry); reused after that."""
    client = docker_client()
    tag = f"{SERVER_REPOSITORY}:{SERVER_TAG_PREFIX}{dependencies_hash()}"
    if _exists(client, tag):
        return tag
    released = f"{SERVER_REPOSITORY}:{__version__}"
    if _exists(client, released) and _same_dependencies(client, released):
        client.images.get(released).tag(SERVER_REPOSITORY, tag.split(":", 1)[1])
        return tag
    if not (REPO_ROOT / "pyproject.toml").is_file() or not (REPO_ROOT / "Dockerfile").is_file():
        raise ImageBuildError(
            f"the server image {tag} is missing and this installation has no Hydra checkout to build it from",
            hint=f"build it once from a checkout of the same version: `hydra images build --server`, then "
            f"`docker tag hydra-server:{__version__} {tag}`; or pass image= to HydraContainer",
        )
    import docker.errors

    build_server_image(settings, tag=tag)
    for image in client.images.list(name=SERVER_REPOSITORY):
        for old in image.tags:
            if old != tag and old.startswith(f"{SERVER_REPOSITORY}:{SERVER_TAG_PREFIX}"):
                with contextlib.suppress(docker.errors.APIError):  # in use by a container, or gone: keep it
                    client.images.remove(old, noprune=False)
    return tag


@functools.lru_cache(maxsize=8)
def image_package_dir(image: str) -> str:
    """Where ``image``'s Python imports hydra_sandbox from: the mount point for this process's code."""
    client = docker_client()
    script = "import hydra_sandbox, os; print(os.path.dirname(hydra_sandbox.__file__))"
    out = client.containers.run(
        image, ["-c", script], entrypoint=["python3"], remove=True, network_mode="none", labels=PROBE_LABEL
    )
    found = out.decode().strip()
    if not found.startswith("/"):
        raise ImageBuildError(f"{image} has no importable hydra_sandbox: {found[:200]!r}", hint="rebuild the image")
    return found
