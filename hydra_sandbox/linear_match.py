"""Regular expressions that cannot backtrack: every glob of a policy and every checklist pattern is
matched by RE2 (``google-re2``), whose time is linear in the text, so an agent's glob such as
``*e*e*e*e*e*e*#`` against a name of 150 ``e`` costs microseconds, not minutes with the GIL held.

Sizes are bounded too: at most :data:`MAX_GLOBS` globs per list, :data:`MAX_PATTERN_CHARS` characters
per glob or pattern, and RE2's own memory budget per compiled program (:data:`MAX_PROGRAM_BYTES`).
"""

from __future__ import annotations

from typing import Protocol

import re2

MAX_GLOBS = 1000
MAX_PATTERN_CHARS = 1024
MAX_PROGRAM_BYTES = 64 << 20


class LinearPattern(Protocol):
    def match(self, text: str) -> object | None: ...

    def search(self, text: str) -> object | None: ...


def compile_linear(pattern: str, *, dot_all: bool = False, ignore_case: bool = False) -> LinearPattern:
    """``pattern`` (Python syntax without backreferences or lookaround) compiled by RE2; ``ValueError``
    naming the problem when it is too long or not RE2 syntax."""
    if len(pattern) > MAX_PATTERN_CHARS * 64:
        raise ValueError(f"regular expression of {len(pattern)} characters; at most {MAX_PATTERN_CHARS * 64}")
    options = re2.Options()
    options.dot_nl = dot_all
    options.case_sensitive = not ignore_case
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False
    try:
        compiled: LinearPattern = re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(f"not a valid regular expression for RE2 (no backreferences or lookaround): {exc}") from None
    return compiled


def check_pattern(value: str, what: str) -> str:
    """A user's pattern or glob: at most :data:`MAX_PATTERN_CHARS` characters."""
    if len(value) > MAX_PATTERN_CHARS:
        raise ValueError(f"{what} of {len(value)} characters; at most {MAX_PATTERN_CHARS}")
    return value
