"""One pass of masking over a text or a stream: prefilter hits → exact matches in bounded windows →
candidate spans → their union → masked output.

Everything is in absolute offsets of the normalised text. A hit ``(rule, end)`` is resolved once the text
reaches ``end + max_length + CONTEXT`` (or the stream ends): the rule's regular expression is searched
from ``end - max_length`` (or where the previous search of that rule stopped) and every match starting
before ``end`` is a candidate. Because hits, windows and search starts depend only on the text, a text
masked whole and the same text streamed in any chunks give the same output. Text is emitted up to the
earliest point where a future candidate could still start (``safe``), never inside a masked span.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field

from hydra_sandbox.masking.checks import is_placeholder, reads_as_code, shannon_entropy
from hydra_sandbox.masking.engine import KNOWN_BASE, Hit, Prefilter, PrefilterStream
from hydra_sandbox.masking.normalise import (
    Breaks,
    Normalised,
    OffsetMap,
    has_invisible,
    normalise,
    split_incomplete,
)
from hydra_sandbox.masking.rules import MaskingRule

CONTEXT = 64
"""Characters kept before a search window for lookbehinds, and read after it for lookaheads."""
SLACK = 8
"""How far past the end of a match a rule's prefilter may report it (a boundary character it reads)."""
_NEVER = 1 << 62


@dataclass(frozen=True)
class Compiled:
    """An immutable snapshot of what a masker looks for."""

    rules: tuple[MaskingRule, ...]
    known: tuple[str, ...]
    known_names: tuple[str, ...]
    prefilter: Prefilter
    longest_known: int = field(init=False)

    longest_reach: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "longest_known", max((len(k) for k in self.known), default=0))
        object.__setattr__(self, "longest_reach", max(self.prefilter.reach, default=0))


def _value_span(rule: MaskingRule, match: re.Match[str]) -> tuple[int, int]:
    for group in rule.value_groups:
        if match.group(group) is not None:
            return match.span(group)
    return match.span()


def accept(rule: MaskingRule, value: str, following: str) -> bool:
    """Whether ``value`` (followed in the text by ``following``) is a secret for ``rule``."""
    if len(value) < 1 or "[MASKED" in value:
        return False
    if not all(r.search(value) for r in rule.require_regexes):
        return False
    if rule.allow_regex is not None and rule.allow_regex.fullmatch(value):
        return False
    if rule.entropy and shannon_entropy(value) < rule.entropy:
        return False
    return not (rule.generic and (reads_as_code(value, following) or is_placeholder(value)))


