"""Text as the rules see it: ANSI escape sequences, zero-width characters and soft hyphens removed, so
a secret coloured or split by invisible characters still matches. The masker maps every match back to
the original text, which keeps everything outside the masked spans."""

from __future__ import annotations

import bisect
import re
from itertools import accumulate
from operator import methodcaller
from typing import NamedTuple

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


Breaks = tuple[list[int], list[int]]
"""Breakpoints as two columns, ``(kept, removed)``: from normalised index ``kept[k]`` on (until the next
breakpoint), ``removed[k]`` characters have been removed before it. ``kept`` ascends; where it repeats
(sequences that follow each other), the last breakpoint counts."""
NO_BREAKS: Breaks = ([], [])


class Utf8(NamedTuple):
    """A text's UTF-8 (``text.encode("utf-8", "surrogatepass")``) and landmarks in it: piece ``k`` starts
    at byte ``byte_at[k]`` and character ``char_at[k]``, so a byte offset becomes a character offset by
    counting within one piece."""

    data: bytes
    byte_at: list[int]
    char_at: list[int]


class Normalised(NamedTuple):
    """A text as the rules see it (see :func:`normalise`), with its UTF-8 when normalising made it
    cheaply (``None``: the engine encodes the text itself)."""

    text: str
    breaks: Breaks
    utf8: Utf8 | None = None


_ENCODE = methodcaller("encode", "utf-8", "surrogatepass")


def _strip_escapes(text: str) -> Normalised:
    """:func:`normalise` for text whose only removable characters start with ESC.
    ``_ESCAPES.split`` alternates kept text and removed sequences; the breakpoints are their running
    lengths (C-level ``accumulate`` over ``len``). The kept pieces are also encoded one by one: ``split``
    makes each piece as narrow as its characters allow, so the ASCII ones (nearly all of a log) encode
    as a copy, where the joined text, made wide by one non-ASCII character, would be encoded character
    by character."""
    parts = _ESCAPES.split(text)
    if len(parts) == 1:
        return Normalised(text, NO_BREAKS)
    kept_parts = parts[0::2]
    kept = list(accumulate(map(len, kept_parts[:-1])))
    removed = list(accumulate(map(len, parts[1::2])))
    encoded = list(map(_ENCODE, kept_parts))
    landmarks = Utf8(b"".join(encoded), list(accumulate(map(len, encoded[:-1]), initial=0)), [0, *kept])
    return Normalised("".join(kept_parts), (kept, removed), landmarks)


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


def normalise(text: str, *, invisible: bool | None = None) -> Normalised:
    """The text the rules see, and its breakpoints as columns (see :data:`Breaks`). ``invisible=False``
    says the caller knows ``text`` has no invisible character (see :data:`INVISIBLE_BYTES`); ``None``
    looks."""
    if not (has_invisible(text) if invisible is None else invisible):
        return _strip_escapes(text) if "\x1b" in text else Normalised(text, NO_BREAKS)
    pieces: list[str] = []
    kept_at: list[int] = []
    removed_at: list[int] = []
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
        kept_at.append(kept)
        removed_at.append(removed)
    if not kept_at:
        return Normalised(text, NO_BREAKS)
    pieces.append(text[cursor:])
    return Normalised("".join(pieces), (kept_at, removed_at))


class OffsetMap:
    """Absolute normalised offsets to absolute original offsets, for a text that grows and is trimmed.

    One segment per appended piece: where it starts (normalised), its shift, and its own breakpoints,
    kept as they came (appending is O(1); a lookup is two bisections)."""

    def __init__(self) -> None:
        self._starts: list[int] = [0]
        self._segments: list[tuple[int, list[int], list[int]]] = [(0, [], [])]

    def extend(self, norm_at: int, orig_at: int, breaks: Breaks) -> None:
        """A piece was appended at ``norm_at`` (normalised) / ``orig_at`` (original)."""
        kept, removed = breaks
        segment = (orig_at - norm_at, kept, removed)
        if self._starts[-1] == norm_at:  # the piece before normalised to nothing: this one takes over
            self._segments[-1] = segment
        elif kept or segment[0] != self._segments[-1][0] or self._segments[-1][1]:
            self._starts.append(norm_at)
            self._segments.append(segment)

    def original(self, norm: int) -> int:
        i = bisect.bisect_right(self._starts, norm) - 1 if len(self._starts) > 1 else 0
        shift, kept, removed = self._segments[i]
        if kept:
            k = bisect.bisect_right(kept, norm - self._starts[i]) - 1
            if k >= 0:
                return norm + shift + removed[k]
        return norm + shift

    def trim(self, before: int) -> None:
        """Forget segments no offset at or after ``before`` needs."""
        keep = bisect.bisect_right(self._starts, before) - 1
        if keep > 0:
            del self._starts[:keep]
            del self._segments[:keep]
