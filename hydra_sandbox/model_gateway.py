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
import inspect
import json
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from hydra_sandbox.egress_relay import CONNECT_TIMEOUT_S, ConnectRelay, Refusal, SocketService
from hydra_sandbox.gateway_config import GatewayConfig, mcp_gateway_config, model_gateway_config
from hydra_sandbox.http_wire import END, LAST_CHUNK, Head, Peer, WireError, chunk, head_bytes, reason
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
        b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length", b"expect", b"accept-encoding",
        b"authorization", b"cookie", b"api-key", b"x-api-key", b"forwarded", b"x-forwarded-for",
        b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip",
        # Which organization or project the key bills is the operator's choice, not the agent's.
        b"openai-organization", b"openai-project", b"chatgpt-account-id",
    }
)  # fmt: skip
_DROPPED_BACK = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
    | {b"content-length", b"set-cookie"}
)


_TIMEOUTS = {
    "head": (408, "no complete request head in time"),
    "body": (408, "the request body stalled"),
    "upstream": (504, "the model endpoint did not answer in time"),
    "responding": (504, "the model endpoint stalled mid-response"),
}


class _Progress:
    """Where one exchange is: ``head`` (waiting for the request), ``body`` (reading it), ``upstream``
    (waiting for the answer), ``responding`` (part of the answer already went to the agent)."""

    def __init__(self) -> None:
        self.phase = "head"

    @property
    def responded(self) -> bool:
        return self.phase == "responding"


