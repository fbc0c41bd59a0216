"""Operator commands: doctor, search, export, import, prune, reindex, gc."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, fail, print_json, print_table
from hydra_sandbox.cli.remote import local_store, refuse_if_server_owns_store, server_call
from hydra_sandbox.settings import load_settings


def doctor(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Check Docker, the agent image, Codex inside it, the store and the embedding model."""
    from hydra_sandbox.doctor import run_checks

    checks = run_checks(load_settings())
    if as_json:
        print_json(checks)
    else:
        for check in checks:
            mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
            console.print(f"{mark} [bold]{check.name}[/]: {check.detail}")
            if check.fix:
                console.print(f"      fix: {check.fix}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _parse_age(text: str) -> timedelta:
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        fail(f"--older-than: {text!r} is not an age; write e.g. 30d, 12h or 90m", code=2)
    return timedelta(**{units[text[-1]]: int(text[:-1])})


def search(
    query: str,
    session: str | None = typer.Option(None, help="Only this session."),
    profile: str | None = typer.Option(None, help="Only this profile."),
    event_type: str | None = typer.Option(None, "--type", help="Only this event type (command, test, ...)."),
    parent: str | None = typer.Option(None, help="Only direct children of this session."),
    root: str | None = typer.Option(None, help="Only the delegation tree under this top-level session."),
    subtree: str | None = typer.Option(None, help="Only this session and its descendants."),
    status: str | None = typer.Option(None, help="Only sessions in this status (summaries: current status)."),
    depth: int | None = typer.Option(None, min=0, help="Only sessions at this delegation depth (0: top)."),
    since: str | None = typer.Option(None, help="From this ISO 8601 time, e.g. 2026-11-18T00:00:00Z."),
    until: str | None = typer.Option(None, help="Up to this ISO 8601 time."),
    limit: int = typer.Option(10, min=1, max=100),
    tag: list[str] = typer.Option([], "--tag", help="Only events with this tag (repeat: all of them)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Semantic search over everything recorded (through the running server when there is one)."""
    args = {
        "query": query,
        "session_id": session,
        "profile_id": profile,
        "event_type": event_type,
        "parent_session_id": parent,
        "root_session_id": root,
        "subtree_of": subtree,
        "session_status": status,
        "depth": depth,
        "since": since,
        "until": until,
        "limit": limit,
        "tags": tag or None,
    }
    result = server_call("search_context", {k: v for k, v in args.items() if v is not None})
    hits = result["hits"]
    if as_json:
        print_json(result)
        return
    print_table(
        f"Search: {query}",
        ["distance", "event", "type", "text"],
        [(f"{h['distance']:.3f}", h["id"], h["type"], h["text"][:120].replace("\n", " ")) for h in hits],
    )


def export(
    out: Path = typer.Argument(..., help="JSON Lines file to write."),
    session: str | None = typer.Option(None, help="Only this session."),
) -> None:
    """Export sessions and their (already masked) events to JSON Lines."""
    from hydra_sandbox.journal import Journal
    from hydra_sandbox.maintenance import export_jsonl

    with console.status("exporting…"):
        count = export_jsonl(Journal(load_settings().journal_path), out, session_id=session)
    console.print(f"exported {count} line(s) to {out}")


def import_(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A file written by `hydra export`."),
) -> None:
    """Import an export (idempotent: events already present are skipped). Run `hydra reindex` afterwards."""
    from hydra_sandbox.journal import Journal
    from hydra_sandbox.maintenance import import_jsonl
    from hydra_sandbox.policy import PolicyCatalog
    from hydra_sandbox.profiles import ProfileCatalog

    settings = load_settings()
    policies, profiles = PolicyCatalog(settings.policy_dirs), ProfileCatalog(settings.profile_dirs)
    report = import_jsonl(Journal(settings.journal_path), path, policies=policies, profiles=profiles)
    console.print(report.model_dump_json(indent=2))


def prune(older_than: str = typer.Option(..., "--older-than", help="e.g. 30d, 12h")) -> None:
    """Delete events older than an age from the journal and the index together."""
    from hydra_sandbox.maintenance import prune as prune_events

    settings = load_settings()
    refuse_if_server_owns_store(settings, "prune")
    with local_store(settings) as access:
        removed = prune_events(access.journal, access.store, _parse_age(older_than))
    console.print(f"pruned {removed} event(s)")


def reindex() -> None:
    """Rebuild the search index from the journal (the journal is the source of truth)."""
    from rich.progress import Progress

    settings = load_settings()
    refuse_if_server_owns_store(settings, "reindex")
    with local_store(settings) as access, Progress(console=console) as progress:
        task = progress.add_task("reindexing", total=None)
        done = access.indexer.reindex(lambda n, total: progress.update(task, completed=n, total=total))
    console.print(f"indexed {done} event(s)")


def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed.")) -> None:
    """Remove containers, volumes and networks of sessions Hydra no longer needs."""
    from hydra_sandbox.gc import collect_garbage
    from hydra_sandbox.journal import Journal
    from hydra_sandbox.sandbox.backends import open_runtimes
    from hydra_sandbox.sandbox.spec import home_label

    settings = load_settings()
    journal = Journal(settings.journal_path)
    keep = {
        s["session_id"]
        for status in ("queued", "starting", "running", "awaiting_approval")
        for s in journal.query_sessions(status=status, limit=100_000)
    }
    runtimes = open_runtimes(settings)
    verb = "would remove" if dry_run else "removed"
    for engine, runtime in runtimes.items():
        report = asyncio.run(collect_garbage(runtime, keep, home=home_label(settings.data_home), dry_run=dry_run))
        where = f" on {engine}" if len(runtimes) > 1 or engine != "local" else ""
        console.print(
            f"{verb} {len(report.containers)} container(s), {len(report.volumes)} volume(s), "
            f"{len(report.networks)} network(s){where}; kept {len(keep)} live session(s)"
        )
