"""The ``hydra`` command line. Exit codes: 0 ok, 1 failure, 2 bad configuration or input,
3 policy refusal, 4 workspace problem, 5 Docker or image problem, 6 unknown session,
7 illegal lifecycle transition, 8 journal or index problem, 130 interrupted."""

from __future__ import annotations

import typer
from rich.markup import escape

from hydra_sandbox.cli import (
    config_cmd,
    demo_cmd,
    embeddings_cmd,
    images_cmd,
    kubernetes_cmd,
    masking_cmd,
    ops_cmd,
    policies_cmd,
    profiles_cmd,
    serve_cmd,
    sessions_cmd,
)
from hydra_sandbox.cli.output import err_console
from hydra_sandbox.errors import HydraError

app = typer.Typer(
    name="hydra",
    help="Delegate work to Codex CLI agents, each in its own hardened Docker container.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(profiles_cmd.app, name="profiles")
app.add_typer(policies_cmd.app, name="policies")
app.add_typer(images_cmd.app, name="images")
app.add_typer(embeddings_cmd.app, name="embeddings")
app.add_typer(sessions_cmd.app, name="sessions")
app.add_typer(masking_cmd.app, name="masking")
app.add_typer(kubernetes_cmd.app, name="kubernetes")
app.command("serve")(serve_cmd.serve)
app.command("doctor")(ops_cmd.doctor)
app.command("search")(ops_cmd.search)
app.command("export")(ops_cmd.export)
app.command("import")(ops_cmd.import_)
app.command("prune")(ops_cmd.prune)
app.command("reindex")(ops_cmd.reindex)
app.command("gc")(ops_cmd.gc)
app.command("demo")(demo_cmd.demo)


def main() -> None:
    """Entry point: runs the app and turns Hydra errors into one red line and an exit code."""
    try:
        app(standalone_mode=False)
    except HydraError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except Exception as exc:  # usage errors: typer's bundled click, or click itself
        import click

        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            raise SystemExit(getattr(exc, "exit_code", 2)) from None
        raise
