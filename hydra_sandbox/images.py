"""Building Hydra's images locally: no registry is needed.

* the base image: a Debian bookworm root built with ``debootstrap --variant=minbase`` and
  ``docker import``-ed (skipped when ``HYDRA_BASE_IMAGE`` names one, or the tag already exists);
* the agent image (``images/agent/Dockerfile``): the real Codex CLI binary from the npm package
  ``@openai/codex``, staged on the host and copied in.

Every step is skipped when its result is already there: an image carries the hash of what it was
built from (``hydra.build-hash``), so an unchanged Dockerfile, binary and base is not rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hydra_sandbox import __version__
from hydra_sandbox.errors import ImageBuildError, RuntimeUnavailableError
from hydra_sandbox.image_tags import agent_image_tags
from hydra_sandbox.settings import REPO_ROOT, HydraSettings

LOCAL_BASE_TAG = "hydra-local/debian:bookworm"
Progress = Callable[[str], None]


class BuiltImage(BaseModel):
    tag: str
    size_bytes: int
    skipped: bool
    seconds: float


def _platform_package() -> tuple[str, str]:
    machine = platform.machine().lower()
    if machine in {"x86_64", "amd64"}:
        return "codex-linux-x64", "x86_64-unknown-linux-musl"
    if machine in {"aarch64", "arm64"}:
        return "codex-linux-arm64", "aarch64-unknown-linux-musl"
    raise ImageBuildError(f"no Codex binary for this machine ({machine})", hint="use x86_64 or arm64 Linux")


def _run_step(argv: list[str], failed: str, hint: str, *, made: Path | None = None) -> None:
    """Run one build step; when it fails (or does not make ``made``), its last output lines and ``hint``."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0 or (made is not None and not made.is_file()):
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise ImageBuildError(f"{failed}:\n{tail}", hint=hint)


def stage_codex(version: str, cache_dir: Path, progress: Progress = lambda _m: None) -> Path:
    """The static Codex binary of ``version``, installed from npm into ``cache_dir`` once."""
    package, triple = _platform_package()
    root = cache_dir / f"codex-{version}"
    binary = root / "node_modules" / "@openai" / package / "vendor" / triple / "bin" / "codex"
    if not binary.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise ImageBuildError(
                "npm is not installed; it is needed once to fetch the Codex CLI",
                hint="apt-get install npm, then run `hydra images build` again",
            )
        progress(f"installing @openai/codex@{version} with npm")
        root.mkdir(parents=True, exist_ok=True)
        _run_step(
            [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(root), f"@openai/codex@{version}"],
            f"npm could not install @openai/codex@{version}",
            "check that the npm registry is reachable and the version exists",
            made=binary,
        )
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or version not in out.stdout:
        raise ImageBuildError(
            f"staged Codex binary {binary} does not run or is not {version}: {out.stdout!r}",
            hint=f"delete {root} and run `hydra images build` again",
        )
    return binary


def _apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (never written into code)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    raise ImageBuildError(
        "cannot find a Debian mirror in /etc/apt/sources.list(.d)",
        hint="set HYDRA_BASE_IMAGE to an existing Debian bookworm image instead",
    )


def _docker_client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as exc:
        raise RuntimeUnavailableError(
            f"cannot reach the Docker daemon: {exc}", hint="start dockerd (scripts/setup does) or set DOCKER_HOST"
        ) from None


