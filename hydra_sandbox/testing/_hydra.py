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
from hydra_sandbox.errors import ImageBuildError, RuntimeUnavailableError
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.images import build_agent_image, build_server_image
from hydra_sandbox.mcp.app import build_server as _build_server
from hydra_sandbox.sandbox.backends import open_runtime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.settings import REPO_ROOT, HydraSettings, load_settings

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
    runtime = open_runtime(load_settings(data_home=data_home))  # the configured backend's
    report = await collect_garbage(runtime, keep_sessions=set(), home=home_label(data_home))
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


def _checkout_dockerfile() -> Path | None:
    dockerfile = REPO_ROOT / "Dockerfile"
    return dockerfile if (REPO_ROOT / "pyproject.toml").is_file() and dockerfile.is_file() else None


def image_key() -> str:
    """A hash of what the server image holds besides Hydra's own code: the version, the declared
    dependencies and (from a checkout) the Dockerfile. Hydra's code itself is mounted over the image's
    copy at run time (see :func:`image_package_dir`), so a code change needs no rebuild."""
    dockerfile = _checkout_dockerfile()
    recipe = dockerfile.read_bytes() if dockerfile is not None else b""
    return hashlib.sha256(_declared().encode() + b"\0" + recipe).hexdigest()[:12]


def _same_dependencies(client: Any, image: str) -> bool:
    """Whether ``image`` was built from these dependencies."""
    out = client.containers.run(
        image, ["-c", _REQUIRES], entrypoint=["python3"], remove=True, network_mode="none", labels=PROBE_LABEL
    )
    return bool(out.decode().strip() == _declared())


def _kit_images(client: Any) -> list[str]:
    prefix = f"{SERVER_REPOSITORY}:{SERVER_TAG_PREFIX}"
    return [t for image in client.images.list(name=SERVER_REPOSITORY) for t in image.tags if t.startswith(prefix)]


def ensure_server_image(settings: HydraSettings) -> str:
    """An image of the top-level Dockerfile (``hydra serve``) for this version, these dependencies and
    this Dockerfile, tagged by their hash: built once from a checkout (locally, no registry), then
    reused. Without a checkout (a wheel install), an existing kit image with the same dependencies."""
    client = docker_client()
    tag = f"{SERVER_REPOSITORY}:{SERVER_TAG_PREFIX}{image_key()}"
    if _exists(client, tag):
        return tag
    if _checkout_dockerfile() is None:
        for candidate in _kit_images(client):
            if _same_dependencies(client, candidate):
                return candidate
        raise ImageBuildError(
            f"no server image for Hydra {__version__} with these dependencies, and no checkout to build one from",
            hint="run a test with HydraContainer once from a checkout of the same version (it builds the image), "
            "or pass image= to HydraContainer",
        )
    import docker.errors

    build_server_image(settings, tag=tag)
    for old in _kit_images(client):
        if old != tag:
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
