"""``hydra masking test|rules``: what the masker would hide in a file, and which rules it has."""

from __future__ import annotations

from pathlib import Path

import typer

from hydra_sandbox.cli.output import JSON_HELP, console, fail, print_json, print_table
from hydra_sandbox.masking import MaskingRule, SecretMasker, load_rules
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="Try the secret masker on a file and list its rules.", no_args_is_help=True)

RULES_HELP = "A directory of rule files (*.yaml) to use instead of HYDRA_MASKING_RULES_DIR."
_PREVIEW = 160


def _rules(rules_dir: Path | None) -> tuple[MaskingRule, ...]:
    directory = rules_dir or load_settings().masking_rules_dir
    return load_rules([directory] if directory else [])


def _line_and_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


@app.command("test")
def test_file(
    file: Path = typer.Argument(..., help="A text file, e.g. a log or a config you want to check."),
    rules_dir: Path | None = typer.Option(None, "--rules", help=RULES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show what masking would hide in FILE and by which rule (the secrets themselves are not printed)."""
    try:
        text = file.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        fail(f"FILE: cannot read {file}: {exc.strerror}", code=2)
    masker = SecretMasker(rules=_rules(rules_dir))
    findings = []
    for start, end, rule in masker.spans(text):
        line, column = _line_and_column(text, start)
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", end)
        context = masker.mask(text[line_start : line_end if line_end >= 0 else len(text)])
        findings.append(
            {"line": line, "column": column, "rule": rule, "length": end - start, "masked": context[:_PREVIEW]}
        )
    if as_json:
        print_json({"file": str(file), "engine": masker.engine, "findings": findings})
        return
    if not findings:
        console.print(f"nothing to mask in {file} ({len(masker.rules)} rules, {masker.engine} engine)")
        return
    print_table(
        f"{file}: {len(findings)} masked",
        ["line:col", "rule", "chars", "as stored"],
        [(f"{f['line']}:{f['column']}", f["rule"], f["length"], f["masked"]) for f in findings],
    )


@app.command("rules")
def list_rules(
    rules_dir: Path | None = typer.Option(None, "--rules", help=RULES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the masking rules in the order they are tried."""
    rules = _rules(rules_dir)
    if as_json:
        print_json([r.model_dump(exclude={"examples"}) for r in rules])
        return
    print_table(
        f"{len(rules)} masking rules",
        ["id", "keywords", "description"],
        [(r.id, " ".join(r.keywords) or "(everywhere)", r.description) for r in rules],
    )