class _Reply(Exception):
    """Refuse the current request with ``status``; the connection is closed after the answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _header_names(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def _error_bytes(status: int, kind: str, message: str) -> bytes:
    error_type = "insufficient_quota" if kind == "budget" else "hydra_gateway"
    code = "insufficient_quota" if kind == "budget" else kind
    body = json.dumps({"error": {"message": f"hydra gateway: {message}", "type": error_type, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers.append((b"connection", b"close"))
    return head_bytes(f"HTTP/1.1 {status} {reason(status)}", headers) + body


class ModelGateway(SocketService):
    """Serve ``config`` on ``socket_path`` (``async with``); see the module documentation."""

    name = "model gateway"
    answers_http = True

    def __init__(
        self,
        socket_path: Path,
        config: GatewayConfig,
        on_usage: UsageCallback | None = None,
        *,
        tunnel: ConnectRelay | None = None,
    ) -> None:
        super().__init__(socket_path, idle_s=config.idle_s, total_s=config.total_s)
        self.config = config
        self.on_usage = on_usage
        self.tunnel = tunnel
        self.stopped: str | None = None
        self.requests = 0
        self._idle: list[Peer] = []
        self._ssl = self._tls_context() if config.tls else None
        self._allowed = {(m, config.base_path + p) for m, p in config.routes}
        self._dropped = _DROPPED | {config.credential_header.lower().encode()}
        self._added = [(b"host", config.authority.encode()), (b"accept-encoding", b"identity")]
        if config.credential is not None:
            self._added.append((config.credential_header.encode(), config.credential.get_secret_value().encode()))

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
        agent = Peer(reader, writer, response=False, max_head=MAX_HEAD)
        served = 0
        while True:
            progress = _Progress()
            try:
                event = await agent.next(self.config.keepalive_s if served else HEADER_TIMEOUT_S)
                if event is None:
                    return
                if not isinstance(event, Head):
                    raise _Reply(400, "malformed", "expected a request")
                if event.method == "CONNECT" and self.tunnel is not None:
                    await self._tunnel(agent, event, self.tunnel)
                    return
                async with asyncio.timeout(self.config.total_s):
                    await self._exchange(agent, event, progress)
            except TimeoutError:
                if progress.phase != "head" or not served:  # else: an idle kept-alive connection, closed
                    status, why = _TIMEOUTS[progress.phase]
                    self._refuse(agent, _Reply(status, "timeout", why), progress.responded)
                return
            except WireError as exc:
                self._refuse(agent, _Reply(exc.status, "malformed", str(exc)), progress.responded)
                return
            except _Reply as reply:
                self._refuse(agent, reply, progress.responded)
                return
            served += 1
            if not agent.usable:
                return

    async def _tunnel(self, agent: Peer, request: Head, relay: ConnectRelay) -> None:
        """Hand a CONNECT request to ``relay`` (allowlist mode), which applies its own rules to it."""
        if agent.after_upgrade:  # the parser stops at the head: whatever followed it is here
            raise _Reply(400, "malformed", "data was sent after CONNECT before the tunnel was established")
        head = b"CONNECT " + request.target + b" HTTP/1.1\r\n\r\n"
        await relay.tunnel(head, agent.reader, agent.writer)

    def _refuse(self, agent: Peer, reply: _Reply, responded: bool) -> None:
        self.stats.refuse(self.name, Refusal(reply.status, reply.kind, reply.message))
        if not responded:  # nothing of a response sent yet
            agent.writer.write(_error_bytes(reply.status, reply.kind, reply.message))

    def _check(self, request: Head) -> str:
        """The request's path if the gateway serves it, else a :class:`_Reply` saying why not."""
        method, target = request.method, request.target.decode("ascii", "replace")
        if self.stopped:
            raise _Reply(429, "budget", self.stopped)
        if method == "CONNECT":
            raise _Reply(405, "method", "CONNECT is not served: this gateway only forwards model API requests")
        if request.values(b"upgrade") or b"upgrade" in _header_names(request.first(b"connection")):
            raise _Reply(400, "upgrade", "protocol upgrades (Upgrade, WebSocket, h2c) are not served")
        if request.version != "1.1":
            raise _Reply(505, "malformed", f"HTTP/{request.version} is not served; use HTTP/1.1")
        hosts = request.values(b"host")
        if len(hosts) != 1:
            raise _Reply(403, "host", f"a request needs exactly one Host header ({len(hosts)} sent)")
        host = hosts[0].decode("ascii", "replace").lower()
        if host not in self.config.accepted_hosts:
            raise _Reply(403, "host", f"Host {host[:100]!r} is not this gateway; use {self.config.accepted_hosts[0]}")
        path, _, query = target.partition("?")
        plain = path.startswith("/") and all(_SEGMENT.fullmatch(s) for s in path.split("/")[1:])
        if not plain or not _QUERY.fullmatch(query):
            raise _Reply(403, "path", f"request target {target[:100]!r} is not a plain path")
        if (method, path) not in self._allowed:
            served = ", ".join(f"{m} {p}" for m, p in sorted(self._allowed))
            raise _Reply(403, "route", f"{method} {path[:100]} is not served here; only {served}")
        if request.length is not None and request.length > self.config.max_body_bytes:
            raise _Reply(413, "body", f"request body over {self.config.max_body_bytes} bytes")
        return path

    def _upstream_head(self, request: Head) -> bytes:
        named = {n for value in request.values(b"connection") for n in _header_names(value)}
        headers = [*self._added]
        headers += [(n, v) for n, v in request.headers if n not in self._dropped and n not in named]
        if request.chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        elif request.length is not None:
            headers.append((b"content-length", b"%d" % request.length))
        return head_bytes(f"{request.method} {request.target.decode('ascii')} HTTP/1.1", headers)

    # -- one exchange ------------------------------------------------------------------------------

    async def _exchange(self, agent: Peer, request: Head, progress: _Progress) -> None:
        path = self._check(request)
        progress.phase = "body"
        self.requests += 1
        upstream = await self._acquire()
        reusable, usage = False, None
        try:
            await self._forward_body(agent, upstream, request)
            progress.phase = "upstream"
            response = await self._response_head(upstream)
            if self.config.record_usage and 200 <= response.status < 300 and path.endswith(USAGE_PATHS):
                usage = UsageReader(response.first(b"content-type").decode("latin-1"), path, response.status)
            await self._relay_response(agent, upstream, response, usage, progress)
            reusable = response.keep_alive and upstream.usable
        except (WireError, ConnectionError, OSError) as exc:
            if not progress.responded:
                raise _Reply(502, "upstream", f"the model endpoint failed: {type(exc).__name__}: {exc}") from None
            raise ConnectionError("the response was cut") from exc
        finally:
            self._release(upstream, reusable)
            if usage is not None:
                await self._report(usage.result())

    async def _forward_body(self, agent: Peer, upstream: Peer, request: Head) -> None:
        if request.first(b"expect").lower() == b"100-continue":
            agent.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        size, out = 0, bytearray(self._upstream_head(request))
        while True:
            event = await agent.next(self.config.idle_s)
            if isinstance(event, bytes):
                size += len(event)
                if size > self.config.max_body_bytes:
                    raise _Reply(413, "body", f"request body over {self.config.max_body_bytes} bytes")
                out += chunk(event) if request.chunked else event
                if not agent.ready:  # what has arrived goes out in one write, before waiting for more
                    upstream.writer.write(out)
                    out.clear()
                    await upstream.writer.drain()
            elif event is END:
                upstream.writer.write(out + LAST_CHUNK if request.chunked else out)
                return
            else:
                raise WireError(400, "the agent's request ended early")

    async def _response_head(self, upstream: Peer) -> Head:
        while True:
            event = await upstream.next(self.config.idle_s)
            if isinstance(event, Head) and event.status >= 200:
                return event
            if isinstance(event, Head) and event.status != 101:
                await upstream.next(self.config.idle_s)  # a 1xx has no body: its END
                continue
            raise WireError(502, f"unexpected {event!r} from the model endpoint")

    async def _relay_response(
        self, agent: Peer, upstream: Peer, response: Head, usage: UsageReader | None, progress: _Progress
    ) -> None:
        headers = [(n, v) for n, v in response.headers if n not in _DROPPED_BACK]
        framed = response.length is not None
        if response.length is not None:
            headers.append((b"content-length", b"%d" % response.length))
        else:
            headers.append((b"transfer-encoding", b"chunked"))
        if not response.keep_alive:
            headers.append((b"connection", b"close"))
        line = f"HTTP/1.1 {response.status} {response.reason.decode('latin-1') or reason(response.status)}"
        out = bytearray(head_bytes(line, headers))
        progress.phase = "responding"
        while True:
            if not upstream.ready:  # what has arrived goes out in one write, before waiting for more
                agent.writer.write(out)
                out.clear()
                await agent.writer.drain()
            event = await upstream.next(self.config.idle_s)
            if isinstance(event, bytes):
                out += event if framed else chunk(event)
                if usage is not None:
                    usage.feed(event)
            elif event is END:
                agent.writer.write(out if framed else out + LAST_CHUNK)
                await agent.writer.drain()
                return
            else:
                raise WireError(502, "the model endpoint ended the response early")

    async def _report(self, usage: TokenUsage) -> None:
        if self.on_usage is None:
            return
        verdict = self.on_usage(usage)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict:
            self.stop(str(verdict))

    # -- upstream connections ----------------------------------------------------------------------

    async def _acquire(self) -> Peer:
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
        return Peer(reader, writer, response=True, max_head=MAX_HEAD)

    def _release(self, peer: Peer, reusable: bool) -> None:
        if reusable and len(self._idle) < POOL_SIZE:
            peer.idle_since = asyncio.get_running_loop().time()
            self._idle.append(peer)
        else:
            peer.close()
