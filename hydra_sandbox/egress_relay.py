"""The host side of an agent's only way out: a Unix socket served by Hydra.

Relays, all bounded in connections, time and state, and all refusing everything they were not told:

* :class:`ForwardRelay` pipes every connection to one fixed ``host:port`` (no longer on any run's path:
  the model is served by the gateway; kept as the simplest :class:`SocketService`);
* :class:`ConnectRelay` speaks HTTP ``CONNECT`` only: the agent's ``HTTPS_PROXY`` in ``allowlist`` mode,
  reached through the model gateway's socket (:meth:`ConnectRelay.tunnel`). It accepts a target whose
  name (a plain LDH name, see :mod:`hydra_sandbox.egress_rules`) and port are allowed, resolves it once,
  refuses it when any address is loopback, private, link-local, multicast or reserved (or an IPv6
  address carrying such an IPv4), unless it is ``trusted``, and then connects to the very address it
  checked, so a DNS answer cannot change between check and use.

The model endpoint and Hydra's agent MCP endpoint are served by :mod:`hydra_sandbox.model_gateway`,
which speaks HTTP and adds their credentials on the host side.

Every malformed or refused request is answered (an HTTP status and one line saying why) and logged once;
a flood is counted, not kept: :class:`RelayStats` holds counters and a short list of recent refusals.
Every connection has a header deadline, an idle timeout and a total lifetime.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import os
import re
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from hydra_sandbox.egress_rules import connect_host_name, forbidden_address, ip_literal, policy_domain
from hydra_sandbox.errors import shown

__all__ = [
    "ConnectRelay",
    "ForwardRelay",
    "Refusal",
    "RelayStats",
    "SocketService",
    "forbidden_address",
]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
MAX_HEADER = 8192
HEADER_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
IDLE_TIMEOUT_S = 300.0
TOTAL_TIMEOUT_S = 3600.0
RECENT_REFUSALS = 32
LOG_BURST = 20
LOG_WINDOW_S = 10.0

_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_REQUEST_LINE = re.compile(rb"([!-~]+) ([!-~]+) HTTP/1\.[01]")
_PORT = re.compile(r"[0-9]{1,5}")


class Refusal(Exception):
    """A request a relay answers with ``status`` and does not serve; ``kind`` is the counter it goes to."""

    def __init__(self, status: int, kind: str, why: str, target: str = "?") -> None:
        super().__init__(why)
        self.status, self.kind, self.why, self.target = status, kind, why, target


class RelayStats:
    """What a relay did, in bounded space: counters per kind of refusal and the last few refusals."""

    def __init__(self, recent: int = RECENT_REFUSALS) -> None:
        self.connections = 0
        self.served = 0
        self.refused = 0
        self.timeouts = 0
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.recent: collections.deque[str] = collections.deque(maxlen=recent)
        self._window_start = time.monotonic()
        self._logged = 0
        self._unlogged = 0

    def refuse(self, relay: str, refusal: Refusal) -> None:
        self.refused += 1
        self.by_kind[refusal.kind] += 1
        line = f"{refusal.target}: {refusal.why}"[:300]
        self.recent.append(line)
        if self._may_log():
            log.info("%s refused %s", relay, line)

    def _may_log(self) -> bool:
        """At most LOG_BURST lines per LOG_WINDOW_S; the rest are counted and summed up in one line."""
        now = time.monotonic()
        if now - self._window_start >= LOG_WINDOW_S:
            if self._unlogged:
                log.warning("egress relay: %d more refusals were counted, not logged", self._unlogged)
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged < LOG_BURST:
            self._logged += 1
            return True
        self._unlogged += 1
        return False


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def splice(a: Stream, b: Stream, *, idle_s: float, total_s: float) -> bool:
    """Copy bytes both ways until both sides are done (an end of stream is passed on as a half-close),
    nothing moved for ``idle_s`` or ``total_s`` passed. Returns whether it stopped on a timeout."""
    loop = asyncio.get_running_loop()
    start = last = loop.time()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal last
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                last = loop.time()
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    pending = {asyncio.ensure_future(pipe(a[0], b[1])), asyncio.ensure_future(pipe(b[0], a[1]))}
    timed_out = False
    try:
        while pending:
            deadline = min(last + idle_s, start + total_s)
            if loop.time() >= deadline:
                timed_out = True
                break
            _done, pending = await asyncio.wait(pending, timeout=deadline - loop.time())
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        for _reader, writer in (a, b):
            with contextlib.suppress(Exception):
                writer.close()
    return timed_out


def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = f"hydra egress: {text}\n".encode("ascii", "backslashreplace")
    writer.write(
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


class SocketService(abc.ABC):
    """A Unix socket served to one agent: at most MAX_CONNECTIONS at once (the next is refused, with a
    503 when the service speaks HTTP), every connection task tracked and cancelled on exit, and a bug
    in one connection logged once instead of reaching the event loop."""

    name = "relay"
    answers_http = False

    def __init__(self, socket_path: Path, *, idle_s: float = IDLE_TIMEOUT_S, total_s: float = TOTAL_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.idle_s, self.total_s = idle_s, total_s
        self.stats = RelayStats()
        self._server: asyncio.AbstractServer | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o666)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.stats.connections += 1
        try:
            if self._slots.locked():
                raise Refusal(503, "busy", f"{MAX_CONNECTIONS} connections are open already; retry later")
            async with self._slots:
                await self.handle(reader, writer)
        except Refusal as refusal:
            self.stats.refuse(self.name, refusal)
            if self.answers_http:
                _answer(writer, refusal.status, refusal.why)
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the agent went away, or the fixed upstream did not answer: nothing to tell
        except asyncio.CancelledError:
            # The service is closing (__aexit__ cancels its connections). Nobody awaits this task but
            # __aexit__, and asyncio's server callback (3.11) reports a cancelled one as an error: end it.
            pass
        except Exception:  # a bug must cost one connection, never the relay: logged once, with the cause
            log.exception("%s: unexpected error serving a connection", self.name)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _pipe_to(self, agent: Stream, upstream: Stream) -> None:
        self.stats.served += 1
        if await splice(agent, upstream, idle_s=self.idle_s, total_s=self.total_s):
            self.stats.timeouts += 1
            log.info("%s closed a connection: idle for %.0f s or open for %.0f s", self.name, self.idle_s, self.total_s)

    @abc.abstractmethod
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection from the agent; raise :class:`Refusal` to answer and count a refusal."""


