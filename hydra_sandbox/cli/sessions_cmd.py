"""``hydra sessions list|show|tree|logs|diff|apply|discard|terminate``."""

from __future__ import annotations

import time
from typing import Any

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, print_json, print_table, shown, visible
from hydra_sandbox.cli.remote import server_call
from hydra_sandbox.errors import SessionNotFoundError
from hydra_sandbox.events import Event
from hydra_sandbox.journal import Journal
from hydra_sandbox.session_ids import check_session_id
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="Inspect and control sessions.", no_args_is_help=True)
FINISHED = {"awaiting_approval", "completed", "failed", "cancelled", "timed_out"}
COLOURS = {
    "command": "cyan",
    "test": "magenta",
    "error": "red",
    "status": "dim",
    "decision": "yellow",
    "checklist": "green",
    "summary": "blue",
    "message": "white",
    "diff": "yellow",
    "note": "white",
    "approval": "green",
    "output": "bright_black",
}


def _journal() -> Journal:
    return Journal(load_settings().journal_path)


def _session(journal: Journal, session_id: str) -> dict:  # type: ignore[type-arg]
    check_session_id(session_id, "session_id")
    data = journal.load_session(session_id)
    if data is None:
        raise SessionNotFoundError(f"session {session_id!r} not found", hint="`hydra sessions list` shows them")
    return data


@app.command("list")
def list_sessions(
    status: str | None = typer.Option(None, help="Only sessions in this status."),
    profile: str | None = typer.Option(None, help="Only this profile."),
    limit: int = typer.Option(50, min=1),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Sessions, newest first (read from the journal; works while the server runs)."""
    rows = _journal().query_sessions(status=status, profile_id=profile, limit=limit)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Sessions",
        ["session", "status", "profile", "parent", "host", "task", "created"],
        [
            (
                r["session_id"],
                r["status"],
                r["profile_id"],
                r.get("parent_session_id"),
                r.get("host"),
                (r.get("task") or "")[:50],
                str(r.get("created_at", ""))[:19],
            )
            for r in rows
        ],
    )


@app.command("show")
def show(session_id: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """A session's record and checklist."""
    data = _session(_journal(), session_id)
    if as_json:
        print_json(data)
        return
    for key in (
        "session_id",
        "status",
        "reason",
        "profile_id",
        "working_dir",
        "parent_session_id",
        "model",
        "host",
        "diff_state",
        "created_at",
        "finished_at",
    ):
        console.print(f"[bold]{key}[/]: {shown(data.get(key))}", markup=True)
    for item in (data.get("checklist") or {}).get("items", []):
        console.print(
            f"  [{'green' if item['done'] else 'red'}]{'✓' if item['done'] else '✗'}[/] {shown(item['id'])}: "
            f"{shown(item['description'])}"
        )


@app.command("tree")
def tree(session_id: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """A session and its delegation tree: status, test verdicts, checklist and changed files of each."""
    from hydra_sandbox.session_tree import build_tree, render_lines

    journal = _journal()
    _session(journal, session_id)
    node = build_tree(session_id, journal.load_session, journal)
    if node is None:  # removed between the two reads
        raise SessionNotFoundError(f"session {session_id!r} not found", hint="`hydra sessions list` shows them")
    if as_json:
        print_json(node.model_dump(mode="json"))
        return
    for line in render_lines(node):
        typer.echo(line)


def _line(event: Event) -> str:
    colour = COLOURS.get(event.type, "white")
    text = event.text
    if event.type == "output":  # a run of plain lines of the agent's stdout or stderr: say how many
        text = f"[{event.data.get('stream', 'stdout')}, {event.data.get('lines', 1)} line(s)] {text}"
    text = shown(text.replace("\n", " ⏎ ")[:200])
    return f"[dim]{event.counter:>4}[/] [{colour}]{shown(event.type):<9}[/] {text}"


@app.command("logs")
def logs(
    session_id: str,
    since: int = typer.Option(0, help="First event counter."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the session ends."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
) -> None:
    """The masked timeline of a session; --follow shows a running agent live."""
    journal = _journal()
    _session(journal, session_id)
    next_counter = since
    while True:
        for event in journal.events(session_id, since=next_counter):
            if as_json:
                print(event.model_dump_json())
            else:
                console.print(_line(event), markup=True, highlight=False)
            next_counter = event.counter + 1
        if not follow or _session(journal, session_id)["status"] in FINISHED:
            if follow:  # print what arrived with the final status
                for event in journal.events(session_id, since=next_counter):
                    console.print(_line(event), markup=True, highlight=False)
            return
        time.sleep(0.5)


@app.command("diff")
def diff(session_id: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The preview of a finished session's changes."""
    preview = server_call("get_diff", {"session_id": session_id})
    if as_json:
        print_json(preview)
        return
    _print_preview(preview)


def _print_preview(preview: dict[str, Any]) -> None:
    console.print(visible(preview["unified"]) or "(no changes)", markup=False, highlight=False)
    for refused in preview["refused"]:
        console.print(f"[red]refused[/] {shown(refused['path'])}: {shown(refused['reason'])}")
    stats = preview["stats"]
    console.print(f"{stats['files_changed']} file(s), +{stats['insertions']} -{stats['deletions']}")
    for name in preview.get("masked_files", []):
        console.print(f"[yellow]masked[/] {shown(name)}: lines hidden here (apply needs --acknowledge-masked)")
    console.print(f"digest {shown(preview['digest'])}")


@app.command("apply")
def apply(
    session_id: str,
    yes: bool = typer.Option(False, "--yes", help="Apply without asking."),
    digest: str | None = typer.Option(None, help="The digest `hydra sessions diff` printed; else shown first."),
    acknowledge_masked: bool = typer.Option(False, help="Apply files whose lines masking hid from the preview."),
) -> None:
    """Write a session's reviewed changes to its working directory (only the change set of the digest)."""
    if digest is None:
        preview = server_call("get_diff", {"session_id": session_id})
        _print_preview(preview)
        digest = str(preview["digest"])
    if not yes and not typer.confirm(f"Apply the changes of {session_id} to its working directory?"):
        raise typer.Exit(1)
    arguments = {"session_id": session_id, "confirm": True, "digest": digest, "acknowledge_masked": acknowledge_masked}
    result = server_call("apply_diff", arguments)
    console.print(visible(result["message"]), markup=False)
    for refused in result["refused"]:
        console.print(f"[red]refused[/] {shown(refused['path'])}: {shown(refused['reason'])}")


@app.command("discard")
def discard(session_id: str) -> None:
    """Throw a session's changes away."""
    console.print(visible(server_call("discard_diff", {"session_id": session_id})), markup=False)


@app.command("terminate")
def terminate(session_id: str, reason: str = typer.Option("terminated from the CLI", help="Recorded reason.")) -> None:
    """Stop a queued or running session."""
    console.print(visible(server_call("terminate_session", {"session_id": session_id, "reason": reason})), markup=False)
