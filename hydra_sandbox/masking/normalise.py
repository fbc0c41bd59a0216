"""Text as the rules see it: ANSI escape sequences, zero-width characters and soft hyphens removed, so
a secret coloured or split by invisible characters still matches. The masker maps every match back to
the original text, which keeps everything outside the masked spans."""

from __future__ import annotations

import bisect
import re

_REMOVABLE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]{0,512}(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-character escapes
    r"|[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]"  # soft hyphen, zero-width and direction marks
)
_STARTS = "\x1b\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
_INCOMPLETE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]{0,512}\x1b?)?")
_TAIL = 600
"""Characters at the end of a chunk that may be the start of an escape sequence completed later."""


def split_incomplete(text: str) -> tuple[str, str]:
    """``text`` without a trailing escape sequence that the next chunk may complete, and that tail."""
    at = text.rfind("\x1b", max(0, len(text) - _TAIL))
    if at < 0 or _REMOVABLE.match(text, at) or not _INCOMPLETE.fullmatch(text, at):
        return text, ""
    return text[:at], text[at:]


def _candidates(text: str) -> list[int]:
    """Where a removable sequence may start, ascending: every ESC, and every invisible character (each
    looked for with ``str.find``, which runs at memory speed, where the regex engine would not)."""
    at: list[int] = []
    for char in _STARTS:
        if char not in text:
            continue
        found = text.find(char)
        while found >= 0:
            at.append(found)
            found = text.find(char, found + 1)
    return sorted(at)


def normalise(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text the rules see, and breakpoints ``(i, d)``: from normalised index ``i`` on (until the next
    breakpoint), the original index is ``i + d``."""
    if text.isascii() and "\x1b" not in text:
        return text, []
    pieces: list[str] = []
    breaks: list[tuple[int, int]] = []
    cursor = removed = kept = 0
    for at in _candidates(text):
        if at < cursor:
            continue
        match = _REMOVABLE.match(text, at)
        if match is None:
            continue
        pieces.append(text[cursor:at])
        kept += at - cursor
        removed += match.end() - at
        cursor = match.end()
        if breaks and breaks[-1][0] == kept:
            breaks[-1] = (kept, removed)
        else:
            breaks.append((kept, removed))
    if not breaks:
        return text, []
    pieces.append(text[cursor:])
    return "".join(pieces), breaks


class OffsetMap:
    """Absolute normalised offsets to absolute original offsets, for a text that grows and is trimmed."""

    def __init__(self) -> None:
        self._starts: list[int] = [0]
        self._deltas: list[int] = [0]

    def extend(self, norm_at: int, orig_at: int, breaks: list[tuple[int, int]]) -> None:
        """A piece was appended at ``norm_at`` (normalised) / ``orig_at`` (original)."""
        base = orig_at - norm_at
        if base != self._deltas[-1]:
            self._add(norm_at, base)
        for i, d in breaks:
            self._add(norm_at + i, base + d)

    def _add(self, start: int, delta: int) -> None:
        if self._starts[-1] == start:
            self._deltas[-1] = delta
        else:
            self._starts.append(start)
            self._deltas.append(delta)

    def original(self, norm: int) -> int:
        if len(self._starts) == 1:
            return norm + self._deltas[0]
        return norm + self._deltas[bisect.bisect_right(self._starts, norm) - 1]

    def trim(self, before: int) -> None:
        """Forget breakpoints no offset at or after ``before`` needs."""
        keep = bisect.bisect_right(self._starts, before) - 1
        if keep > 0:
            del self._starts[:keep]
            del self._deltas[:keep]
