"""How the CLI talks to people and scripts: Rich tables on a terminal, JSON with ``--json``, one red
line for errors. Colour only when stdout is a terminal (Rich decides; ``NO_COLOR`` is honoured)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JSON_HELP = "Print machine-readable JSON instead of a table."

# C0 (but newline and tab), DEL, C1, zero-width characters and bidirectional overrides
_UNSEEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def visible(value: object) -> str:
    """Text from agents or files as the terminal may show it: every control character (ANSI escapes,
    carriage returns, backspaces, bidi overrides) written as ``\\xNN``/``\\uNNNN``, nothing else changed."""
    return _UNSEEN.sub(_escaped, str(value))


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def shown(value: object) -> str:
    """:func:`visible`, and safe inside Rich markup: ``[/]`` or ``[conceal]`` from an agent stays text."""
    return escape(visible(value))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """JSON on stdout, never coloured, one document."""
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else shown(v) for v in row))
    console.print(table)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {shown(message)}", markup=True, soft_wrap=True)
    raise SystemExit(code)
