"""The gateway image (``images/gateway/Dockerfile``): what a gateway container beside a remote agent runs
(:mod:`hydra_sandbox.sandbox.gateway_process`), and nothing else.

Lean on purpose: the build stages only the Python packages that module imports, found by importing it in a
fresh interpreter and mapping its modules to their installed distributions, and copies them onto Debian's
``python3`` (same minor version as the interpreter that stages them; the build refuses another). No
package index is needed. Like the agent image it carries ``hydra.build-hash`` and an unchanged build is
skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra_sandbox import __version__
from hydra_sandbox.errors import ImageBuildError
from hydra_sandbox.images import BuiltImage, Progress, _build, _docker_client, _image, ensure_base_image
from hydra_sandbox.settings import HydraSettings

GATEWAY_MODULE = "hydra_sandbox.sandbox.gateway_process"
PACKAGE = "hydra_sandbox"
PYTHON_MINOR = (3, 11)
"""Debian bookworm's python3: the staged packages' compiled parts must match it."""

_LIST_MODULES = f"import sys, {GATEWAY_MODULE}; print('\\n'.join(sorted({{m.split('.')[0] for m in sys.modules}})))"


def gateway_imports() -> list[str]:
    """The top-level modules a fresh interpreter has loaded once it imported the gateway process."""
    result = subprocess.run([sys.executable, "-c", _LIST_MODULES], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"cannot import {GATEWAY_MODULE}: {result.stderr.strip()[-2000:]}")
    return result.stdout.split()


def gateway_distributions(modules: list[str]) -> list[str]:
    """The installed distributions (other than Hydra itself) that provide ``modules``."""
    providers = importlib.metadata.packages_distributions()
    found = {dist for module in modules if module != PACKAGE for dist in providers.get(module, [])}
    return sorted(found - {"hydra-sandbox", "setuptools", "pip"})  # setuptools: only its distutils hook (.pth)


def _copy_distribution(name: str, site: Path) -> None:
    dist = importlib.metadata.distribution(name)
    for file in dist.files or []:
        if "__pycache__" in file.parts or file.parts[0] in {"..", "bin"} or file.suffix == ".pyc":
            continue
        source = Path(str(dist.locate_file(file)))
        if source.is_file():
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def stage_site(site: Path) -> list[str]:
    """Copy Hydra's package and the distributions the gateway imports into ``site``; their names."""
    if sys.version_info[:2] != PYTHON_MINOR:
        raise ImageBuildError(
            f"the gateway image runs Python {PYTHON_MINOR[0]}.{PYTHON_MINOR[1]} (Debian bookworm) and its compiled "
            f"packages are staged from this interpreter, which is {sys.version_info[0]}.{sys.version_info[1]}",
            hint="run `hydra images build` from a Python 3.11 environment",
        )
    names = gateway_distributions(gateway_imports())
    for name in names:
        _copy_distribution(name, site)
    package = Path(__file__).resolve().parent
    shutil.copytree(package, site / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "builtin"))
    return names


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_gateway_image(
    settings: HydraSettings, progress: Progress = lambda _m: None, force: bool = False
) -> BuiltImage:
    """Build ``settings.gateway_image`` (skipped when nothing it is made of changed)."""
    started = time.monotonic()
    client = _docker_client()
    base = settings.base_image or ensure_base_image(client, progress=progress)
    base_image = _image(client, base)
    if base_image is None:
        raise ImageBuildError(f"base image {base} not found", hint="unset HYDRA_BASE_IMAGE to build one locally")
    dockerfile = settings.images_dir / "gateway" / "Dockerfile"
    with tempfile.TemporaryDirectory(prefix="hydra-gateway-build-") as tmp:
        context = Path(tmp)
        progress("staging the gateway's Python packages")
        names = stage_site(context / "site")
        shutil.copy2(dockerfile, context / "Dockerfile")
        parts = [_tree_hash(context), base_image.id, __version__, json.dumps(names)]
        build_hash = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
        existing = _image(client, settings.gateway_image)
        if not force and existing is not None and existing.labels.get("hydra.build-hash") == build_hash:
            size, seconds = existing.attrs.get("Size", 0), time.monotonic() - started
            return BuiltImage(tag=settings.gateway_image, size_bytes=size, skipped=True, seconds=seconds)
        progress(f"building {settings.gateway_image} from {base}")
        args = {"BASE_IMAGE": base, "HYDRA_VERSION": __version__, "BUILD_HASH": build_hash}
        _build(client, context, [settings.gateway_image], args, progress)
    image = client.images.get(settings.gateway_image)
    with contextlib.suppress(Exception):
        client.images.prune(filters={"dangling": True})
    size = image.attrs.get("Size", 0)
    return BuiltImage(tag=settings.gateway_image, size_bytes=size, skipped=False, seconds=time.monotonic() - started)
