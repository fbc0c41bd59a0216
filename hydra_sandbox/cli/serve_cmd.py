"""``hydra serve``: run the MCP server over stdio (default) or streamable HTTP."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from typing import Literal

import typer

from hydra_sandbox.cli.output import err_console
from hydra_sandbox.heap_scrub import scrub_heap
from hydra_sandbox.server_lock import ServerLock
from hydra_sandbox.settings import load_settings


def serve(
    transport: str = typer.Option(None, help="stdio (default) or http. Env: HYDRA_TRANSPORT."),
    host: str = typer.Option(None, help="HTTP bind address (default 127.0.0.1). Env: HYDRA_HTTP_HOST."),
    port: int = typer.Option(None, help="HTTP port (default 8765). Env: HYDRA_HTTP_PORT."),
) -> None:
    """Run Hydra's MCP server. stdio prints nothing but protocol on stdout; logs go to stderr.

    Over HTTP it binds 127.0.0.1 unless told otherwise, requires a bearer token (HYDRA_HTTP_TOKEN, or a
    generated one printed on stderr) and rejects requests whose Origin is not the server's own."""
    overrides: dict[str, object] = {}
    if transport:
        overrides["transport"] = transport
    if host:
        overrides["http_host"] = host
    if port:
        overrides["http_port"] = port
    settings = load_settings(**overrides)
    logging.basicConfig(stream=sys.stderr, level=settings.log_level)
    if not settings.chroma_url:
        scrub_heap()  # before any agent output is read: see heap_scrub
    mode: Literal["stdio", "http"] = settings.transport
    token = settings.http_token.get_secret_value() if settings.http_token else secrets.token_urlsafe(32)
    from hydra_sandbox.mcp.app import run

    with ServerLock(settings.data_home, mode, settings.http_host, settings.http_port, token):
        if mode == "http":
            url = f"http://{settings.http_host}:{settings.http_port}/mcp"
            err_console.print(f"Hydra MCP server on [bold]{url}[/] (streamable HTTP)")
            if not settings.http_token:
                err_console.print(f"bearer token (generated; set HYDRA_HTTP_TOKEN to choose one): {token}")
            err_console.print("Connect Codex: see README.md, 'Connecting Codex'. Stop with Ctrl-C.")
            err_console.print(json.dumps({"url": url}), style="dim")
        run(settings, mode, token)