class Scanner:
    def __init__(self, compiled: Compiled, stream: PrefilterStream | None = None) -> None:
        self._c = compiled
        self._stream = stream
        self._orig = self._norm = self._raw_tail = ""
        self._orig_base = self._norm_base = self._end = self._orig_end = 0
        self._map = OffsetMap()
        self._pending: dict[int, deque[int]] = {}
        self._done: dict[int, int] = {}
        self._cands: list[tuple[int, int, int, str]] = []
        self._open: tuple[int, int, str] | None = None  # the union span still growing
        self._spans: list[tuple[int, int, str]] = []
        self._emitted_n = self._emitted_o = 0
        self.counted: Counter[str] = Counter()
        self.found: list[tuple[int, int, str]] = []  # masked spans, in offsets of the original text

    # -- input ---------------------------------------------------------------------------------

    def _append(self, text: str, invisible: bool | None = None) -> Normalised:
        normalised = norm, breaks, _utf8 = normalise(text, invisible=invisible)
        self._map.extend(self._end, self._orig_end, breaks)
        self._orig += text
        self._norm += norm
        self._end += len(norm)
        self._orig_end += len(text)
        return normalised

    def whole(self, text: str, norm: str, breaks: Breaks, hits: list[Hit]) -> str:
        """Mask a complete text (block mode), normalised and prefiltered by :func:`mask_text`."""
        self._map.extend(0, 0, breaks)
        self._orig, self._norm = text, norm
        self._end, self._orig_end = len(norm), len(text)
        self._add_hits([(i, min(e, self._end)) for i, e in hits])
        return self._advance(final=True)

    def feed(self, chunk: str, invisible: bool | None = None) -> str:
        """Mask the next chunk; ``invisible=False``: the chunk is known to hold no invisible character."""
        assert self._stream is not None
        if invisible is False and self._raw_tail:  # the escape carried over is text of an earlier chunk
            invisible = has_invisible(self._raw_tail)
        text, self._raw_tail = split_incomplete(self._raw_tail + chunk)
        start = self._end
        norm, _breaks, utf8 = self._append(text, invisible)
        self._add_hits(self._stream.scan(norm, start, utf8))
        return self._advance(final=False)

    def flush(self) -> str:
        assert self._stream is not None
        start = self._end
        norm, _breaks, utf8 = self._append(self._raw_tail)
        self._raw_tail = ""
        hits = self._stream.scan(norm, start, utf8) if norm else []
        self._add_hits(hits + self._stream.close(self._end))
        return self._advance(final=True)

    def _add_hits(self, hits: list[Hit]) -> None:
        known, names = self._c.known, self._c.known_names
        for pattern_id, end in hits:
            if pattern_id >= KNOWN_BASE:
                j = pattern_id - KNOWN_BASE
                self._cands.append((end - len(known[j]), end, -1, names[j]))
            else:
                self._pending.setdefault(pattern_id, deque()).append(end)

    # -- resolution ----------------------------------------------------------------------------

    def _extract(self, rule_id: int, hit_end: int) -> None:
        rule = self._c.rules[rule_id]
        start = max(hit_end - self._c.prefilter.reach[rule_id] - SLACK, self._done.get(rule_id, 0), self._norm_base)
        stop = min(hit_end + self._c.prefilter.ahead[rule_id] + CONTEXT, self._end)
        base, norm = self._norm_base, self._norm
        last = hit_end
        for match in rule.regex.finditer(norm, start - base, stop - base):
            if match.start() + base >= hit_end:
                break
            last = max(last, match.end() + base)
            vs, ve = _value_span(rule, match)
            if rule.generic:
                while ve > vs and norm[ve - 1] in ".,":
                    ve -= 1
            if ve > vs and accept(rule, norm[vs:ve], norm[ve : ve + 1]):
                self._cands.append((vs + base, ve + base, rule_id, rule.id))
            if match.end() + base >= hit_end:
                break  # the next match would start at or after this end: past the hit, so not searched for
        self._done[rule_id] = max(self._done.get(rule_id, 0), last)

    def _safe(self, final: bool) -> int:
        """An offset no candidate not yet found can start before (a lower bound: emitting waits for it)."""
        if final:
            return _NEVER
        safe = self._end + 1 - max(self._c.longest_known, self._c.longest_reach) - SLACK
        reach = self._c.prefilter.reach
        for rule_id, pending in self._pending.items():
            if pending:
                safe = min(safe, max(pending[0] - reach[rule_id] - SLACK, self._done.get(rule_id, 0)))
        return safe

    def _advance(self, final: bool) -> str:
        ahead = self._c.prefilter.ahead
        resolved = []
        for rule_id, ends in self._pending.items():
            width = ahead[rule_id]
            while ends and (final or ends[0] + width + CONTEXT <= self._end):
                self._extract(rule_id, ends.popleft())
            if not ends:
                resolved.append(rule_id)
        for rule_id in resolved:  # so each chunk looks only at rules with hits still waiting
            del self._pending[rule_id]
        safe = self._safe(final)
        self._cands.sort(key=lambda c: (c[0], c[2]))
        ready = [c for c in self._cands if c[0] < safe]
        self._cands = self._cands[len(ready) :]
        current = self._open
        for start, end, _prio, name in ready:
            if current is not None and start < current[1]:
                current = (current[0], max(current[1], end), current[2])
                continue
            if current is not None:
                self._spans.append(current)
            current = (start, end, name)
        if current is not None and (final or current[1] <= safe):
            self._spans.append(current)
            current = None
        self._open = current
        cut = self._end if final else min(safe, current[0] if current is not None else safe)
        return self._emit(max(cut, self._emitted_n), final)

    def _emit(self, cut: int, final: bool) -> str:
        original, base = self._map.original, self._orig_base
        pieces: list[str] = []
        cursor = self._emitted_o
        for start, end, name in self._spans:
            so, eo = original(start), original(end - 1) + 1
            pieces.append(self._orig[cursor - base : so - base])
            pieces.append(f"[MASKED:{name}]")
            self.counted[name] += 1
            self.found.append((so, eo, name))
            cursor = max(cursor, eo)
        self._spans = []
        cut_o = self._orig_end if final or cut >= self._end else original(cut)
        pieces.append(self._orig[cursor - base : cut_o - base])
        self._emitted_n, self._emitted_o = cut, max(cursor, cut_o)
        keep_n = max(self._norm_base, cut - CONTEXT)
        self._norm = self._norm[keep_n - self._norm_base :]
        self._norm_base = keep_n
        self._orig = self._orig[self._emitted_o - base :]
        self._orig_base = self._emitted_o
        self._map.trim(keep_n)
        return "".join(pieces)


def _block_hits(compiled: Compiled, normalised: Normalised) -> list[Hit]:
    """Prefilter hits of a whole normalised text, read with the sentinel newline a stream ends with."""
    utf8 = normalised.utf8
    if utf8 is not None:  # the newline joins the last piece
        utf8 = utf8._replace(data=utf8.data + b"\n")
    return compiled.prefilter.scan(normalised.text + "\n", utf8)


def mask_text(compiled: Compiled, text: str) -> tuple[str, Counter[str] | None]:
    """``text`` masked whole, and the masks made by rule (``None`` when the prefilter found nothing)."""
    normalised = normalise(text)
    hits = _block_hits(compiled, normalised)
    if not hits:
        return text, None
    scanner = Scanner(compiled)
    return scanner.whole(text, normalised.text, normalised.breaks, hits), scanner.counted


def find_spans(compiled: Compiled, text: str) -> list[tuple[int, int, str]]:
    """The spans of ``text`` masking replaces, as (start, end, rule) in ``text``'s own offsets."""
    normalised = normalise(text)
    hits = _block_hits(compiled, normalised)
    if not hits:
        return []
    scanner = Scanner(compiled)
    scanner.whole(text, normalised.text, normalised.breaks, hits)
    return scanner.found
