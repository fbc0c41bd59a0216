"""Load YAML files into pydantic models with errors that name the file, the field and what is valid."""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from hydra_sandbox.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_PROBLEMS = 5
"""A message lists at most this many problems, then how many more there are."""


def _key(part: str) -> str:
    """A field name as written, or a quoted, shortened key when it came from the caller's data."""
    if _PLAIN_KEY.fullmatch(part):
        return part
    return f"[{part[:40]!r}{'...' if len(part) > 40 else ''}]"


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("directory", "deny", 2)`` -> ``directory.deny[2]``; an odd key -> ``inputs['a b']``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = _key(part)
            out += key if not out or key.startswith("[") else f".{key}"
    return out or "(top level)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 4


def _short_repr(value: Any) -> str:
    """At most 80 characters of ``repr(value)``, without building the whole repr first: a YAML alias
    bomb of a few hundred bytes expands to a list whose full repr would take minutes."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "unexpected_keyword_argument": "unknown argument",
    "missing_argument": "required argument is missing",
}


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, at most :data:`MAX_PROBLEMS`: ``source: field.path: message (got ...)``."""
    lines = []
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS]:
        where = field_path(tuple(err["loc"]))
        msg = _MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
        got = err.get("input")
        got_text = "" if err["type"] in _MESSAGES else f" (got {_short_repr(got)})"
        lines.append(f"{source}: {where}: {msg}{got_text}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"{source}: ... and {len(errors) - MAX_PROBLEMS} more problem(s)")
    return "\n".join(lines)


def validate_data(model: type[M], data: Any, source: str, *, valid_fields_hint: bool = True) -> M:
    """Validate already-parsed data; errors become one :class:`ConfigError` listing each problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        hint = None
        if valid_fields_hint:
            hint = "valid top-level fields: " + ", ".join(model.model_fields)
        raise ConfigError(describe_validation_error(exc, source), hint=hint) from None


MAX_DEPTH = 64
"""Deepest nesting of lists and mappings a configuration file may have."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` whose value errors (an integer over Python's digit limit, a date like 2026-13-45)
    become YAML errors that carry the node's line, like every other malformed value."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            problem = f"cannot read this {node.tag.rsplit(':', 1)[-1]} value: {str(exc).split(';')[0][:120]}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


def _check_depth(text: str) -> None:
    """Refuse deep nesting before composing (which recurses) from the parser's flat event stream."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = cast("yaml.error.Mark | None", event.start_mark)
                raise yaml.parser.ParserError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def read_yaml(path: Path) -> Any:
    """Safely load a UTF-8 YAML file; any malformed content names the file, line and column."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: not UTF-8 text (byte {raw[exc.start]:#04x})",
            hint="save the file as UTF-8",
        ) from None
    try:
        _check_depth(text)
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: it has a position, no mark
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: YAML syntax error: character {exc.character!r} is not allowed",
            hint="remove control characters from the file",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}", hint="fix the YAML") from None


def load_yaml_model(model: type[M], path: Path) -> M:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}",
            hint="valid top-level fields: " + ", ".join(model.model_fields),
        )
    return validate_data(model, data, str(path))
