"""``hydra profiles list|show|validate``."""

from __future__ import annotations

import typer

from hydra_sandbox.cli.catalog_cmds import CatalogCommands
from hydra_sandbox.cli.output import console
from hydra_sandbox.profiles import Profile, ProfileCatalog
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="List, show and validate agent profiles.", no_args_is_help=True)


def _catalog() -> ProfileCatalog:
    return ProfileCatalog(load_settings().profile_dirs)


def _describe(profile: Profile) -> None:
    console.print(f"[bold]{profile.id}[/] — {profile.title}\n{profile.description}\n")
    console.print(f"[bold]persona:[/] {profile.persona}")
    console.print(f"[bold]policy:[/] {profile.policy}   [bold]read-only:[/] {profile.read_only}")
    console.print("[bold]goals:[/]\n" + "\n".join(f"  - {g}" for g in profile.goalset))
    console.print(
        "[bold]checklist:[/]\n"
        + "\n".join(f"  - {i.id}: {i.description} ({i.rule.kind})" for i in profile.checklist_template)
    )


CatalogCommands(
    noun="profile",
    plural="profiles",
    model=Profile,
    catalog=_catalog,
    columns=["id", "title", "policy", "description"],
    row=lambda p: (p.id, p.title, p.policy, p.description),
    describe=_describe,
).register(app)
