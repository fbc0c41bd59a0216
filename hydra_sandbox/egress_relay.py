"""The host side of an agent's only way out: a Unix socket served by Hydra.

Two kinds of relay, both bounded in connections and both refusing everything they were not told:

* :class:`ForwardRelay` pipes every connection to one fixed ``host:port`` (the model endpoint over
  plain HTTP, e.g. a local model server on the host's loopback);
* :class:`UnixForwardRelay` pipes every connection to one Unix socket (Hydra's agent MCP endpoint);
* :class:`ConnectRelay` speaks HTTP ``CONNECT`` only: the agent's ``HTTPS_PROXY``. It accepts a target
  whose name and port are allowed, resolves it once, refuses it when any address is loopback,
  private, link-local, multicast or reserved (unless it is the configured model endpoint), and then
  connects to the very address it checked, so a DNS answer cannot change between check and use.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ipaddress
import os
import socket
from pathlib import Path
from types import TracebackType

MAX_CONNECTIONS = 32
MAX_HEADER = 8192
CONNECT_TIMEOUT_S = 15.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


def forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
    )


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class _RelayBase(abc.ABC):
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._server: asyncio.AbstractServer | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused: list[str] = []
        self.connections = 0

    async def __aenter__(self) -> _RelayBase:
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
        try:
            if self._slots.locked():
                writer.close()
                return
            async with self._slots:
                self.connections += 1
                await self.handle(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    @abc.abstractmethod
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection from the agent."""


class ForwardRelay(_RelayBase):
    """Every connection goes to ``host:port`` and nowhere else."""

    def __init__(self, socket_path: Path, host: str, port: int) -> None:
        super().__init__(socket_path)
        self.host, self.port = host, port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S)
        await _splice((reader, writer), upstream)


class UnixForwardRelay(_RelayBase):
    """Every connection goes to one Unix socket on the host (Hydra's agent MCP endpoint)."""

    def __init__(self, socket_path: Path, target: Path) -> None:
        super().__init__(socket_path)
        self.target = target

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await asyncio.wait_for(asyncio.open_unix_connection(str(self.target)), CONNECT_TIMEOUT_S)
        await _splice((reader, writer), upstream)


class ConnectRelay(_RelayBase):
    """An HTTP CONNECT filter: allowed names and ports only, public addresses only."""

    def __init__(
        self, socket_path: Path, *, allowed_domains: list[str], allowed_ports: set[int], trusted: set[tuple[str, int]]
    ) -> None:
        super().__init__(socket_path)
        self.allowed_domains = [d.lower().rstrip(".") for d in allowed_domains]
        self.allowed_ports = allowed_ports
        self.trusted = {(h.lower(), p) for h, p in trusted}

    def name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == d or host.endswith("." + d) for d in self.allowed_domains)

    async def _refuse(self, writer: asyncio.StreamWriter, target: str, why: str) -> None:
        self.refused.append(f"{target}: {why}")
        writer.write(f"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\r\nhydra egress: {why}\n".encode())
        with contextlib.suppress(Exception):
            await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT_S)
        if len(head) > MAX_HEADER:
            await self._refuse(writer, "?", "request header too large")
            return
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = first.split()
        if len(parts) != 3 or parts[0].upper() != "CONNECT":
            await self._refuse(writer, first[:100], "only CONNECT is allowed through this proxy")
            return
        host, _, port_text = parts[1].rpartition(":")
        host = host.strip("[]")
        if not port_text.isdigit():
            await self._refuse(writer, parts[1], "no port")
            return
        port = int(port_text)
        target = f"{host}:{port}"
        trusted = (host.lower(), port) in self.trusted
        if not trusted:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(host)
                await self._refuse(writer, target, "IP literals are not allowed; use an allowed name")
                return
            if not self.name_allowed(host):
                await self._refuse(writer, target, "name is not in the allowlist")
                return
            if port not in self.allowed_ports:
                await self._refuse(writer, target, f"port {port} is not allowed")
                return
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            await self._refuse(writer, target, "name does not resolve")
            return
        addresses = [str(info[4][0]) for info in infos]
        if not trusted and any(forbidden_address(a) for a in addresses):
            await self._refuse(writer, target, "resolves to a loopback, private or link-local address")
            return
        upstream = await asyncio.wait_for(asyncio.open_connection(addresses[0], port), CONNECT_TIMEOUT_S)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice((reader, writer), upstream)