class ForwardRelay(SocketService):
    """Every connection goes to ``host:port`` and nowhere else."""

    name = "forward relay"

    def __init__(self, socket_path: Path, host: str, port: int, **timeouts: float) -> None:
        super().__init__(socket_path, **timeouts)
        self.host, self.port = host, port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S)
        await self._pipe_to((reader, writer), upstream)


async def read_head(
    reader: asyncio.StreamReader, limit: int = MAX_HEADER, timeout_s: float = HEADER_TIMEOUT_S
) -> bytes:
    """The request head up to the blank line, or a :class:`Refusal` (too large, too slow, cut short)."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    except asyncio.LimitOverrunError:
        raise Refusal(431, "header-too-large", f"request header larger than {limit} bytes") from None
    except TimeoutError:
        raise Refusal(408, "timeout", f"no complete request header within {timeout_s:.0f} s") from None
    if len(head) > limit:
        raise Refusal(431, "header-too-large", f"request header larger than {limit} bytes")
    return head


def _parse_port(text: str, target: str) -> int:
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise Refusal(400, "malformed", f"port {shown(text)} is not a number from 1 to 65535", target)
    return int(text)


class ConnectRelay(SocketService):
    """An HTTP CONNECT filter: allowed names and ports only, public addresses only."""

    name = "connect relay"
    answers_http = True

    def __init__(
        self,
        socket_path: Path,
        *,
        allowed_domains: list[str],
        allowed_ports: set[int],
        trusted: set[tuple[str, int]],
        **timeouts: float,
    ) -> None:
        super().__init__(socket_path, **timeouts)
        self.allowed_domains = [policy_domain(d) for d in allowed_domains if ip_literal(d) is None]
        self.allowed_ports = allowed_ports
        self.trusted = {(self._key(h), p) for h, p in trusted}

    @staticmethod
    def _key(host: str) -> str:
        ip = ip_literal(host)
        return str(ip) if ip is not None else policy_domain(host)

    def name_allowed(self, host: str) -> bool:
        """``host`` (already a checked LDH name) is an allowed domain or below one."""
        return any(host == d or host.endswith("." + d) for d in self.allowed_domains)

    def _target(self, head: bytes) -> tuple[str, int, bool]:
        """(host, port, is an IP literal) of a well-formed CONNECT request, or a :class:`Refusal`."""
        line = head.split(b"\r\n", 1)[0]
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            raise Refusal(400, "malformed", "malformed request line (control character, space or bytes out of ASCII)")
        method, authority = match.group(1).decode(), match.group(2).decode()
        if method != "CONNECT":
            raise Refusal(405, "method", f"only CONNECT is allowed through this proxy, not {shown(method[:16])}")
        if authority.startswith("["):
            host, _bracket, rest = authority[1:].partition("]")
            colon, port_text = rest[:1] == ":", rest[1:]
        else:
            host, colon_text, port_text = authority.rpartition(":")
            colon = bool(colon_text)
        if not colon or not host:
            raise Refusal(400, "malformed", "the target is not host:port (or [IPv6]:port)", shown(authority))
        port = _parse_port(port_text, shown(authority))
        if ip_literal(host) is not None:
            return str(ip_literal(host)), port, True
        try:
            return connect_host_name(host), port, False
        except ValueError as exc:
            raise Refusal(400, "malformed", f"host {exc}", shown(authority)) from None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.tunnel(await read_head(reader), reader, writer)

    async def tunnel(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one CONNECT request whose ``head`` was already read, by this relay or by the model gateway
        in front of it (allowlist mode: one socket serves the model API and CONNECT to allowed names)."""
        host, port, literal = self._target(head)
        target = f"{host}:{port}"
        trusted = (host, port) in self.trusted
        if not trusted:
            if literal:
                raise Refusal(403, "ip-literal", "IP literals are not allowed; use an allowed name", target)
            if not self.name_allowed(host):
                raise Refusal(403, "name", "name is not in the allowlist", target)
            if port not in self.allowed_ports:
                raise Refusal(403, "port", f"port {port} is not allowed", target)
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT_S)
        except (OSError, UnicodeError, TimeoutError):
            raise Refusal(403, "resolve", "name does not resolve", target) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses or (not trusted and any(forbidden_address(a) for a in addresses)):
            raise Refusal(403, "address", "resolves to a loopback, private or link-local address", target)
        upstream = await self._connect(addresses, port, target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self._pipe_to((reader, writer), upstream)

    async def _connect(self, addresses: list[str], port: int, target: str) -> Stream:
        """Connect to the checked addresses in order (never to a fresh lookup of the name)."""
        for address in addresses[:3]:
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT_S)
        raise Refusal(502, "upstream", "could not connect to the target", target)
