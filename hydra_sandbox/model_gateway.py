"""The model gateway: the agent's only way to its model, an HTTP reverse proxy that holds the credential.

Served on a per-session Unix socket (bind-mounted into the agent's container, where
``hydra-agent-entry`` relays ``127.0.0.1:PORT`` to it), a :class:`ModelGateway` speaks HTTP/1.1 to the
agent and to one configured upstream, and refuses everything else:

* only the configured routes (``POST {base}/responses`` and the like: exact paths, no ``..``, ``%`` or
  ``//``), only origin-form targets, only the Host values the agent is told to use; ``CONNECT`` and
  ``Upgrade`` are refused, so the gateway never becomes a tunnel;
* the request goes to the upstream only (TLS with certificate and host-name checks when it is https),
  with Host rewritten to the upstream's and the agent's own credentials, cookies and hop-by-hop
  headers dropped; the gateway **adds the credential itself**, so no key ever enters the sandbox;
* responses stream through as they arrive (server-sent events are never buffered); a copy of the bytes
  feeds :class:`~hydra_sandbox.model_usage.UsageReader`, and each response's token usage goes to the
  ``on_usage`` callback, which may answer with a reason to stop: from then on every request is refused
  with that reason (an optional token budget);
* bounded: request bodies (``max_body_bytes``), header size, connections, and idle, keep-alive and total
  timeouts; every refusal is answered once with a JSON error and counted in :attr:`stats`.

The same class, configured by :func:`mcp_gateway_config`, fronts Hydra's agent MCP endpoint on its Unix
socket and adds the agent's bearer token on the host side.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

import h11

from hydra_sandbox.egress_relay import CONNECT_TIMEOUT_S, Refusal, SocketService
from hydra_sandbox.gateway_config import GatewayConfig, mcp_gateway_config, model_gateway_config
from hydra_sandbox.model_usage import TokenUsage, UsageReader

__all__ = ["GatewayConfig", "ModelGateway", "UsageCallback", "mcp_gateway_config", "model_gateway_config"]

UsageCallback = Callable[[TokenUsage], str | Awaitable[str | None] | None]
"""Told each response's usage; returns a reason to stop serving (e.g. a spent budget), or ``None``."""

MAX_HEAD = 16 * 1024
HEADER_TIMEOUT_S = 10.0
POOL_SIZE = 8
POOL_IDLE_S = 30.0
USAGE_PATHS = ("/responses", "/responses/compact", "/chat/completions")

_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")
_QUERY = re.compile(r"[A-Za-z0-9._~%&=+,:-]*")
_DROPPED = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect", "accept-encoding",
        "authorization", "cookie", "api-key", "x-api-key", "forwarded", "x-forwarded-for", "x-forwarded-host",
        "x-forwarded-proto", "x-real-ip",
    }
)  # fmt: skip
_DROPPED_BACK = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "set-cookie"}
)


