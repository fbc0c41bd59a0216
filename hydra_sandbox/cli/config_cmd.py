"""``hydra config show``: the effective settings, secrets masked."""

from __future__ import annotations

import typer

from hydra_sandbox.cli.output import JSON_HELP, print_json, print_table
from hydra_sandbox.settings import HydraSettings, env_file, load_settings

app = typer.Typer(help="Inspect Hydra's configuration.", no_args_is_help=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Print every setting Hydra reads (environment, .env and defaults merged); secrets are masked."""
    data = load_settings().masked_dump()
    if as_json:
        print_json(data)
        return
    print_table(
        f"Hydra settings: environment, then {env_file()} (HYDRA_ENV_FILE), then defaults",
        ["setting", "variable", "value"],
        [(k, HydraSettings.variable(k), v) for k, v in data.items()],
    )
