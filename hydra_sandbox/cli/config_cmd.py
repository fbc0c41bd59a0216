"""``hydra config show``: the effective settings, secrets masked."""

from __future__ import annotations

import typer

from hydra_sandbox.cli.output import JSON_HELP, print_json, print_table
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="Inspect Hydra's configuration.", no_args_is_help=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Print the effective settings (environment, .env and defaults merged); secrets are masked."""
    data = load_settings().masked_dump()
    if as_json:
        print_json(data)
        return
    print_table(
        "Hydra settings",
        ["setting", "variable", "value"],
        [(k, f"HYDRA_{k.upper()}", v) for k, v in data.items()],
    )
