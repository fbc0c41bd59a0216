"""The host-side relays on real sockets: only the allowed destination ever receives a byte."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hydra_sandbox.egress_relay import ConnectRelay, ForwardRelay, forbidden_address
from hydra_sandbox.network import plan_egress
from hydra_sandbox.policy import NetworkPolicy


class Listener:
    """A loopback TCP listener that records every byte it receives."""

    def __init__(self) -> None:
        self.received = b""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(1024)
            self.received += data
            writer.write(b"pong:" + data)
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


async def through(socket_path: Path, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return data


async def test_forward_relay_reaches_only_its_target(tmp_path: Path) -> None:
    async with Listener() as model, Listener() as other:
        async with ForwardRelay(tmp_path / "s.sock", "127.0.0.1", model.port):
            assert await through(tmp_path / "s.sock", b"hello") == b"pong:hello"
        assert model.received == b"hello" and other.received == b""


async def test_connect_relay_refuses_unlisted_names_ip_literals_ports_and_private_targets(tmp_path: Path) -> None:
    async with Listener() as target:
        relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["localhost"], allowed_ports={443}, trusted=set())
        async with relay:
            for request, why in [
                (b"CONNECT evil.invalid:443 HTTP/1.1\r\n\r\n", b"not in the allowlist"),
                (f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n".encode(), b"IP literals"),
                (f"CONNECT [::1]:{target.port} HTTP/1.1\r\n\r\n".encode(), b"IP literals"),
                (f"CONNECT localhost:{target.port} HTTP/1.1\r\n\r\n".encode(), b"port"),
                (b"CONNECT localhost:443 HTTP/1.1\r\n\r\n", b"loopback, private or link-local"),
                (b"GET http://localhost/ HTTP/1.1\r\n\r\n", b"only CONNECT"),
            ]:
                answer = await through(tmp_path / "c.sock", request)
                assert answer.startswith(b"HTTP/1.1 403") and why in answer, answer
        assert target.received == b""
        assert len(relay.refused) == 6


async def test_connect_relay_lets_the_trusted_model_endpoint_through(tmp_path: Path) -> None:
    async with Listener() as model:
        relay = ConnectRelay(
            tmp_path / "c.sock", allowed_domains=[], allowed_ports={443}, trusted={("127.0.0.1", model.port)}
        )
        async with relay:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
            writer.write(f"CONNECT 127.0.0.1:{model.port} HTTP/1.1\r\n\r\n".encode())
            await writer.drain()
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.write(b"tls-bytes")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b"pong:tls-bytes"
            writer.close()
        assert model.received == b"tls-bytes"


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.17.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
    ],
)
def test_private_loopback_and_link_local_addresses_are_forbidden(address: str, forbidden: bool) -> None:
    assert forbidden_address(address) is forbidden


def test_egress_plans_by_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_RUNTIME_DIR", str(tmp_path / "run"))
    assert plan_egress(NetworkPolicy(mode="none"), "http://127.0.0.1:9/v1", "s1").relay == "none"
    local = plan_egress(NetworkPolicy(mode="model-only"), "http://127.0.0.1:9/v1", "s1")
    assert local.socket_dir == tmp_path / "run" / "s1"
    assert local.relay == "forward" and local.forward_to == ("127.0.0.1", 9)
    public = plan_egress(NetworkPolicy(mode="model-only"), "https://models.example/v1", "s1")
    assert public.relay == "connect" and public.allowed_domains == ["models.example"]
    allow = plan_egress(NetworkPolicy(mode="allowlist", allow_domains=["pkg.example"]), None, "s1")
    assert allow.relay == "connect" and "pkg.example" in allow.allowed_domains
