"""Every ``hydra ...`` command in the runbooks' ``bash`` blocks exists in the real CLI, flags included.

The command tree is the one Typer builds (``typer.main.get_command``). Recent Typer vendors its own copy
of click, whose groups are not ``click.Group`` instances, so the walk goes by click's attributes
(``commands``, ``params``, ``param_type_name``) rather than by class."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from hydra_sandbox.cli import app

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
EXPECTED = {
    "README.md",
    "rotate-model-credentials.md",
    "clear-stuck-sessions.md",
    "recover-after-crash.md",
    "restore-from-export.md",
    "move-to-chroma-server.md",
}
FENCE = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
STARTS_COMMAND = {"--", "&&", "||", ";", "|", "then", "do", "exec", "sudo"}
ENDS_COMMAND = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "<"}


@dataclass(frozen=True)
class Command:
    file: str
    line: str
    argv: list[str]  # the words after `hydra`


def _logical_lines(block: str) -> list[str]:
    return block.replace("\\\n", " ").splitlines()


def extract(text: str, file: str = "<doc>") -> list[Command]:
    """``hydra`` invocations in ```bash blocks: at the start of a line (after VAR=value prefixes), or
    after ``--``/``&&``/``|`` (as in ``kubectl exec deploy/hydra -- hydra reindex``)."""
    found = []
    for block in FENCE.findall(text):
        for line in _logical_lines(block):
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word != "hydra" and not word.endswith("/bin/hydra"):
                    continue
                before = words[:i]
                if all(ENV_ASSIGNMENT.match(w) for w in before) or (before and before[-1] in STARTS_COMMAND):
                    rest = words[i + 1 :]
                    end = next((j for j, w in enumerate(rest) if w in ENDS_COMMAND), len(rest))
                    found.append(Command(file, line.strip(), rest[:end]))
    return found


def check(root: Any, argv: list[str]) -> list[str]:
    """Problems with ``hydra ARGV``: unknown command, unknown flag, a flag without its value, or the
    wrong number of positional arguments."""
    command, path = root, ["hydra"]
    words = list(argv)
    while hasattr(command, "commands"):
        if not words:
            return [f"`{' '.join(path)}` needs a subcommand"]
        name = words.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return [f"`{' '.join(path)}` has no command {name!r} (has: {', '.join(sorted(command.commands))})"]
        command, path = sub, [*path, name]
    options = {opt: p for p in command.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    problems, positional = [], 0
    while words:
        word = words.pop(0)
        if word.startswith("-") and word != "-":
            name, has_value = word.split("=", 1)[0], "=" in word
            param = options.get(name)
            if param is None:
                problems.append(f"`{' '.join(path)}` has no option {name} (has: {', '.join(sorted(options))})")
            elif not param.is_flag and not param.count and not has_value:
                if not words:
                    problems.append(f"`{' '.join(path)}`: {name} needs a value")
                else:
                    words.pop(0)
        else:
            positional += 1
    required = sum(1 for a in arguments if a.required)
    if not required <= positional <= len(arguments):
        problems.append(
            f"`{' '.join(path)}` takes {required}..{len(arguments)} argument(s), the doc gives {positional}"
        )
    for param in command.params:
        if param.param_type_name == "option" and param.required and not any(o in argv for o in param.opts):
            problems.append(f"`{' '.join(path)}`: {param.opts[0]} is required")
    return problems


ROOT = typer.main.get_command(app)
COMMANDS = [cmd for doc in sorted(RUNBOOKS.glob("*.md")) for cmd in extract(doc.read_text(), doc.name)]


def test_every_runbook_exists_and_is_indexed() -> None:
    assert {p.name for p in RUNBOOKS.glob("*.md")} == EXPECTED
    index = (RUNBOOKS / "README.md").read_text()
    for name in EXPECTED - {"README.md"}:
        assert f"({name})" in index, f"README.md does not link {name}"


def test_each_runbook_has_hydra_commands() -> None:
    for name in EXPECTED - {"README.md"}:
        assert any(c.file == name for c in COMMANDS), f"{name} has no hydra command in a bash block"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.file}: {c.line}")
def test_runbook_command_exists_in_the_cli(command: Command) -> None:
    assert check(ROOT, command.argv) == [], command.line


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ("hydra sessions purge X", "no command 'purge'"),
        ("hydra gc --force", "no option --force"),
        ("hydra prune", "--older-than is required"),
        ("hydra sessions terminate X --reason", "--reason needs a value"),
        ("hydra export", "takes 1..1 argument"),
        ("kubectl -n hydra exec deploy/hydra -- hydra sessions list --stat running", "no option --stat"),
        ("HYDRA_CHROMA_URL=http://c:8000 hydra reindex --all", "no option --all"),
    ],
)
def test_the_checker_catches_drift(snippet: str, problem: str) -> None:
    [command] = extract(f"```bash\n{snippet}\n```\n")
    assert any(problem in p for p in check(ROOT, command.argv))


def test_the_checker_ignores_hydra_as_a_word() -> None:
    text = "```bash\nkubectl -n hydra rollout status deploy/hydra  # hydra gc --bogus\necho hydra\n```\n"
    assert extract(text) == []
