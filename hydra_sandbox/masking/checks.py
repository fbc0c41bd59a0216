"""Judging a candidate value: entropy, and whether the value of a generic ``name = value`` rule reads as
code or as a placeholder rather than as a secret (so a mask never eats ``get_token(session)``)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z_$]*")
_DOTTED = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")
_PLACEHOLDER = re.compile(
    r"(?i)example|changeme|change_me|placeholder|your[_-]|redacted|dummy|sample|xxxx|\*\*\*|\.\.\.|<[^>]*>|"
    r"\$\{|\$\(|\{\{|%\(|%s|process\.env|os\.environ|getenv|secrets\.|\[masked|masked\]|none$|null$|undefined$"
)
_CALL_OR_INDEX = frozenset("([{")


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _case_changes(value: str) -> int:
    letters = [ch for ch in value if ch.isalpha()]
    return sum(1 for a, b in itertools.pairwise(letters) if a.isupper() != b.isupper())


def reads_as_code(value: str, following: str) -> bool:
    """True for a call, attribute access, or an identifier made of words (``access_token_for_user``,
    ``getAccessToken``): what code assigns, not what a secret looks like."""
    if following[:1] in _CALL_OR_INDEX or value[-1:] in _CALL_OR_INDEX:
        return True
    if _DOTTED.fullmatch(value):
        return True
    if _IDENTIFIER.fullmatch(value):  # letters and underscores only: words unless the case flips at random
        return _case_changes(value) * 3 <= len(value)
    return False


def is_placeholder(value: str) -> bool:
    """Template and documentation values: ``${TOKEN}``, ``<your-key>``, ``changeme``, ``xxxx``..."""
    return _PLACEHOLDER.search(value) is not None or len(set(value)) <= 3
