"""The scripted model: a Responses-API server that answers Codex from a script, for tests and demos.

It is not a language model: each ``POST /v1/responses`` gets the next turn of the script as
server-sent events, enough to drive the real Codex CLI through commands, MCP tool calls, replies and
failures. Every request body is kept for assertions (``model.requests``, with each one's Authorization
header in ``model.authorizations``), and ``model.report()`` says
how far each conversation got and what the script could not answer.

In-process: ``async with ScriptedModel(script) as model: model.base_url``. As its own process (or
container, see :class:`hydra_sandbox.testing.ScriptedModelContainer`):
``python -m hydra_sandbox.testing.model --script FILE [--host 127.0.0.1] [--port 0]``; the URL goes to
stderr. Besides ``/v1/responses`` it answers ``GET /_scripted/report`` and ``GET /_scripted/requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra_sandbox.errors import ConfigError, ScriptError
from hydra_sandbox.testing.engine import Answer, CompiledScript, ScriptReport, ScriptState, compile_script
from hydra_sandbox.testing.script import ModelScript, load_script

MAX_BODY = 32 * 1024 * 1024
USAGE = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 120,
}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def event_stream(response_id: str, items: list[dict[str, Any]]) -> bytes:
    """A whole streamed response: created, one ``output_item.done`` per item, completed with usage."""
    chunks = [_sse("response.created", {"type": "response.created", "response": {"id": response_id}})]
    for item in items:
        chunks.append(_sse("response.output_item.done", {"type": "response.output_item.done", "item": item}))
    done = {"id": response_id, "object": "response", "usage": USAGE}
    chunks.append(_sse("response.completed", {"type": "response.completed", "response": done}))
    return b"".join(chunks)


class ScriptedModel:
    """``async with ScriptedModel(script) as model`` serves on ``host`` (loopback by default) until the
    block ends. ``script`` is a :class:`ModelScript` (see :func:`load_script`)."""

    def __init__(self, script: ModelScript | CompiledScript, host: str = "127.0.0.1", port: int = 0) -> None:
        compiled = compile_script(script) if isinstance(script, ModelScript) else script
        self.script = compiled
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []  # the Authorization header of each /responses request
        self.state = ScriptState(compiled)
        self._server: asyncio.Server | None = None
        self._answered = 0

    @property
    def base_url(self) -> str:
        """What Hydra's ``HYDRA_MODEL_BASE_URL`` (or Codex's provider ``base_url``) should be."""
        return f"http://{self.host}:{self.port}/v1"

    def report(self) -> ScriptReport:
        return self.state.report()

    def raise_errors(self) -> None:
        """Raise a :class:`ScriptError` listing every request the script could not answer."""
        if self.state.errors:
            raise ScriptError("the scripted model could not answer:\n" + "\n".join(self.state.errors))

    async def __aenter__(self) -> ScriptedModel:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request_line = await reader.readline()
        if not request_line:
            return False
        method, path, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in {b"\r\n", b"\n", b""}:
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            await self._respond(writer, 413, {"error": {"message": "request too large"}})
            return False
        body = await reader.readexactly(length) if length else b""
        route = path.split("?", 1)[0].rstrip("/")
        if method == "POST" and route.endswith("/responses"):
            self.authorizations.append(headers.get("authorization"))
            await self._responses(writer, body)
        elif method == "GET" and route.endswith("/models"):
            await self._respond(writer, 200, {"object": "list", "data": []})
        elif method == "GET" and route == "/_scripted/report":
            await self._respond(writer, 200, self.report().model_dump(mode="json"))
        elif method == "GET" and route == "/_scripted/requests":
            await self._respond(writer, 200, self.requests)
        else:
            await self._respond(writer, 404, {"error": {"message": f"no route {method} {route}"}})
        return True

    async def _respond(self, writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    async def _responses(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(body or b"{}")
        except json.JSONDecodeError:
            parsed = {"unparsable": text[:200]}
        self.requests.append(parsed if isinstance(parsed, dict) else {"unparsable": text[:200]})
        answer: Answer = self.state.answer(self.requests[-1], text)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)  # the script asks for a slow model: this is its behaviour
        if answer.error is not None:
            await self._respond(writer, answer.status, {"error": {"message": answer.error, "type": "server_error"}})
            return
        self._answered += 1
        payload = event_stream(f"resp_{self._answered}", answer.items)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()


async def _serve(script: ModelScript, host: str, port: int) -> None:
    async with ScriptedModel(script, host, port) as model:
        print(f"scripted model listening on {model.base_url} ({script.label})", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted Responses-API model (not a real model).")
    parser.add_argument("--script", type=Path, required=True, help="a script file (YAML or .json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(script, args.host, args.port))


if __name__ == "__main__":
    main()
