"""Judging a candidate value: entropy, and whether the value of a generic ``name = value`` rule reads as
code or as a placeholder rather than as a secret (so a mask never eats ``get_token(session)``)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z_$]*")
_DOTTED = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")
_PLACEHOLDER = re.compile(  # searched in the lower-cased value: sre is ~10x slower with (?i)
    r"example|changeme|change_me|placeholder|your[_-]|redacted|dummy|sample|xxxx|\*\*\*|\.\.\.|<[^>]*>|"
    r"\$\{|\$\(|\{\{|%\(|%s|process\.env|os\.environ|getenv|secrets\.|\[masked|masked\]|none$|null$|undefined$"
)
_CALL_OR_INDEX = frozenset("([{")


_COUNT_LOG = [0.0] + [c * math.log2(c) for c in range(1, 1025)]
"""``c * log2(c)`` for the counts a value of up to 1,024 characters can have."""


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution: ``log2(n) - sum(c log2 c) / n``
    over the counts ``c`` of its ``n`` characters (table lookups in C, not a Python loop)."""
    n = len(value)
    if not n:
        return 0.0
    counts = Counter(value).values()
    if n < len(_COUNT_LOG):
        return max(0.0, math.log2(n) - sum(map(_COUNT_LOG.__getitem__, counts)) / n)
    return -sum(c / n * math.log2(c / n) for c in counts)


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
    return _PLACEHOLDER.search(value.lower()) is not None or len(set(value)) <= 3
