"""Bytes from an agent container to events: decoded, split into lines, masked, parsed, numbered, and runs
of plain lines coalesced into ``output`` events (:mod:`hydra_sandbox.sandbox.coalesce`)."""

from __future__ import annotations

import asyncio
import codecs
import time

from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import LineMasker, SecretMasker
from hydra_sandbox.sandbox.coalesce import MAX_OUTPUT_LINE, Clock, LineGroups, cut_line
from hydra_sandbox.sandbox.protocol import EventSink
from hydra_sandbox.sandbox.spec import LogStream

STDERR_SEQ_BASE = 1_000_000_000
"""stderr events are numbered apart from stdout ones, so a replay numbers both the same way."""
MAX_LINE = 1_000_000
"""Longer lines are cut, so a process that never prints a newline cannot grow memory."""


class OutputPipeline:
    """Bytes from the container → lines → events (each with ``seq``) → sink.

    stdout is Codex's JSONL: each line is parsed first and every string the parser emits is masked (a
    JSON line holds whole secrets, escaped; masking the decoded values also catches a known secret that
    contains a quote). stderr, and stdout lines that are not JSON objects, are masked line by line,
    holding only multi-line private key blocks (a key printed raw spans lines; no single line shows it
    is one). Lines longer than :data:`MAX_LINE` are cut so a process that never prints a newline cannot grow memory.

    Every line is numbered (``seq``) as if it were its own event. Plain lines (masked) are gathered into
    groups (:class:`~hydra_sandbox.sandbox.coalesce.LineGroups`); a group is sent before any other event
    (so a Codex event keeps its place among the output), when full, at the end of a chunk once it is
    ``window_s`` old, by a timer when no chunk comes, and at :meth:`close`.
    """

    def __init__(
        self,
        masker: SecretMasker,
        parser: CodexEventParser,
        sink: EventSink,
        *,
        clock: Clock = time.monotonic,
        groups: LineGroups | None = None,
    ) -> None:
        self._decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        self._partial = {"stdout": "", "stderr": ""}
        self._seq = {"stdout": 0, "stderr": STDERR_SEQ_BASE}
        self._stderr = LineMasker(masker)
        self._stdout_text = LineMasker(masker)
        self._parser = parser
        self._sink = sink
        self._groups = groups or LineGroups(clock)
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    async def feed(self, stream: LogStream, chunk: bytes) -> None:
        self._raise_timer_error()
        async with self._lock:
            await self._lines(stream, self._decoders[stream].decode(chunk))
            if self._groups.due():
                await self._flush_group()
            elif self._groups.pending:
                self._arm_timer()
        await asyncio.sleep(0)  # a chunk that closed no group awaited nothing: let other calls run between chunks

    async def close(self) -> None:
        async with self._lock:
            for stream in ("stdout", "stderr"):
                await self._lines(stream, self._decoders[stream].decode(b"", final=True), final=True)  # type: ignore[arg-type]
            await self._stdout_masked(self._stdout_text.flush())
            await self._plain("stderr", self._stderr.flush())
            for draft in self._parser.finish():
                await self._emit("stdout", draft)
            await self._flush_group()
        self.discard()
        self._raise_timer_error()

    async def flush_pending(self) -> None:
        """Send the open group now: a run that fails before :meth:`close` still records the lines it grouped."""
        async with self._lock:
            await self._flush_group()

    def discard(self) -> None:
        """Stop the group timer (a run that ends without :meth:`close`: lines still grouped are not sent)."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()

    def _raise_timer_error(self) -> None:
        """A failure of the sink in the timer's flush surfaces on the next feed or at close."""
        timer = self._timer
        if timer is not None and timer.done() and not timer.cancelled() and timer.exception() is not None:
            self._timer = None
            raise timer.exception()  # type: ignore[misc]

    def _arm_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._groups.window_s)
        async with self._lock:
            await self._flush_group()

    async def _flush_group(self) -> None:
        for draft in self._groups.flush():
            await self._sink(draft)

    async def _lines(self, stream: LogStream, text: str, final: bool = False) -> None:
        *lines, rest = (self._partial[stream] + text).split("\n")
        if final and rest:
            lines.append(rest)
            rest = ""
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE] + " [hydra: line cut]")
            rest = rest[MAX_LINE:]
        self._partial[stream] = rest
        lines = list(filter(str.strip, lines))  # blank lines are dropped
        if stream == "stderr":
            await self._plain("stderr", self._stderr.feed_lines(lines))
            return
        text_run: list[str] = []
        for line in lines:
            if not line.lstrip().startswith("{"):
                text_run.append(line)
                continue
            await self._text_lines(text_run)
            text_run = []
            if self._stdout_text.holding:
                await self._text_lines([line])
            else:
                await self._parse(line)
        await self._text_lines(text_run)

    async def _text_lines(self, lines: list[str]) -> None:
        """stdout lines that are not JSON objects: masked (in one call for a run of them)."""
        if lines:
            await self._stdout_masked(self._stdout_text.feed_lines(lines))

    async def _stdout_masked(self, lines: list[str]) -> None:
        """Masked stdout lines: a JSON object (held with a key block) is parsed, anything else is output."""
        plain: list[str] = []
        for line in lines:
            if line.lstrip().startswith("{"):
                await self._plain("stdout", plain)
                plain = []
                await self._parse(line, masked=True)
            elif line.strip():
                plain.append(line)
        await self._plain("stdout", plain)

    async def _parse(self, line: str, *, masked: bool = False) -> None:
        for draft in self._parser.feed_line(line, masked=masked):
            await self._emit("stdout", draft)

    async def _plain(self, stream: LogStream, lines: list[str]) -> None:
        """Masked plain lines: numbered one by one, added to the open group; closed groups are sent."""
        if not lines:
            return
        if max(map(len, lines)) > MAX_OUTPUT_LINE:
            lines = [cut_line(line) for line in lines]
        seq = self._seq[stream]
        self._seq[stream] += len(lines)
        for draft in self._groups.add_lines(stream, lines, seq):
            await self._sink(draft)

    async def _emit(self, stream: LogStream, draft: EventDraft) -> None:
        await self._flush_group()  # output printed before this event is recorded before it
        seq = self._seq[stream]
        self._seq[stream] += 1
        # the draft is this pipeline's own (the parser keeps none): numbered in place, not copied
        draft.data = {**draft.data, "seq": seq, "stream": stream}
        await self._sink(draft)
