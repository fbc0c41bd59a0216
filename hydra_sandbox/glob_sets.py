"""A gitignore-style glob list matched in linear time: what :class:`hydra_sandbox.policy.PathMatcher` asks
of each allow, deny, hidden and read-only list."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import pathspec

from hydra_sandbox.linear_match import LinearPattern, compile_linear


class GlobSet:
    """A gitignore-style glob list compiled once into linear-time (RE2) expressions that also match names
    holding a newline (gitignore's own expressions stop at one). Without negations the list is one
    expression; with them the last glob that matches decides, as in gitignore."""

    def __init__(self, globs: Iterable[str], *, ignore_case: bool = False) -> None:
        lines = list(globs)
        spec = pathspec.PathSpec.from_lines("gitignore", lines)
        linear = partial(compile_linear, dot_all=True, ignore_case=ignore_case)
        patterns = [
            (p.regex.pattern, bool(p.include))  # type: ignore[attr-defined,union-attr]
            for p in spec.patterns
            if p.include is not None and getattr(p, "regex", None) is not None
        ]
        self.everything = lines == ["**"]
        self._regex: LinearPattern | None = None
        self._ordered: list[tuple[LinearPattern, bool]] = []
        if patterns and all(include for _p, include in patterns):
            self._regex = linear("|".join(f"(?:{p})" for p, _i in patterns))
        else:
            self._ordered = [(linear(p), include) for p, include in patterns]

    def match_file(self, path: str) -> bool:
        if self.everything:
            return True
        if self._regex is not None:
            return self._regex.match(path) is not None
        matched = False
        for regex, include in self._ordered:
            if regex.match(path) is not None:
                matched = include
        return matched


def glob_set(globs: Iterable[str], *, ignore_case: bool = False) -> GlobSet:
    return GlobSet(globs, ignore_case=ignore_case)
