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
_ESC_TAIL = re.compile(r"\[[0-?]*[ -/]*[@-~]|\][^\x07]{0,512}\x07")
_ESC_TWO = re.compile(r"[@-Z\\-_]")
"""The rest of an escape sequence after its ESC, when the text is split at each ESC (CSI and OSC ended by
BEL, an OSC ended by ESC \\, then two-character escapes: the order of :data:`_REMOVABLE`)."""
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


def _add_break(breaks: list[tuple[int, int]], kept: int, removed: int) -> None:
    if breaks and breaks[-1][0] == kept:
        breaks[-1] = (kept, removed)
    else:
        breaks.append((kept, removed))


def _strip_escapes(text: str) -> tuple[str, list[tuple[int, int]]]:
    """:func:`normalise` for text whose only removable characters start with ESC: split at each ESC (at
    memory speed) and cut the sequence off the front of each piece, as :data:`_REMOVABLE` would."""
    parts = text.split("\x1b")
    out = [parts[0]]
    breaks: list[tuple[int, int]] = []
    kept, removed, skip = len(parts[0]), 0, 0
    for i in range(1, len(parts)):
        part = parts[i]
        if skip:  # this ESC starts the string terminator of the OSC removed with the piece before
            cut, skip = 1, 0
        elif (match := _ESC_TAIL.match(part)) is not None:
            cut = match.end()
        elif part[:1] == "]" and "\x07" not in part[:513] and len(part) <= 513 and parts[i + 1 : i + 2] and (
            parts[i + 1][:1] == "\\"
        ):
            cut, skip = len(part), 1  # an OSC string ended by ESC \
        elif (match := _ESC_TWO.match(part)) is not None:
            cut = match.end()
        else:
            out.append("\x1b" + part)
            kept += 1 + len(part)
            continue
        removed += 1 + cut
        _add_break(breaks, kept, removed)
        out.append(part[cut:])
        kept += len(part) - cut
    return ("".join(out), breaks) if breaks else (text, [])


def normalise(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text the rules see, and breakpoints ``(i, d)``: from normalised index ``i`` on (until the next
    breakpoint), the original index is ``i + d``."""
    if text.isascii():
        return _strip_escapes(text) if "\x1b" in text else (text, [])
    if not any(char in text for char in _STARTS[1:]):
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
