"""Runs of plain output lines into one ``output`` event, bounded by size, line count and time.

An agent that prints a million two-byte lines would otherwise make a million journaled events (each
about 490 bytes and a transaction). Consecutive plain lines of one stream (stderr, or stdout lines that
are not Codex JSON) are gathered into one group; the group becomes one event whose ``text`` is its lines
joined with ``"\\n"`` and whose ``data`` says ``lines`` (how many) and ``first_line_seq`` (the number its
first line would have had as its own event). Its ``seq`` is its last line's number, so numbering and the
recorder's re-attach dedup work per line exactly as they did when each line was an event.

Lines arrive here masked (one by one, by the pipeline's :class:`~hydra_sandbox.masking.LineMasker`); a
group is never masked again as a whole (the draft says so, see :meth:`EventDraft.mark_text_masked`).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from hydra_sandbox.events import EventDraft
from hydra_sandbox.sandbox.spec import LogStream

MAX_GROUP_CHARS = 64 * 1024
"""A group's text is at most this many characters (a single longer line is its own group)."""
MAX_GROUP_LINES = 16_384
"""A group holds at most this many lines (so a re-attach trims a bounded list)."""
GROUP_WINDOW_S = 0.2
"""A group older than this is flushed at the end of the chunk, or by the pipeline's timer if no chunk comes."""
MAX_OUTPUT_LINE = 4_000
"""A plain line longer than this is cut (as a stderr line always was), marked as cut."""

Clock = Callable[[], float]


def cut_line(line: str) -> str:
    """``line``, cut to :data:`MAX_OUTPUT_LINE` characters with a visible marker."""
    return line if len(line) <= MAX_OUTPUT_LINE else line[:MAX_OUTPUT_LINE] + " [hydra: line cut]"


@dataclass
class _Group:
    stream: LogStream
    first_seq: int
    started: float
    lines: list[str] = field(default_factory=list)
    last_seq: int = 0
    chars: int = 0


def output_draft(stream: LogStream, lines: list[str], first_seq: int, last_seq: int) -> EventDraft:
    """The event for a group of masked lines (its text is not masked again)."""
    draft = EventDraft(
        type="output",
        text="\n".join(lines),
        tags=[stream],
        data={"stream": stream, "seq": last_seq, "lines": len(lines), "first_line_seq": first_seq},
    )
    draft.mark_text_masked()
    return draft


class LineGroups:
    """At most one open group of plain lines. :meth:`add` returns the events it closed, in order."""

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        max_chars: int = MAX_GROUP_CHARS,
        max_lines: int = MAX_GROUP_LINES,
        window_s: float = GROUP_WINDOW_S,
    ) -> None:
        self._clock = clock
        self.max_chars, self.max_lines, self.window_s = max_chars, max_lines, window_s
        self._open: _Group | None = None

    @property
    def pending(self) -> bool:
        return self._open is not None

    def due(self) -> bool:
        """Whether the open group began at least ``window_s`` ago."""
        return self._open is not None and self._clock() - self._open.started >= self.window_s

    def add(self, stream: LogStream, line: str, seq: int) -> list[EventDraft]:
        """Add one masked line numbered ``seq`` (see :meth:`add_lines`)."""
        return self.add_lines(stream, [line], seq)

    def add_lines(self, stream: LogStream, lines: list[str], first_seq: int) -> list[EventDraft]:
        """Add masked lines numbered from ``first_seq`` on; returns the events of the groups this closed.

        A group of another stream is closed first; a group is closed once it holds ``max_lines`` lines
        or the next line would take its text past ``max_chars`` (a single longer line is a group of its
        own). Lines are taken in slices, not one by one: a flood costs list operations, not calls."""
        closed: list[EventDraft] = []
        ends = [0, *accumulate(map(len, lines))]  # ends[j] + j: text length of lines[:j] with separators

        def width(j: int) -> int:
            return ends[j] + j

        done = 0
        while done < len(lines):
            group = self._open
            if group is not None and group.stream != stream:
                closed += self.flush()
                group = None
            if group is None:
                group = self._open = _Group(stream, first_seq + done, self._clock())
            budget = self.max_chars + 1 - group.chars  # chars counts each line with its separator
            fit = bisect_right(range(done, len(lines) + 1), width(done) + budget, key=width) - 1
            take = min(fit, self.max_lines - len(group.lines))
            if take == 0 and group.lines:
                closed += self.flush()
                continue
            take = max(take, 1)
            group.lines += lines[done : done + take]
            group.chars += width(done + take) - width(done)
            group.last_seq = first_seq + done + take - 1
            done += take
            if len(group.lines) >= self.max_lines or group.chars > self.max_chars:
                closed += self.flush()
        return closed

    def flush(self) -> list[EventDraft]:
        """The open group's event (none when no group is open)."""
        group, self._open = self._open, None
        if group is None:
            return []
        return [output_draft(group.stream, group.lines, group.first_seq, group.last_seq)]
