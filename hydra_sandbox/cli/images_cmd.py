"""``hydra images build`` and ``hydra images copy`` (to another Docker engine, without a registry)."""

from __future__ import annotations

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, print_json
from hydra_sandbox.gateway_image import build_gateway_image
from hydra_sandbox.image_copy import CopiedImage, copy_agent_image, copy_gateway_image, target_engines
from hydra_sandbox.images import build_agent_image, build_server_image
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="Build Hydra's container images locally (no registry needed).", no_args_is_help=True)


@app.command("build")
def build(
    force: bool = typer.Option(False, help="Rebuild even when nothing changed."),
    server: bool = typer.Option(False, "--server", help="Also build the server image (top-level Dockerfile)."),
    gateway: bool = typer.Option(
        False, "--gateway", help="Also build the gateway image (egress beside agents on a remote engine)."
    ),
    docker_host: list[str] = typer.Option(
        [],
        "--docker-host",
        help="Then copy the agent and gateway images to this engine (repeatable; implies --gateway); "
        "see `hydra images copy`.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Stage the Codex CLI, build the base image if needed, then the agent image (and the gateway image
    with --gateway or --docker-host). Skips finished work."""
    settings = load_settings()
    engines = target_engines(settings, docker_host) if docker_host else []  # refused before any work
    with console.status("building images…") as status:
        result = build_agent_image(settings, progress=lambda m: status.update(m), force=force)
        server_image = build_server_image(settings, progress=lambda m: status.update(m)) if server else None
        gateway_image = (
            build_gateway_image(settings, progress=lambda m: status.update(m), force=force)
            if gateway or engines
            else None
        )
        copied = copy_agent_image(settings, engines, progress=lambda m: status.update(m)) if engines else []
        copied += copy_gateway_image(settings, engines, progress=lambda m: status.update(m)) if engines else []
    extra = [image for image in (server_image, gateway_image) if image is not None]
    if as_json:
        copies = [{"engine": url, **c.model_dump()} for url, c in copied]
        print_json([result, *extra, *copies] if extra or copied else result)
        return
    for built in [result, *extra]:
        verb = "up to date" if built.skipped else f"built in {built.seconds:.0f} s"
        console.print(f"[green]{built.tag}[/] {verb} ({built.size_bytes / 1e6:.0f} MB)")
    _print_copies(copied)


@app.command("copy")
def copy(
    to: list[str] = typer.Option(
        [],
        "--to",
        help="Engine URL (repeatable): tcp://HOST:2376, ssh://HOST, unix:///path; default: HYDRA_DOCKER_HOST.",
    ),
    gateway: bool = typer.Option(
        True, "--gateway/--no-gateway", help="Also copy the gateway image (needed to run agents on the engine)."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Copy the agent image (and the gateway image, built with `hydra images build --gateway`) from the
    local engine to other Docker engines (docker save, streamed into docker load there). TLS files for
    tcp:// come from HYDRA_DOCKER_TLS_DIR. An engine that already has the same image is skipped."""
    settings = load_settings()
    engines = target_engines(settings, to)
    with console.status("copying images…") as status:
        copied = copy_agent_image(settings, engines, progress=lambda m: status.update(m))
        if gateway:
            copied += copy_gateway_image(settings, engines, progress=lambda m: status.update(m))
    if as_json:
        print_json([{"engine": url, **c.model_dump()} for url, c in copied])
        return
    _print_copies(copied)


def _print_copies(copied: list[tuple[str, CopiedImage]]) -> None:
    for url, done in copied:
        verb = "already there" if done.skipped else f"copied in {done.seconds:.0f} s ({done.bytes_sent / 1e6:.0f} MB)"
        console.print(f"[green]{done.tags[0]}[/] on {url}: {verb}")
