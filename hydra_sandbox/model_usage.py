"""Token usage read from model responses as they stream past the gateway, in bounded memory.

The Responses API reports usage once per response: in a server-sent event stream, in the ``response``
object of the final ``response.completed`` (or ``response.incomplete`` / ``response.failed``) event; in a
JSON response, as the response's top-level ``usage``. Chat-style ``prompt_tokens`` /
``completion_tokens`` are read too. :class:`UsageReader` sees a copy of the bytes the agent receives,
keeps only the data of the events that can carry usage (each up to a limit), and never holds the agent
up: the bytes are forwarded before they are parsed.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field, ValidationError

MAX_USAGE_EVENT = 8 * 1024 * 1024
"""The largest final event (or JSON body) read for usage; a final event repeats the whole output."""

_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "response.done"})


class TokenUsage(BaseModel):
    """Tokens one model response used. ``known`` is false when a successful response reported no usage
    Hydra could read (cut short, too large, or a server that does not report it)."""

    input_tokens: int = Field(default=0, ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    known: bool = True
    path: str = ""
    status: int = 200
    seq: int | None = Field(
        default=None,
        ge=0,
        description="The response's place among its gateway's reports, when the gateway numbers them (one in "
        "a container beside the agent, whose log a re-attaching server reads again from the start).",
    )

    @classmethod
    def from_usage(cls, usage: dict[str, Any], path: str = "", status: int = 200) -> TokenUsage:
        """From a Responses (``input_tokens``...) or Chat Completions (``prompt_tokens``...) usage object."""
        details_in = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
        details_out = usage.get("output_tokens_details") or usage.get("completion_tokens_details") or {}
        input_tokens = usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0
        output_tokens = usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0
        return cls(
            input_tokens=input_tokens,
            cached_input_tokens=(details_in.get("cached_tokens") or 0) if isinstance(details_in, dict) else 0,
            output_tokens=output_tokens,
            reasoning_tokens=(details_out.get("reasoning_tokens") or 0) if isinstance(details_out, dict) else 0,
            total_tokens=usage.get("total_tokens") or input_tokens + output_tokens,
            path=path,
            status=status,
        )

    @classmethod
    def unknown(cls, path: str = "", status: int = 200) -> TokenUsage:
        return cls(known=False, path=path, status=status)


def _usage_in(payload: Any) -> dict[str, Any] | None:
    if not isinstance(payload, dict):
        return None
    response = payload.get("response")
    for holder in (response, payload):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            usage: dict[str, Any] = holder["usage"]
            return usage
    return None


class UsageReader:
    """Feed it the response body as it passes (``feed``), then ask for the usage (``result``)."""

    def __init__(self, content_type: str, path: str, status: int, limit: int = MAX_USAGE_EVENT) -> None:
        self.streaming = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        self.path, self.status, self.limit = path, status, limit
        self._usage: dict[str, Any] | None = None
        self._line = bytearray()  # the current, unfinished line
        self._skip_line = False  # the current line outgrew the limit: drop it up to its end
        self._event = ""  # the current event's ``event:`` name
        self._data = bytearray()  # the current event's data, kept only while it may carry usage
        self._keep = True
        self._body = bytearray()  # JSON responses: the body, up to the limit
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if not self.streaming:
            if len(self._body) + len(chunk) > self.limit:
                self._overflow = True
            else:
                self._body += chunk
            return
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._take_line(chunk[start:end])
            start = end + 1
        self._take_line(chunk[start:], finished=False)

    def _take_line(self, part: bytes, finished: bool = True) -> None:
        if not self._skip_line:
            if len(self._line) + len(part) > self.limit:
                self._line.clear()
                self._skip_line = True
                self._keep = False
            else:
                self._line += part
        if not finished:
            return
        line = bytes(self._line).rstrip(b"\r")
        self._line.clear()
        if self._skip_line:
            self._skip_line = False
            return
        self._line_done(line)

    def _line_done(self, line: bytes) -> None:
        if not line:
            self._dispatch()
            return
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"event":
            self._event = value.decode("utf-8", "replace").strip()
            self._keep = self._keep and self._event in _FINAL_EVENTS
        elif field == b"data" and self._keep:
            if len(self._data) + len(value) + 1 > self.limit:
                self._data.clear()
                self._keep = False
            else:
                self._data += (b"\n" if self._data else b"") + value

    def _dispatch(self) -> None:
        data, event = bytes(self._data), self._event
        self._data.clear()
        self._event, self._keep = "", True
        if not data or (event and event not in _FINAL_EVENTS):
            return
        if not event and not any(name.encode() in data for name in _FINAL_EVENTS):
            return
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if isinstance(payload, dict) and (event or payload.get("type")) in _FINAL_EVENTS:
            self._usage = _usage_in(payload) or self._usage

    def result(self) -> TokenUsage:
        """The usage the response reported, or an ``unknown`` one."""
        if not self.streaming and not self._overflow and self._body:
            try:
                self._usage = _usage_in(json.loads(self._body))
            except ValueError:
                self._usage = None
        elif self.streaming and self._line:
            self._take_line(b"")  # a last line without its newline
            self._dispatch()
        if self._usage is None:
            return TokenUsage.unknown(self.path, self.status)
        try:
            return TokenUsage.from_usage(self._usage, self.path, self.status)
        except (ValidationError, TypeError):
            return TokenUsage.unknown(self.path, self.status)
