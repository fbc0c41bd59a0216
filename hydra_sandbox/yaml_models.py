"""Load YAML files into pydantic models with errors that name the file, the field and what is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hydra_sandbox.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("directory", "deny", 2)`` -> ``directory.deny[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``source: field.path: message (got ...)``."""
    lines = []
    for err in exc.errors():
        where = field_path(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        got = err.get("input")
        got_text = "" if err["type"] in {"missing", "extra_forbidden"} else f" (got {got!r:.80})"
        lines.append(f"{source}: {where}: {msg}{got_text}")
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


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file; syntax errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
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
