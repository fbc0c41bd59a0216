"""``hydra policies list|show|validate|explain``."""

from __future__ import annotations

from pathlib import Path

import typer

from hydra_sandbox.cli.catalog_cmds import CatalogCommands
from hydra_sandbox.cli.output import JSON_HELP, console, print_json
from hydra_sandbox.policy import Policy, PolicyCatalog, explain
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="List, show, validate and explain directory/network/resource policies.", no_args_is_help=True)


def _catalog() -> PolicyCatalog:
    return PolicyCatalog(load_settings().policy_dirs)


def _describe(policy: Policy) -> None:
    console.print_json(policy.model_dump_json())


CatalogCommands(
    noun="policy",
    plural="policies",
    model=Policy,
    catalog=_catalog,
    columns=["name", "network", "cpus", "memory", "timeout", "description"],
    row=lambda p: (
        p.name,
        p.network.mode,
        p.resources.cpus,
        f"{p.resources.memory_mb} MB",
        f"{p.resources.timeout_s} s",
        p.description,
    ),
    describe=_describe,
).register(app)


@app.command("explain")
def explain_cmd(
    name: str,
    workspace: Path = typer.Option(..., "--workspace", "-w", help="Directory the agent would work on."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    limit: int = typer.Option(200, help="Files listed per group on a terminal (all with --json)."),
) -> None:
    """Show which files an agent under policy NAME would see, not see, and may write."""
    result = explain(_catalog().get(name), workspace)
    if as_json:
        print_json(result)
        return
    groups = [
        ("writable", "green", result.writable),
        ("read-only", "yellow", result.read_only),
        ("hidden", "red", result.hidden),
    ]
    for title, colour, paths in groups:
        console.print(f"[bold {colour}]{title}[/] ({len(paths)})")
        for path in paths[:limit]:
            console.print(f"  {path}", markup=False)
        if len(paths) > limit:
            console.print(f"  … {len(paths) - limit} more (use --json for all)")
