"""Token usage read from the bytes of a model response as they pass, whatever the chunking."""

from __future__ import annotations

import json

import pytest

from hydra_sandbox.model_usage import TokenUsage, UsageReader

USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1000},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 12},
    "total_tokens": 1230,
}


def sse(*events: tuple[str | None, dict[str, object]], newline: bytes = b"\n") -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += b"event: " + name.encode() + newline
        out += b"data: " + json.dumps(data).encode() + newline + newline
    return out


STREAM = sse(
    ("response.created", {"type": "response.created", "response": {"id": "r1"}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "usage"}),
    ("response.completed", {"type": "response.completed", "response": {"id": "r1", "usage": USAGE}}),
)


def read(body: bytes, content_type: str = "text/event-stream", chunk: int = 0, limit: int = 1 << 20) -> TokenUsage:
    reader = UsageReader(content_type, "/v1/responses", 200, limit=limit)
    step = chunk or len(body) or 1
    for start in range(0, len(body), step):
        reader.feed(body[start : start + step])
    return reader.result()


def test_usage_of_a_completed_stream_is_read_whatever_the_chunking() -> None:
    for chunk in (0, 1, 2, 3, 7, 64):
        usage = read(STREAM, chunk=chunk)
        assert (usage.known, usage.input_tokens, usage.cached_input_tokens) == (True, 1200, 1000), chunk
        assert (usage.output_tokens, usage.reasoning_tokens, usage.total_tokens) == (30, 12, 1230), chunk


def test_crlf_lines_and_events_without_an_event_line_are_understood() -> None:
    body = sse((None, {"type": "response.completed", "response": {"usage": USAGE}}), newline=b"\r\n")
    assert read(body, chunk=5).total_tokens == 1230
    assert read(body.rstrip(b"\r\n")).total_tokens == 1230  # the last event without its blank line


def test_incomplete_and_failed_responses_count_too() -> None:
    for name in ("response.incomplete", "response.failed"):
        assert read(sse((name, {"type": name, "response": {"usage": USAGE}}))).output_tokens == 30


def test_a_stream_cut_before_completion_reports_unknown_usage() -> None:
    usage = read(STREAM[: STREAM.index(b"event: response.completed")])
    assert usage.known is False and usage.total_tokens == 0


def test_large_events_that_cannot_carry_usage_are_skipped_in_bounded_memory() -> None:
    big = "x" * 50_000
    body = sse(("response.output_text.delta", {"type": "response.output_text.delta", "delta": big})) + STREAM
    reader = UsageReader("text/event-stream", "/v1/responses", 200, limit=4096)
    for start in range(0, len(body), 1000):
        reader.feed(body[start : start + 1000])
        assert len(reader._data) <= 4096 and len(reader._line) <= 4096
    assert reader.result().total_tokens == 1230


def test_a_final_event_over_the_limit_reports_unknown_usage() -> None:
    body = sse(("response.completed", {"type": "response.completed", "response": {"pad": "p" * 5000, "usage": USAGE}}))
    assert read(body, limit=4096).known is False
    assert read(body, limit=8192).known is True


def test_json_responses_and_chat_style_usage_are_read() -> None:
    assert read(json.dumps({"id": "r", "usage": USAGE}).encode(), "application/json", chunk=10).total_tokens == 1230
    chat = {"usage": {"prompt_tokens": 7, "completion_tokens": 5}}
    usage = read(json.dumps(chat).encode(), "application/json; charset=utf-8")
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 5, 12)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"usage": {"input_tokens": -5}}).encode(),
        json.dumps({"usage": {"input_tokens": "many"}}).encode(),
        json.dumps({"usage": "none"}).encode(),
        json.dumps([1, 2]).encode(),
        b"",
    ],
)
def test_missing_or_malformed_usage_is_unknown_never_an_error(body: bytes) -> None:
    assert read(body, "application/json").known is False
