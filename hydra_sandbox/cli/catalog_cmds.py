"""``list``, ``show`` and ``validate`` for a catalog of YAML definitions: written once, used by
``hydra profiles`` and ``hydra policies``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import typer
from pydantic import BaseModel

from hydra_sandbox.cli.output import JSON_HELP, console, fail, print_json, print_table
from hydra_sandbox.errors import ConfigError, HydraError
from hydra_sandbox.yaml_models import load_yaml_model

M = TypeVar("M", bound=BaseModel)


class Catalog(Protocol[M]):
    def get(self, name: str) -> M: ...

    def load_all(self) -> tuple[dict[str, M], dict[str, ConfigError]]: ...


@dataclass(frozen=True)
class CatalogCommands(Generic[M]):
    """What differs between the catalogs; everything else is the same code."""

    noun: str  # "profile"
    plural: str  # "profiles": the JSON key of `list --json` and the table title
    model: type[M]
    catalog: Callable[[], Catalog[M]]
    columns: Sequence[str]
    row: Callable[[M], Sequence[Any]]
    describe: Callable[[M], None]  # `show` on a terminal

    def register(self, app: typer.Typer) -> None:
        app.command("list", help=f"List every {self.noun}; broken files are listed with their error.")(self.list_items)
        app.command("show", help=f"Show one {self.noun} after merging built-in and user files.")(self.show_item)
        app.command("validate", help=self._validate_help())(self.validate_files)

    def _validate_help(self) -> str:
        return (
            f"Validate {self.noun} files (default: every {self.noun}); prints each problem with its file "
            "and field and exits 2 on any."
        )

    def list_items(self, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
        good, bad = self.catalog().load_all()
        if as_json:
            print_json({self.plural: list(good.values()), "errors": {k: str(v) for k, v in bad.items()}})
            return
        print_table(self.plural.capitalize(), self.columns, [self.row(item) for item in good.values()])
        for name, error in bad.items():
            console.print(f"[red]broken {self.noun} {name}:[/] {error}", markup=True)
        if bad:
            raise typer.Exit(2)

    def show_item(self, name: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
        item = self.catalog().get(name)
        if as_json:
            print_json(item)
            return
        self.describe(item)

    def validate_files(self, paths: list[Path] = typer.Argument(None, help="Files; default: the catalog.")) -> None:
        if paths:
            errors = 0
            for path in paths:
                try:
                    load_yaml_model(self.model, path)
                    console.print(f"[green]ok[/] {path}")
                except HydraError as exc:
                    errors += 1
                    console.print(f"[red]invalid[/] {exc}")
            if errors:
                fail(f"{errors} invalid {self.noun} file(s)", code=2)
            return
        good, bad = self.catalog().load_all()
        for name in good:
            console.print(f"[green]ok[/] {name}")
        for name, problem in bad.items():
            console.print(f"[red]invalid[/] {name}: {problem}")
        if bad:
            fail(f"{len(bad)} invalid {self.noun}(s)", code=2)
