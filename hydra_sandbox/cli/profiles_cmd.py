"""``hydra profiles list|show|validate``."""

from __future__ import annotations

from pathlib import Path

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, fail, print_json, print_table
from hydra_sandbox.errors import HydraError
from hydra_sandbox.profiles import Profile, ProfileCatalog
from hydra_sandbox.settings import load_settings
from hydra_sandbox.yaml_models import load_yaml_model

app = typer.Typer(help="List, show and validate agent profiles.", no_args_is_help=True)


def _catalog() -> ProfileCatalog:
    return ProfileCatalog(load_settings().profile_dirs)


@app.command("list")
def list_profiles(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List every profile; broken files are listed with their error, the rest stay usable."""
    good, bad = _catalog().load_all()
    if as_json:
        print_json({"profiles": list(good.values()), "errors": {k: str(v) for k, v in bad.items()}})
        return
    print_table(
        "Profiles",
        ["id", "title", "policy", "description"],
        [(p.id, p.title, p.policy, p.description) for p in good.values()],
    )
    for name, error in bad.items():
        console.print(f"[red]broken profile {name}:[/] {error}", markup=True)
    if bad:
        raise typer.Exit(2)


@app.command("show")
def show(profile_id: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show one profile after merging built-in and user files."""
    profile = _catalog().get(profile_id)
    if as_json:
        print_json(profile)
        return
    console.print(f"[bold]{profile.id}[/] — {profile.title}\n{profile.description}\n")
    console.print(f"[bold]persona:[/] {profile.persona}")
    console.print(f"[bold]policy:[/] {profile.policy}   [bold]read-only:[/] {profile.read_only}")
    console.print("[bold]goals:[/]\n" + "\n".join(f"  - {g}" for g in profile.goalset))
    console.print(
        "[bold]checklist:[/]\n"
        + "\n".join(f"  - {i.id}: {i.description} ({i.rule.kind})" for i in profile.checklist_template)
    )


@app.command("validate")
def validate(paths: list[Path] = typer.Argument(None, help="Profile files; default: every profile.")) -> None:
    """Validate profile files; prints each problem with its file and field and exits 2 on any."""
    if paths:
        errors = 0
        for path in paths:
            try:
                load_yaml_model(Profile, path)
                console.print(f"[green]ok[/] {path}")
            except HydraError as exc:
                errors += 1
                console.print(f"[red]invalid[/] {exc}")
        if errors:
            fail(f"{errors} invalid profile file(s)", code=2)
        return
    good, bad = _catalog().load_all()
    for pid in good:
        console.print(f"[green]ok[/] {pid}")
    for pid, problem in bad.items():
        console.print(f"[red]invalid[/] {pid}: {problem}")
    if bad:
        fail(f"{len(bad)} invalid profile(s)", code=2)