class _Reply(Exception):
    """Refuse the current request with ``status``; the connection is closed after the answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class _Peer:
    """One HTTP/1.1 connection, either side, driven through h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: Any) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = 0.0

    def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)

    async def next(self, timeout_s: float) -> h11.Event:
        """The next whole event, which must arrive within ``timeout_s`` (a head sent byte by byte too)."""
        async with asyncio.timeout(timeout_s):
            while True:
                event = self.conn.next_event()
                if event is not h11.NEED_DATA:
                    return event  # type: ignore[return-value]
                self.conn.receive_data(await self.reader.read(65536))

    @property
    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing() or self.reader.exception())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _header_names(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def _error_bytes(status: int, kind: str, message: str) -> bytes:
    error_type = "insufficient_quota" if kind == "budget" else "hydra_gateway"
    code = "insufficient_quota" if kind == "budget" else kind
    body = json.dumps({"error": {"message": f"hydra gateway: {message}", "type": error_type, "code": code}}).encode()
    head = f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def _reason(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase
    return "Error"


class ModelGateway(SocketService):
    """Serve ``config`` on ``socket_path`` (``async with``); see the module documentation."""

    name = "model gateway"
    answers_http = True

    def __init__(self, socket_path: Path, config: GatewayConfig, on_usage: UsageCallback | None = None) -> None:
        super().__init__(socket_path, idle_s=config.idle_s, total_s=config.total_s)
        self.config = config
        self.on_usage = on_usage
        self.stopped: str | None = None
        self.requests = 0
        self._idle: list[_Peer] = []
        self._ssl = self._tls_context() if config.tls else None
        self._allowed = {(m, config.base_path + p) for m, p in config.routes}
        self._dropped = _DROPPED | {config.credential_header.lower()}

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.config.ca_file) if self.config.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def stop(self, reason: str) -> None:
        """Refuse every further request with ``reason`` (e.g. a spent token budget)."""
        self.stopped = reason

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        for peer in self._idle:
            peer.close()
        self._idle.clear()

    # -- the agent's side --------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agent = _Peer(reader, writer, h11.SERVER)
        served = 0
        while True:
            try:
                event = await agent.next(self.config.keepalive_s if served else HEADER_TIMEOUT_S)
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    raise _Reply(400, "malformed", "expected a request")
                async with asyncio.timeout(self.config.total_s):
                    await self._exchange(agent, event)
            except TimeoutError:
                if served and agent.conn.our_state is h11.IDLE and agent.conn.their_state is h11.IDLE:
                    return  # an idle keep-alive connection: closed quietly
                self._refuse(agent, _Reply(408 if agent.conn.our_state is h11.IDLE else 504, "timeout", "timed out"))
                return
            except h11.RemoteProtocolError as exc:
                self._refuse(agent, _Reply(exc.error_status_hint, "malformed", f"malformed request: {exc}"))
                return
            except _Reply as reply:
                self._refuse(agent, reply)
                return
            served += 1
            if agent.conn.our_state is not h11.DONE or agent.conn.their_state is not h11.DONE:
                return
            agent.conn.start_next_cycle()

    def _refuse(self, agent: _Peer, reply: _Reply) -> None:
        self.stats.refuse(self.name, Refusal(reply.status, reply.kind, reply.message))
        if agent.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # nothing of a response sent yet
            agent.writer.write(_error_bytes(reply.status, reply.kind, reply.message))

    def _check(self, request: h11.Request) -> str:
        """The request's path if the gateway serves it, else a :class:`_Reply` saying why not."""
        method, target = request.method.decode("ascii", "replace"), request.target.decode("ascii", "replace")
        headers = {name: value for name, value in request.headers}
        if self.stopped:
            raise _Reply(429, "budget", self.stopped)
        if method == "CONNECT":
            raise _Reply(405, "method", "CONNECT is not served: this gateway only forwards model API requests")
        if b"upgrade" in headers or b"upgrade" in _header_names(headers.get(b"connection", b"")):
            raise _Reply(400, "upgrade", "protocol upgrades (Upgrade, WebSocket, h2c) are not served")
        host = headers.get(b"host", b"").decode("ascii", "replace").lower()
        if sum(1 for name, _ in request.headers if name == b"host") != 1 or host not in self.config.accepted_hosts:
            raise _Reply(403, "host", f"Host {host[:100]!r} is not this gateway; use {self.config.accepted_hosts[0]}")
        path, _, query = target.partition("?")
        segments = path.split("/")
        if not path.startswith("/") or not all(_SEGMENT.fullmatch(s) for s in segments[1:]) or not _QUERY.fullmatch(
            query
        ):
            raise _Reply(403, "path", f"request target {target[:100]!r} is not a plain path")
        if (method, path) not in self._allowed:
            served = ", ".join(f"{m} {p}" for m, p in sorted(self._allowed))
            raise _Reply(403, "route", f"{method} {path[:100]} is not served here; only {served}")
        if b"transfer-encoding" in headers and b"content-length" in headers:
            raise _Reply(400, "malformed", "both Content-Length and Transfer-Encoding: a smuggling attempt")
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.config.max_body_bytes:
            raise _Reply(413, "body", f"request body over {self.config.max_body_bytes} bytes")
        return path

    def _upstream_headers(self, request: h11.Request) -> list[tuple[bytes, bytes]]:
        named = {n for name, value in request.headers if name == b"connection" for n in _header_names(value)}
        out = [(b"host", self.config.authority.encode()), (b"accept-encoding", b"identity")]
        out += [(n, v) for n, v in request.headers if n.decode() not in self._dropped and n not in named]
        framing = {name: value for name, value in request.headers if name in (b"content-length", b"transfer-encoding")}
        if b"transfer-encoding" in framing:
            out.append((b"transfer-encoding", b"chunked"))
        elif b"content-length" in framing:
            out.append((b"content-length", framing[b"content-length"]))
        if self.config.credential is not None:
            out.append((self.config.credential_header.encode(), self.config.credential.get_secret_value().encode()))
        return out

    # -- one exchange ------------------------------------------------------------------------------

    async def _exchange(self, agent: _Peer, request: h11.Request) -> None:
        path = self._check(request)
        self.requests += 1
        upstream = await self._acquire()
        reusable = False
        usage: UsageReader | None = None
        try:
            headers_up = self._upstream_headers(request)
            upstream.send(h11.Request(method=request.method, target=request.target, headers=headers_up))
            await self._forward_body(agent, upstream)
            response = await self._response_head(upstream)
            headers = [(n, v) for n, v in response.headers if n.decode() not in _DROPPED_BACK]
            if self.config.record_usage and 200 <= response.status_code < 300 and path.endswith(USAGE_PATHS):
                content_type = dict(response.headers).get(b"content-type", b"").decode("latin-1")
                usage = UsageReader(content_type, path, response.status_code)
            agent.send(h11.Response(status_code=response.status_code, headers=headers, reason=response.reason))
            while True:
                event = await upstream.next(self.config.idle_s)
                if isinstance(event, h11.Data):
                    agent.send(event)
                    await agent.writer.drain()
                    if usage is not None:
                        usage.feed(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    agent.send(h11.EndOfMessage())
                    await agent.writer.drain()
                    break
                else:
                    raise ConnectionError(f"the upstream ended the response early ({type(event).__name__})")
            reusable = upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE
        except (h11.ProtocolError, ConnectionError, OSError) as exc:
            if agent.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                raise _Reply(502, "upstream", f"the model endpoint failed: {type(exc).__name__}: {exc}") from None
            raise ConnectionError("the response was cut") from exc
        finally:
            self._release(upstream, reusable)
            if usage is not None:
                await self._report(usage.result())

    async def _forward_body(self, agent: _Peer, upstream: _Peer) -> None:
        if agent.conn.they_are_waiting_for_100_continue:
            agent.send(h11.InformationalResponse(status_code=100, headers=[]))
        size = 0
        while True:
            event = await agent.next(self.config.idle_s)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.config.max_body_bytes:
                    raise _Reply(413, "body", f"request body over {self.config.max_body_bytes} bytes")
                upstream.send(event)
                await upstream.writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                upstream.send(h11.EndOfMessage())
                await upstream.writer.drain()
                return
            else:
                raise ConnectionError("the agent closed the connection mid-request")

    async def _response_head(self, upstream: _Peer) -> h11.Response:
        while True:
            event = await upstream.next(self.config.idle_s)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse) or event.status_code == 101:
                raise ConnectionError(f"unexpected {type(event).__name__} from the model endpoint")

    async def _report(self, usage: TokenUsage) -> None:
        if self.on_usage is None:
            return
        verdict = self.on_usage(usage)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict:
            self.stop(str(verdict))

    # -- upstream connections ----------------------------------------------------------------------

    async def _acquire(self) -> _Peer:
        loop = asyncio.get_running_loop()
        while self._idle:
            peer = self._idle.pop()
            if peer.usable and loop.time() - peer.idle_since < POOL_IDLE_S:
                return peer
            peer.close()
        where = str(self.config.upstream_socket or f"{self.config.host}:{self.config.port}")
        try:
            if self.config.upstream_socket is not None:
                opened = asyncio.open_unix_connection(str(self.config.upstream_socket))
            else:
                opened = asyncio.open_connection(
                    self.config.host,
                    self.config.port,
                    ssl=self._ssl,
                    server_hostname=self.config.host if self._ssl else None,
                    ssl_handshake_timeout=CONNECT_TIMEOUT_S if self._ssl else None,
                )
            reader, writer = await asyncio.wait_for(opened, CONNECT_TIMEOUT_S)
        except ssl.SSLCertVerificationError as exc:
            raise _Reply(502, "tls", f"the certificate of {where} is not trusted: {exc.verify_message}") from None
        except (OSError, TimeoutError) as exc:
            raise _Reply(502, "upstream", f"cannot connect to {where}: {type(exc).__name__}: {exc}") from None
        return _Peer(reader, writer, h11.CLIENT)

    def _release(self, peer: _Peer, reusable: bool) -> None:
        if reusable and len(self._idle) < POOL_SIZE:
            peer.conn.start_next_cycle()
            peer.idle_since = asyncio.get_running_loop().time()
            self._idle.append(peer)
        else:
            peer.close()
