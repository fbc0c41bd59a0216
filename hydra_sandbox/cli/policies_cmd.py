"""``hydra policies list|show|validate|explain``."""

from __future__ import annotations

from pathlib import Path

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, fail, print_json, print_table
from hydra_sandbox.errors import HydraError
from hydra_sandbox.policy import Policy, PolicyCatalog, explain
from hydra_sandbox.settings import load_settings
from hydra_sandbox.yaml_models import load_yaml_model

app = typer.Typer(help="List, show, validate and explain directory/network/resource policies.", no_args_is_help=True)


def _catalog() -> PolicyCatalog:
    return PolicyCatalog(load_settings().policy_dirs)


@app.command("list")
def list_policies(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List every policy; broken files are listed with their error."""
    good, bad = _catalog().load_all()
    if as_json:
        print_json({"policies": list(good.values()), "errors": {k: str(v) for k, v in bad.items()}})
        return
    print_table(
        "Policies",
        ["name", "network", "cpus", "memory", "timeout", "description"],
        [
            (
                p.name,
                p.network.mode,
                p.resources.cpus,
                f"{p.resources.memory_mb} MB",
                f"{p.resources.timeout_s} s",
                p.description,
            )
            for p in good.values()
        ],
    )
    for name, error in bad.items():
        console.print(f"[red]broken policy {name}:[/] {error}")
    if bad:
        raise typer.Exit(2)


@app.command("show")
def show(name: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show one policy."""
    policy = _catalog().get(name)
    if as_json:
        print_json(policy)
        return
    console.print_json(policy.model_dump_json())


@app.command("validate")
def validate(paths: list[Path] = typer.Argument(None, help="Policy files; default: every policy.")) -> None:
    """Validate policy files; prints each problem with its file and field and exits 2 on any."""
    targets = paths or [_catalog().path(n) for n in _catalog().names()]
    errors = 0
    for path in targets:
        try:
            load_yaml_model(Policy, path)
            console.print(f"[green]ok[/] {path}")
        except HydraError as exc:
            errors += 1
            console.print(f"[red]invalid[/] {exc}")
    if errors:
        fail(f"{errors} invalid policy file(s)", code=2)


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