def _image(client: Any, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def ensure_base_image(client: Any, tag: str = LOCAL_BASE_TAG, progress: Progress = lambda _m: None) -> str:
    """A Debian bookworm base image under ``tag``, built with debootstrap when it does not exist."""
    if _image(client, tag) is not None:
        return tag
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise ImageBuildError(
            "debootstrap is not installed; it builds the local base image",
            hint="apt-get install debootstrap, or set HYDRA_BASE_IMAGE to a bookworm image",
        )
    mirror = _apt_mirror()
    progress("building the Debian bookworm base image with debootstrap (about 30 s)")
    with tempfile.TemporaryDirectory(prefix="hydra-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run_step(
            [debootstrap, "--variant=minbase", "--include=ca-certificates", "bookworm", str(rootfs), mirror],
            "debootstrap failed",
            "check that the apt mirror is reachable",
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True, check=False
        )
        tar.wait()
        if imported.returncode != 0:
            raise ImageBuildError(f"docker import of the base image failed: {imported.stderr.strip()}")
    return tag


def _hash(*parts: bytes | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(part)
    return digest.hexdigest()[:16]


def _build(client: Any, context: Path, tags: list[str], buildargs: dict[str, str], progress: Progress) -> None:
    log: list[str] = []
    for chunk in client.api.build(
        path=str(context), tag=tags[0], buildargs=buildargs, rm=True, forcerm=True, decode=True, pull=False
    ):
        if "stream" in chunk:
            line = chunk["stream"].rstrip()
            if line:
                log.append(line)
                if line.startswith("Step "):
                    progress(line)
        if "error" in chunk:
            tail = "\n".join(log[-15:])
            raise ImageBuildError(
                f"building {tags[0]} failed: {chunk['error'].strip()}\n{tail}", hint="see the build output above"
            )
    image = client.images.get(tags[0])
    for extra in tags[1:]:
        repo, _, tag = extra.rpartition(":")
        image.tag(repo, tag)


def build_agent_image(settings: HydraSettings, progress: Progress = lambda _m: None, force: bool = False) -> BuiltImage:
    started = time.monotonic()
    tags = agent_image_tags(settings.agent_image, settings.codex_version, __version__)  # refused before any work
    client = _docker_client()
    base = settings.base_image or ensure_base_image(client, progress=progress)
    base_image = _image(client, base)
    if base_image is None:
        raise ImageBuildError(f"base image {base} not found", hint="unset HYDRA_BASE_IMAGE to build one locally")
    binary = stage_codex(settings.codex_version, settings.cache_dir, progress)
    dockerfile = settings.images_dir / "agent" / "Dockerfile"
    entry = settings.images_dir / "agent" / "hydra-agent-entry"
    build_hash = _hash(dockerfile, entry, binary, base_image.id.encode(), __version__.encode())
    existing = _image(client, settings.agent_image)
    if not force and existing is not None and existing.labels.get("hydra.build-hash") == build_hash:
        return BuiltImage(
            tag=settings.agent_image,
            size_bytes=existing.attrs.get("Size", 0),
            skipped=True,
            seconds=time.monotonic() - started,
        )
    with tempfile.TemporaryDirectory(prefix="hydra-agent-build-") as tmp:
        context = Path(tmp)
        shutil.copy2(dockerfile, context / "Dockerfile")
        shutil.copy2(entry, context / "hydra-agent-entry")
        os.chmod(context / "hydra-agent-entry", 0o755)  # an installed wheel need not keep the mode bits
        try:
            os.link(binary, context / "codex")
        except OSError:
            shutil.copy2(binary, context / "codex")
        progress(f"building {settings.agent_image} from {base}")
        _build(
            client,
            context,
            tags,
            {
                "BASE_IMAGE": base,
                "CODEX_VERSION": settings.codex_version,
                "HYDRA_VERSION": __version__,
                "BUILD_HASH": build_hash,
            },
            progress,
        )
    image = client.images.get(settings.agent_image)
    with contextlib.suppress(Exception):
        client.images.prune(filters={"dangling": True})
    return BuiltImage(
        tag=settings.agent_image,
        size_bytes=image.attrs.get("Size", 0),
        skipped=False,
        seconds=time.monotonic() - started,
    )


def build_server_image(
    settings: HydraSettings, progress: Progress = lambda _m: None, tag: str = f"hydra-server:{__version__}"
) -> BuiltImage:
    """The top-level Dockerfile (``hydra serve``), with this package's wheels staged on the host. The
    wheel carries the built-in profiles and policies; the image is built from a source checkout."""
    started = time.monotonic()
    if not (REPO_ROOT / "pyproject.toml").is_file() or not (REPO_ROOT / "Dockerfile").is_file():
        raise ImageBuildError(
            f"the server image is built from a source checkout, and {REPO_ROOT} is not one",
            hint="run `hydra images build --server` from a clone of Hydra's repository (after `pip install -e .`)",
        )
    client = _docker_client()
    base = settings.base_image or ensure_base_image(client, progress=progress)
    with tempfile.TemporaryDirectory(prefix="hydra-server-build-") as tmp:
        context = Path(tmp)
        progress("building wheels for the server image (pip wheel)")
        _run_step(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(context / "wheels"), str(REPO_ROOT)],
            "pip wheel failed",
            "check that the package index is reachable",
        )
        shutil.copy2(REPO_ROOT / "Dockerfile", context / "Dockerfile")
        progress(f"building {tag} from {base}")
        _build(client, context, [tag], {"BASE_IMAGE": base}, progress)
    image = client.images.get(tag)
    return BuiltImage(tag=tag, size_bytes=image.attrs.get("Size", 0), skipped=False, seconds=time.monotonic() - started)
