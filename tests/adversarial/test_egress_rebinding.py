"""DNS rebinding and address tricks against the allowlist relay. The resolver is the test's own, and
every connection attempt is intercepted, so nothing is ever sent anywhere: the property is that an
allowlisted name whose answer is (or becomes) loopback, private, link-local or IPv6-local is refused
before any connection, and that each CONNECT resolves exactly once (no check-then-resolve-again)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox import egress_relay
from hydra_sandbox.egress_relay import ConnectRelay
from tests.adversarial.results import record_result

pytestmark = pytest.mark.adversarial

# Only loopback and never-routed local forms: even a broken relay could reach nothing off this machine.
REBOUND_ANSWERS = [
    ["127.0.0.1"],
    ["127.1.2.3"],
    ["::1"],
    ["::ffff:127.0.0.1"],
    ["0.0.0.0"],
    ["::"],
    ["fe80::1"],
    ["fd00::1"],
    ["10.255.255.1"],
    ["192.168.255.1"],
    ["100.64.0.1"],
]


def _infos(addresses: list[str]) -> list[Any]:
    out = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, 443, 0, 0) if family == socket.AF_INET6 else (address, 443)
        out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
    return out


async def _ask(socket_path: Path, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return answer


async def test_an_allowlisted_name_rebound_to_a_local_address_is_refused_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    connects: list[tuple[str, int]] = []
    answers = iter([addresses for addresses in REBOUND_ANSWERS for _ in range(2)])

    async def resolver(host: str, port: int, **_kw: Any) -> list[Any]:
        lookups.append(host)
        return _infos(next(answers))

    async def no_connect(host: str, port: int, **_kw: Any) -> Any:
        connects.append((host, port))
        raise AssertionError("the relay tried to connect")

    relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["api.example.test"], allowed_ports={443}, trusted=set())
    async with relay:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        monkeypatch.setattr(egress_relay.asyncio, "open_connection", no_connect)
        cases = 0
        for _ in range(len(REBOUND_ANSWERS) * 2):  # each answer twice: a rebinding resolver repeats itself
            answer = await _ask(tmp_path / "c.sock", b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 403") and b"loopback, private or link-local" in answer, answer
            cases += 1
        for request in (
            b"CONNECT sub.api.example.test:443 HTTP/1.1\r\n\r\n",  # subdomains are allowed names too
            b"CONNECT API.EXAMPLE.TEST.:443 HTTP/1.1\r\n\r\n",  # case and trailing dot
        ):
            answers = iter([["127.0.0.1"]])
            answer = await _ask(tmp_path / "c.sock", request)
            assert answer.startswith(b"HTTP/1.1 403"), answer
            cases += 1
    assert connects == [], f"connection attempts: {connects}"
    assert len(lookups) == cases, "a CONNECT resolved its name more than once"
    record_result(
        "egress_dns_rebinding",
        "allowlisted names answering loopback, 0.0.0.0, ::, v4-mapped, link-local, ULA, RFC 1918, CGNAT; repeated",
        cases=cases,
        result="held: every one refused before any connection; one lookup per CONNECT",
    )


async def test_ports_ip_literals_and_ipv6_literals_are_refused_without_a_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int, **_kw: Any) -> list[Any]:
        lookups.append(host)
        return _infos(["127.0.0.1"])

    requests = [
        b"CONNECT api.example.test:80 HTTP/1.1\r\n\r\n",
        b"CONNECT api.example.test:22 HTTP/1.1\r\n\r\n",
        b"CONNECT api.example.test:8443 HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n",
        b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n",
        b"CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1\r\n\r\n",
        b"CONNECT 2130706433:443 HTTP/1.1\r\n\r\n",
        b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n",
        b"CONNECT api.example.test.evil.test:443 HTTP/1.1\r\n\r\n",
        b"CONNECT xapi.example.test:443 HTTP/1.1\r\n\r\n",
        b"GET http://api.example.test/ HTTP/1.1\r\n\r\n",
    ]
    relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["api.example.test"], allowed_ports={443}, trusted=set())
    async with relay:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        for request in requests:
            answer = await _ask(tmp_path / "c.sock", request)
            assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 403", b"HTTP/1.1 405"), (request, answer)
    assert lookups == [], f"refused targets were still looked up: {lookups}"
    record_result(
        "egress_ports_and_literals",
        "other ports, IPv4/IPv6/v4-mapped/integer IP literals, unlisted and look-alike names, plain GET",
        cases=len(requests),
        result="held: all refused without a DNS lookup",
    )


# IPv6 answers that carry a loopback, private or metadata IPv4 (6to4, Teredo, NAT64, compatible,
# translated, ISATAP). Every connection attempt is intercepted, so none of them is ever dialled.
EMBEDDING_ANSWERS = [
    ["2002:7f00:1::1"],
    ["2002:a9fe:a9fe::1"],
    ["2002:c0a8:101::1"],
    ["2001:0:4136:e378:8000:63bf:80ff:fffe"],
    ["64:ff9b::7f00:1"],
    ["::127.0.0.1"],
    ["::ffff:0:7f00:1"],
    ["2606:4700::5efe:a9fe:a9fe"],
    ["2606:4700::1111", "2002:7f00:1::1"],  # one bad answer among good ones is enough to refuse
]


async def test_ipv6_answers_embedding_a_local_ipv4_are_refused_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connects: list[tuple[str, int]] = []
    answers = iter(EMBEDDING_ANSWERS)

    async def resolver(host: str, port: int, **_kw: Any) -> list[Any]:
        return _infos(next(answers))

    async def no_connect(host: str, port: int, **_kw: Any) -> Any:
        connects.append((host, port))
        raise AssertionError("the relay tried to connect")

    relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["api.example.test"], allowed_ports={443}, trusted=set())
    async with relay:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        monkeypatch.setattr(egress_relay.asyncio, "open_connection", no_connect)
        for _ in EMBEDDING_ANSWERS:
            answer = await _ask(tmp_path / "c.sock", b"CONNECT api.example.test:443 HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 403") and b"loopback, private or link-local" in answer, answer
    assert connects == []
    record_result(
        "egress_embedded_ipv4",
        "allowlisted names answering 6to4, Teredo, NAT64, IPv4-compatible/translated and ISATAP addresses "
        "that carry loopback, RFC 1918 or metadata IPv4",
        cases=len(EMBEDDING_ANSWERS),
        result="held: every one refused before any connection",
    )


# The resolver reads a C string: whatever follows a NUL is never looked up, so the allowlist must judge
# exactly the bytes the resolver would see, and refuse control characters outright.
SMUGGLED_HOSTS = [
    b"attacker.example\x00.api.example.test",
    b"127.0.0.1\x00.api.example.test",
    b"[::1]\x00.api.example.test",
    b"attacker.example\x00api.example.test",
    b"attacker.example\t.api.example.test",
    b"attacker.example\x7f.api.example.test",
    b"attacker.example\r.api.example.test",
    b"attacker.example%00.api.example.test",
    b"attacker.example\xc0\x80.api.example.test",  # overlong NUL
    "attacker.example\u3002api.example.test".encode(),  # ideographic full stop
    "\u0430pi.example.test".encode(),  # Cyrillic look-alike
    b"api.example.test.\x00",
]


async def test_nul_and_control_characters_in_the_host_are_refused_before_any_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int, **_kw: Any) -> list[Any]:
        lookups.append(host)
        return _infos(["127.0.0.1"])

    relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["api.example.test"], allowed_ports={443}, trusted=set())
    async with relay:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        for host in SMUGGLED_HOSTS:
            answer = await _ask(tmp_path / "c.sock", b"CONNECT " + host + b":443 HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400"), (host, answer)
    assert lookups == [], f"smuggled names were looked up: {lookups}"
    record_result(
        "egress_smuggled_host_names",
        "NUL, control characters, percent-encoded and overlong NULs, Unicode dots and look-alikes in the CONNECT host",
        cases=len(SMUGGLED_HOSTS),
        result="held: every one answered 400 before any DNS lookup",
    )
