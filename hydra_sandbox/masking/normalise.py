"""Text as the rules see it: ANSI escape sequences, zero-width characters and soft hyphens removed, so
a secret coloured or split by invisible characters still matches. The masker maps every match back to
the original text, which keeps everything outside the masked spans."""

from __future__ import annotations

import bisect
import re
from itertools import accumulate

_REMOVABLE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]{0,512}(?:\x07|\x1b\\)"  # OSC: titles, hyperlinks
    r"|\x1b[ -/]{1,8}[0-~]"  # nF: character sets (ESC ( B of tput sgr0), line size (ESC # 8)
    r"|\x1b[0-Z\\-~]"  # other two-character escapes: save/restore cursor (ESC 7, ESC 8), keypad, reset
    r"|[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]"  # soft hyphen, zero-width and direction marks
)
_ESCAPES = re.compile(
    r"(\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]{0,512}(?:\x07|\x1b\\)"
    r"|\x1b[ -/]{1,8}[0-~]"
    r"|\x1b[0-Z\\-~])"
)
"""The escape-sequence alternatives of :data:`_REMOVABLE`, in its order, captured: where a text has no
invisible character, ``_ESCAPES.split`` cuts it exactly where ``_REMOVABLE`` matches, in C."""
_STARTS = "\x1b\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
_INCOMPLETE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]{0,512}\x1b?|[ -/]{1,8})?")
_TAIL = 600
"""Characters at the end of a chunk that may be the start of an escape sequence completed later."""


def split_incomplete(text: str) -> tuple[str, str]:
    """``text`` without a trailing escape sequence that the next chunk may complete, and that tail.

    The tail starts at the first ESC from which the rest of the text is an unfinished sequence: an OSC
    ``ESC ] title`` is carried whole, though ``ESC ]`` alone is a complete two-character escape (cut there,
    the title would stay in the text and split a secret that the whole text shows joined), and an OSC
    whose ``ESC \\`` terminator is cut after its ESC is carried from its own ESC, not from the last one."""
    at = text.find("\x1b", max(0, len(text) - _TAIL))
    while at >= 0:
        if _INCOMPLETE.fullmatch(text, at):
            return text[:at], text[at:]
        at = text.find("\x1b", at + 1)
    return text, ""


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


def _add_break(breaks: list[tuple[int, int]], kept: int, removed: int) -> None:
    if breaks and breaks[-1][0] == kept:
        breaks[-1] = (kept, removed)
    else:
        breaks.append((kept, removed))


def _strip_escapes(text: str) -> tuple[str, list[tuple[int, int]]]:
    """:func:`normalise` for text whose only removable characters start with ESC. ``_ESCAPES.split``
    alternates kept text and removed sequences; the breakpoints are their running lengths (C-level
    ``accumulate`` over ``len``), with sequences that follow each other merged into one breakpoint."""
    parts = _ESCAPES.split(text)
    if len(parts) == 1:
        return text, []
    kept_parts = parts[0::2]
    kept = accumulate(map(len, kept_parts[:-1]))
    removed = accumulate(map(len, parts[1::2]))
    if "" in kept_parts[1:-1]:  # adjacent sequences share a breakpoint: the last one counts
        breaks = list(dict(zip(kept, removed, strict=True)).items())
    else:
        breaks = list(zip(kept, removed, strict=True))
    return "".join(kept_parts), breaks


_INVISIBLE_BY_BYTE = (
    (b"\xad", "\u00ad"),  # C2 AD
    (b"\x80", "\u200b\u200c\u200d\u200e\u200f"),  # E2 80 8B-8F
    (b"\x81", "\u2060\u2061\u2062\u2063\u2064"),  # E2 81 A0-A4
    (b"\xbb", "\ufeff"),  # EF BB BF
)
INVISIBLE_BYTES = tuple(byte for byte, _chars in _INVISIBLE_BY_BYTE)
"""One byte of each invisible character's UTF-8: UTF-8 with none of these bytes decodes to text with no
invisible character, and ``bytes`` finds one byte at memory speed where ``str`` needs one search per
character."""


def has_invisible(text: str) -> bool:
    """Whether ``text`` holds a soft hyphen, zero-width or direction mark (ANSI escapes aside). Non-ASCII
    text is encoded once and its bytes say which characters can be there at all (typographic quotes and
    dashes share E2 80 with the zero-width marks, so those are then looked for one by one)."""
    if text.isascii():
        return False
    data = text.encode("utf-8", "surrogatepass")
    return any(byte in data and any(char in text for char in chars) for byte, chars in _INVISIBLE_BY_BYTE)


def normalise(text: str, *, invisible: bool | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The text the rules see, and breakpoints ``(i, d)``: from normalised index ``i`` on (until the next
    breakpoint), the original index is ``i + d``. ``invisible=False`` says the caller knows ``text`` has no
    invisible character (see :data:`INVISIBLE_BYTES`); ``None`` looks."""
    if not (has_invisible(text) if invisible is None else invisible):
        return _strip_escapes(text) if "\x1b" in text else (text, [])
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
        _add_break(breaks, kept, removed)
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
        if not breaks:
            return
        first = 0
        if breaks[0][0] == 0:
            self._add(norm_at, base + breaks[0][1])
            first = 1
        self._starts.extend([norm_at + i for i, _d in breaks[first:]])
        self._deltas.extend([base + d for _i, d in breaks[first:]])

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
