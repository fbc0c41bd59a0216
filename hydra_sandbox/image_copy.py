"""Copying an image from one Docker engine to another without a registry: ``docker save`` on the source
streamed into ``docker load`` on the destination through docker-py, never held whole in memory or on
disk. An image the destination already has under the same id is not sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from hydra_sandbox import __version__
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.docker_hosts import EngineConfig, resolve_engines
from hydra_sandbox.errors import ConfigError, ImageBuildError, RuntimeUnavailableError
from hydra_sandbox.image_tags import agent_image_tags
from hydra_sandbox.settings import HydraSettings

Progress = Callable[[str], None]
_REPORT_EVERY = 32 * 1024 * 1024


class CopiedImage(BaseModel):
    tags: list[str]
    image_id: str
    bytes_sent: int
    skipped: bool
    seconds: float


def _image(client: Any, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def counted(chunks: Iterable[bytes], sent: list[int], progress: Progress, what: str, total: int) -> Iterator[bytes]:
    """``chunks`` unchanged, adding their size to ``sent[0]`` and reporting every 32 MiB."""
    next_report = _REPORT_EVERY
    for chunk in chunks:
        sent[0] += len(chunk)
        if sent[0] >= next_report:
            share = f" of ~{total / 1e6:.0f} MB" if total else ""
            progress(f"sending {what}: {sent[0] / 1e6:.0f} MB{share}")
            next_report += _REPORT_EVERY
        yield chunk


def load_errors(answers: Iterable[dict[str, Any]]) -> list[str]:
    """The error lines of a ``load`` answer stream (it reports a broken archive there, not in its status)."""
    failed = [a for a in answers if "error" in a or "errorDetail" in a]
    return [str(a.get("error") or a.get("errorDetail", {}).get("message")) for a in failed]


def copy_image(source: Any, destination: Any, tags: list[str], progress: Progress = lambda _m: None) -> CopiedImage:
    """Put the image ``tags[0]`` names on ``source`` onto ``destination`` under every tag of ``tags``."""
    started = time.monotonic()
    image = _image(source, tags[0])
    if image is None:
        raise RuntimeUnavailableError(
            f"image {tags[0]} is not on the source engine, so there is nothing to copy",
            hint="build it first: `hydra images build`",
        )
    there = _image(destination, tags[0])
    sent = [0]
    if there is None or there.id != image.id:
        progress(f"copying {tags[0]} ({image.attrs.get('Size', 0) / 1e6:.0f} MB unpacked)")
        stream = counted(source.api.get_image(tags[0]), sent, progress, tags[0], int(image.attrs.get("Size", 0)))
        errors = load_errors(destination.api.load_image(stream))
        there = _image(destination, tags[0])
        if errors or there is None or there.id != image.id:
            raise ImageBuildError(
                f"loading {tags[0]} into the destination engine failed: "
                + ("; ".join(errors) or "the image is not there afterwards"),
                hint="check the destination engine's free disk space and its log",
            )
    for extra in tags[1:]:
        repository, _, tag = extra.rpartition(":")
        there.tag(repository, tag)
    return CopiedImage(
        tags=tags, image_id=str(image.id), bytes_sent=sent[0], skipped=sent[0] == 0, seconds=time.monotonic() - started
    )


def target_engines(settings: HydraSettings, to: list[str]) -> list[EngineConfig]:
    """The engines ``--to`` names (TLS files from ``HYDRA_DOCKER_TLS_DIR``), else every engine of
    ``HYDRA_DOCKER_HOST``; refused when neither names one."""
    hosts = ",".join(to) if to else settings.docker_host
    engines = resolve_engines(hosts, settings.docker_tls_dir, settings.docker_ssh_config)
    if not engines:
        raise ConfigError(
            "no engine to copy to: --to is not given and HYDRA_DOCKER_HOST is not set",
            hint="pass --to tcp://HOST:2376 (with HYDRA_DOCKER_TLS_DIR), --to ssh://HOST or --to unix:///path",
        )
    return engines


def copy_agent_image(
    settings: HydraSettings, engines: list[EngineConfig], progress: Progress = lambda _m: None
) -> list[tuple[str, CopiedImage]]:
    """The agent image of ``settings`` (all its tags), from the local engine onto each of ``engines``."""
    tags = agent_image_tags(settings.agent_image, settings.codex_version, __version__)
    source = engine_client(None)
    copied = []
    for engine in engines:
        progress(f"{engine.url}: checking {tags[0]}")
        copied.append((engine.url, copy_image(source, engine_client(engine), tags, progress)))
    return copied


def copy_gateway_image(
    settings: HydraSettings, engines: list[EngineConfig], progress: Progress = lambda _m: None
) -> list[tuple[str, CopiedImage]]:
    """The gateway image (egress beside agents on a remote engine) onto each of ``engines``; refused, with
    the fix, when it was not built here."""
    source = engine_client(None)
    if _image(source, settings.gateway_image) is None:
        raise ImageBuildError(
            f"{settings.gateway_image} is not on the local engine, so it cannot be copied",
            hint="run `hydra images build --gateway` first",
        )
    copied = []
    for engine in engines:
        progress(f"{engine.url}: checking {settings.gateway_image}")
        copied.append((engine.url, copy_image(source, engine_client(engine), [settings.gateway_image], progress)))
    return copied
