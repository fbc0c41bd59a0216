"""A scripted model that speaks the Responses API, for tests and the offline demo.

It is not a language model: each ``POST /v1/responses`` is answered with the next turn of a script
(a list of output items) as server-sent events, which is enough to drive the real Codex CLI through
commands, file edits, tool calls and a final message. Every request body is kept for assertions
(for instance, which tools the model was offered).

Run standalone: ``python -m hydra_sandbox.scripted_model --script FILE [--host 127.0.0.1] [--port 0]``;
the URL goes to stderr, stdout stays empty.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, Field, model_validator

MAX_BODY = 32 * 1024 * 1024


SESSION_ID = re.compile(r"\bs-[0-9a-f]{12}\b")
"""Hydra's session ids; ``{{session_id}}`` in an MCP call's arguments becomes the last one the
request mentions (e.g. the id a ``spawn_agent`` call returned), so a script can follow it up.
``{{result_session_id}}`` becomes the first one in the latest tool output: the session a
``spawn_agent`` or ``wait_session`` answered about, even when the answer also names its parent."""


class McpCall(BaseModel):
    namespace: str = "mcp__hydra"
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptItem(BaseModel):
    """Exactly one of: a shell command, a final message, an MCP tool call, or an HTTP error."""

    exec: str | None = None
    yield_ms: int | None = Field(
        default=None, ge=0, description="exec only: how long Codex waits for the command before answering (<= 30000)."
    )
    message: str | None = None
    mcp_call: McpCall | None = None
    error_status: int | None = None

    @model_validator(mode="after")
    def _one(self) -> ScriptItem:
        if sum(v is not None for v in (self.exec, self.message, self.mcp_call, self.error_status)) != 1:
            raise ValueError("a script item has exactly one of exec, message, mcp_call, error_status")
        return self


class ScriptRoute(BaseModel):
    """Turns for the requests whose body contains ``match`` (e.g. a marker in one agent's task)."""

    match: str = Field(min_length=1)
    turns: list[list[ScriptItem]]


class Script(BaseModel):
    """Turns, in order: every request to the model gets the next one. With ``routes``, a request
    whose body contains a route's ``match`` (the first such route) takes that route's next turn
    instead, so several agents can share one model server without racing for turns."""

    turns: list[list[ScriptItem]] = Field(default_factory=list)
    routes: list[ScriptRoute] = Field(default_factory=list)
    label: str = "scripted model (not a real model)"


_ids = itertools.count(1)


def _fill(value: Any, ids: dict[str, str | None]) -> Any:
    if isinstance(value, str):
        for name, session_id in ids.items():
            if "{{" + name + "}}" in value:
                if session_id is None:
                    raise ValueError(f"the script uses {{{{{name}}}}} but the request holds no such session id")
                value = value.replace("{{" + name + "}}", session_id)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _output_item(item: ScriptItem, body: str = "") -> dict[str, Any]:
    n = next(_ids)
    if item.exec is not None:
        return {
            "type": "function_call",
            "id": f"fc_{n}",
            "call_id": f"call_{n}",
            "name": "exec_command",
            "arguments": json.dumps({"cmd": item.exec, **({"yield_time_ms": item.yield_ms} if item.yield_ms else {})}),
        }
    if item.mcp_call is not None:
        return {
            "type": "function_call",
            "id": f"fc_{n}",
            "call_id": f"call_{n}",
            "namespace": item.mcp_call.namespace,
            "name": item.mcp_call.name,
            "arguments": json.dumps(
                _fill(
                    item.mcp_call.arguments,
                    {"session_id": _last_session_id(body), "result_session_id": _result_session_id(body)},
                )
            ),
        }
    return {
        "type": "message",
        "id": f"msg_{n}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": item.message or "", "annotations": []}],
    }


def _last_session_id(body: str) -> str | None:
    found = SESSION_ID.findall(body)
    return found[-1] if found else None


def _result_session_id(body: str) -> str | None:
    """The first session id in the latest tool output (``*_output`` item) of the request's input."""
    try:
        items = json.loads(body).get("input", [])
    except (ValueError, AttributeError):
        return None
    outputs = [i for i in items if isinstance(i, dict) and str(i.get("type", "")).endswith("_output")]
    if not outputs:
        return None
    output = outputs[-1].get("output")
    found = SESSION_ID.search(output if isinstance(output, str) else json.dumps(output))
    return found.group(0) if found else None


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class ScriptedModel:
    """``async with ScriptedModel(script) as model: model.base_url`` — serves on 127.0.0.1."""

    def __init__(self, script: Script, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script = script
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self._turn = 0
        self._route_turns = [0] * len(script.routes)
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> ScriptedModel:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def next_turn(self, body: str = "") -> list[ScriptItem]:
        for index, route in enumerate(self.script.routes):
            if route.match in body:
                n = self._route_turns[index]
                self._route_turns[index] += 1
                return route.turns[n] if n < len(route.turns) else [ScriptItem(message="done")]
        if self._turn < len(self.script.turns):
            turn = self.script.turns[self._turn]
        else:
            turn = [ScriptItem(message="done")]
        self._turn += 1
        return turn

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in {b"\r\n", b"\n", b""}:
                        break
                    key, _, value = line.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    await self._respond(writer, 413, b"{}", "application/json")
                    return
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and path.rstrip("/").endswith("/responses"):
                    await self._responses(writer, body)
                elif method == "GET" and path.rstrip("/").endswith("/models"):
                    await self._respond(
                        writer, 200, json.dumps({"object": "list", "data": []}).encode(), "application/json"
                    )
                else:
                    await self._respond(writer, 404, b'{"error": "not found"}', "application/json")
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
        )
        await writer.drain()

    async def _responses(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        try:
            self.requests.append(json.loads(body or b"{}"))
        except json.JSONDecodeError:
            self.requests.append({"unparsable": body[:200].decode("latin-1")})
        text = body.decode("utf-8", "replace")
        turn = self.next_turn(text)
        if turn and turn[0].error_status is not None:
            payload = json.dumps({"error": {"message": "scripted failure", "type": "server_error"}}).encode()
            await self._respond(writer, turn[0].error_status, payload, "application/json")
            return
        response_id = f"resp_{next(_ids)}"
        chunks = [
            _sse(
                "response.created", {"type": "response.created", "response": {"id": response_id, "object": "response"}}
            )
        ]
        for item in turn:
            chunks.append(
                _sse(
                    "response.output_item.done", {"type": "response.output_item.done", "item": _output_item(item, text)}
                )
            )
        chunks.append(
            _sse(
                "response.completed",
                {
                    "type": "response.completed",
                    "response": {
                        "id": response_id,
                        "object": "response",
                        "usage": {
                            "input_tokens": 100,
                            "input_tokens_details": {"cached_tokens": 0},
                            "output_tokens": 20,
                            "output_tokens_details": {"reasoning_tokens": 0},
                            "total_tokens": 120,
                        },
                    },
                },
            )
        )
        payload = b"".join(chunks)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()


def load_script(path: Path) -> Script:
    return Script.model_validate_json(path.read_text())


async def _serve(script: Script, host: str, port: int) -> None:
    async with ScriptedModel(script, host, port) as model:
        print(f"scripted model listening on {model.base_url} ({script.label})", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(load_script(args.script), args.host, args.port))


if __name__ == "__main__":
    main()
