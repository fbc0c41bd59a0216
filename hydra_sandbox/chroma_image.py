"""Build a local Chroma server image (``builtin/images/chroma``) for tests and shared-index deployments.

No image registry is reachable and pip over TLS does not work inside containers, so the image is built
from a local Debian base and chromadb is installed from wheels staged on the host: ``pip download`` of
``chromadb==<the version installed here>`` and its dependencies for CPython 3.11 manylinux x86_64
(bookworm's python3), cached under the user cache directory so later builds are offline.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hydra_sandbox.errors import ImageBuildError, StoreError
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_VERSION
from hydra_sandbox.settings import HydraSettings, load_settings

DEFAULT_BASE_IMAGE = "hydra-local/debian:bookworm"
_PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
)
_COMPLETE = ".complete"


def chromadb_version() -> str:
    return importlib.metadata.version("chromadb")


def default_tag() -> str:
    return f"hydra-chroma:{chromadb_version()}"


def default_wheel_dir(cache_dir: Path, version: str) -> Path:
    return cache_dir / "chroma-wheels" / version


def stage_wheels(dest: Path, version: str, *, timeout_s: float = 900.0) -> Path:
    """Download chromadb ``version`` and its dependencies as cp311 manylinux wheels into ``dest``.

    Skipped when ``dest`` already holds a complete download. Uses the pip of this interpreter and its
    configured index.
    """
    dest = Path(dest)
    if (dest / _COMPLETE).is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", f"chromadb=={version}", "--only-binary=:all:"]
    for platform in _PLATFORMS:
        argv += ["--platform", platform]
    argv += ["--python-version", "3.11", "--implementation", "cp"]
    argv += ["--abi", "cp311", "--abi", "abi3", "--abi", "none", "--dest", str(dest), "--quiet"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(
            f"staging chromadb {version} wheels into {dest} took over {timeout_s} s",
            hint="check pip's index configuration, or stage the wheels there yourself with `pip download`",
        ) from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ImageBuildError(
            f"staging chromadb {version} wheels into {dest} failed: {' / '.join(tail)}",
            hint="check that pip can reach its index from this machine, or stage the wheels there with "
            "`pip download chromadb==VERSION --only-binary=:all: --python-version 3.11 --platform "
            "manylinux2014_x86_64 -d DIR`",
        )
    (dest / _COMPLETE).write_text(version + "\n")
    return dest


def _image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_chroma_image(
    client: Any,
    base_image: str = DEFAULT_BASE_IMAGE,
    tag: str | None = None,
    *,
    wheel_dir: Path | None = None,
    settings: HydraSettings | None = None,
) -> str:
    """Build the Chroma server image unless ``tag`` already exists; returns the tag.

    ``client`` is a ``docker.DockerClient``. The image runs ``chroma run --host 0.0.0.0 --port 8000
    --path /data`` as uid 1000. Its build context and wheel cache come from ``settings``
    (``images_dir``, ``cache_dir``; read from the environment when not given).
    """
    import docker.errors

    version = chromadb_version()
    settings = settings or load_settings()
    image_dir = settings.images_dir / "chroma"
    tag = tag or default_tag()
    if _image_exists(client, tag):
        return tag
    if not _image_exists(client, base_image):
        raise ImageBuildError(
            f"base image {base_image} for the Chroma image is not present",
            hint="build the local Debian base first (debootstrap + `docker import`, see design notes) "
            "or pass another bookworm base image",
        )
    wheels = stage_wheels(wheel_dir or default_wheel_dir(settings.cache_dir, version), version)
    with tempfile.TemporaryDirectory(prefix="hydra-chroma-ctx-") as tmp:
        context = Path(tmp)
        shutil.copy2(image_dir / "Dockerfile", context / "Dockerfile")
        (context / "wheels").mkdir()
        for wheel in wheels.glob("*.whl"):
            shutil.copy2(wheel, context / "wheels" / wheel.name)
        try:
            client.images.build(
                path=str(context),
                tag=tag,
                buildargs={"BASE_IMAGE": base_image, "CHROMADB_VERSION": version},
                labels={LABEL_ROLE: "chroma", LABEL_VERSION: _hydra_version()},
                rm=True,
                forcerm=True,
            )
        except docker.errors.BuildError as exc:
            tail = [str(line.get("stream", line.get("error", ""))).strip() for line in exc.build_log][-8:]
            raise ImageBuildError(
                f"building {tag} from {image_dir} failed: {exc.msg}; last output: {' / '.join(tail)}",
                hint="check that the base image has working apt sources (apt over http must work)",
            ) from exc
        except docker.errors.APIError as exc:
            raise ImageBuildError(
                f"building {tag}: Docker refused ({exc.explanation or exc})",
                hint="check that the Docker daemon is running and has disk space",
            ) from exc
    return tag


def _hydra_version() -> str:
    from hydra_sandbox import __version__

    return __version__


def wait_for_chroma(url: str, timeout_s: float = 60.0) -> None:
    """Poll ``url``'s heartbeat until the Chroma server answers; StoreError at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/heartbeat", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise StoreError(
        f"Chroma server {url} did not answer its heartbeat within {timeout_s} s (last error: {last})",
        hint="check the container's logs (`docker logs`) and that the port is published",
    )
