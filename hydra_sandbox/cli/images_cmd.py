"""``hydra images build``."""

from __future__ import annotations

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, print_json
from hydra_sandbox.images import build_agent_image, build_server_image
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="Build Hydra's container images locally (no registry needed).", no_args_is_help=True)


@app.command("build")
def build(
    force: bool = typer.Option(False, help="Rebuild even when nothing changed."),
    server: bool = typer.Option(False, "--server", help="Also build the server image (top-level Dockerfile)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Stage the Codex CLI, build the base image if needed, then the agent image. Skips finished work."""
    settings = load_settings()
    with console.status("building images…") as status:
        result = build_agent_image(settings, progress=lambda m: status.update(m), force=force)
        server_image = build_server_image(settings, progress=lambda m: status.update(m)) if server else None
    if as_json:
        print_json([result, server_image] if server_image else result)
        return
    for built in filter(None, [result, server_image]):
        verb = "up to date" if built.skipped else f"built in {built.seconds:.0f} s"
        console.print(f"[green]{built.tag}[/] {verb} ({built.size_bytes / 1e6:.0f} MB)")
