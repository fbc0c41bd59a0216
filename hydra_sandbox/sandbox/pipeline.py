"""Bytes from an agent container to events: decoded, split into lines, masked, parsed, numbered."""

from __future__ import annotations

import codecs

from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import LineMasker, SecretMasker
from hydra_sandbox.sandbox.protocol import EventSink
from hydra_sandbox.sandbox.spec import LogStream

STDERR_SEQ_BASE = 1_000_000_000
"""stderr events are numbered apart from stdout ones, so a replay numbers both the same way."""
MAX_LINE = 1_000_000
"""Longer lines are cut, so a process that never prints a newline cannot grow memory."""


class OutputPipeline:
    """Bytes from the container → lines → events (each with ``seq``) → sink, as soon as a line is complete.

    stdout is Codex's JSONL: each line is parsed first and every string the parser emits is masked (a
    JSON line holds whole secrets, escaped; masking the decoded values also catches a known secret that
    contains a quote). stderr, and stdout lines that are not JSON objects, are masked line by line,
    holding only multi-line private key blocks (a key printed raw spans lines; no single line shows it
    is one). Lines longer than :data:`MAX_LINE` are cut so a process that never prints a newline cannot grow memory.
    """

    def __init__(self, masker: SecretMasker, parser: CodexEventParser, sink: EventSink) -> None:
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

    async def feed(self, stream: LogStream, chunk: bytes) -> None:
        await self._lines(stream, self._decoders[stream].decode(chunk))

    async def close(self) -> None:
        for stream in ("stdout", "stderr"):
            await self._lines(stream, self._decoders[stream].decode(b"", final=True), final=True)  # type: ignore[arg-type]
        for line in self._stdout_text.flush():
            await self._parse(line, masked=True)
        for line in self._stderr.flush():
            await self._emit_stderr(line)
        for draft in self._parser.finish():
            await self._emit("stdout", draft)

    async def _lines(self, stream: LogStream, text: str, final: bool = False) -> None:
        *lines, rest = (self._partial[stream] + text).split("\n")
        if final and rest:
            lines.append(rest)
            rest = ""
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE] + " [hydra: line cut]")
            rest = rest[MAX_LINE:]
        self._partial[stream] = rest
        lines = [line for line in lines if line.strip()]
        if stream == "stderr":
            for masked in self._stderr.feed_lines(lines):
                await self._emit_stderr(masked)
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
        """stdout lines that are not JSON objects: masked (in one call for a run of them) before parsing."""
        for masked in self._stdout_text.feed_lines(lines) if lines else ():
            await self._parse(masked, masked=True)

    async def _parse(self, line: str, *, masked: bool = False) -> None:
        for draft in self._parser.feed_line(line, masked=masked):
            await self._emit("stdout", draft)

    async def _emit_stderr(self, line: str) -> None:
        await self._emit(
            "stderr", EventDraft(type="message", text=line[:4000], tags=["stderr"], data={"stream": "stderr"})
        )

    async def _emit(self, stream: LogStream, draft: EventDraft) -> None:
        seq = self._seq[stream]
        self._seq[stream] += 1
        # the draft is this pipeline's own (the parser keeps none): numbered in place, not copied
        draft.data = {**draft.data, "seq": seq, "stream": stream}
        await self._sink(draft)
