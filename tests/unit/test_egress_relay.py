"""The host-side relays on real sockets: only the allowed destination ever receives a byte."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import stat
from pathlib import Path

import pytest

from hydra_sandbox import egress_relay
from hydra_sandbox.egress_relay import ConnectRelay, ForwardRelay, Refusal, RelayStats, forbidden_address
from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.egress import plan_egress


class Listener:
    """A loopback TCP listener that records every byte it receives."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
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

        self._server = await asyncio.start_server(handle, self.host, 0)
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
            literal = "IP literals are not allowed; use an allowed name"
            for request, why in [
                (b"CONNECT evil.invalid:443 HTTP/1.1\r\n\r\n", "name is not in the allowlist"),
                (f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n", literal),
                (f"CONNECT [::1]:{target.port} HTTP/1.1\r\n\r\n", literal),
                (f"CONNECT localhost:{target.port} HTTP/1.1\r\n\r\n", f"port {target.port} is not allowed"),
                (b"CONNECT localhost:443 HTTP/1.1\r\n\r\n", "resolves to a loopback, private or link-local address"),
            ]:
                answer = await through(tmp_path / "c.sock", request if isinstance(request, bytes) else request.encode())
                assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
                assert answer.endswith(f"\r\n\r\nhydra egress: {why}\n".encode()), answer
            answer = await through(tmp_path / "c.sock", b"GET http://localhost/ HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 405") and b"only CONNECT" in answer, answer
        assert target.received == b""
        assert relay.stats.refused == 6 and relay.stats.served == 0
        assert relay.stats.by_kind == {"name": 1, "ip-literal": 2, "port": 1, "address": 1, "method": 1}
        assert list(relay.stats.recent)[:2] == [
            "evil.invalid:443: name is not in the allowlist",
            f"127.0.0.1:{target.port}: IP literals are not allowed; use an allowed name",
        ]


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


def test_egress_plans_by_mode_send_the_model_through_the_gateway_for_http_and_https() -> None:
    assert plan_egress(NetworkPolicy(mode="none"), "http://127.0.0.1:9/v1", "s1").relay == "none"
    local = plan_egress(NetworkPolicy(mode="model-only"), "http://127.0.0.1:9/v1", "s1")
    assert local.session_id == "s1"
    assert local.relay == "gateway" and local.allowed_domains == []
    public = plan_egress(NetworkPolicy(mode="model-only"), "https://models.example/v1", "s1")
    assert public.relay == "gateway" and public.allowed_domains == []
    allow = plan_egress(NetworkPolicy(mode="allowlist", allow_domains=["pkg.example"]), None, "s1")
    # the model's own host is not tunnelled: the model goes through the gateway only
    assert allow.relay == "gateway" and allow.allowed_domains == ["pkg.example"]


class Holder:
    """A loopback listener that keeps every connection open, sending ``tick`` every ``every_s`` if given,
    and records when the relay closes its side."""

    def __init__(self, tick: bytes = b"", every_s: float = 0.05) -> None:
        self.tick, self.every_s = tick, every_s
        self.closed = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Holder:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.tick:
                with contextlib.suppress(ConnectionError):
                    while not reader.at_eof():
                        writer.write(self.tick)
                        await writer.drain()
                        await asyncio.sleep(self.every_s)  # the listener's pace, not a wait for state
            else:
                await reader.read()
            self.closed.set()
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


class LoopErrors:
    """Collects what would otherwise reach the event loop's exception handler (an unhandled error)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []

    def __enter__(self) -> LoopErrors:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _loop, context: self.seen.append(context))
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.set_exception_handler(None)


async def test_an_idle_connection_is_closed_on_both_sides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hydra_sandbox.egress_relay")
    async with Holder() as upstream, ForwardRelay(tmp_path / "s.sock", "127.0.0.1", upstream.port, idle_s=0.3) as relay:
        for _ in range(2):
            upstream.closed.clear()
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
            assert await asyncio.wait_for(reader.read(), 30) == b""
            await asyncio.wait_for(upstream.closed.wait(), 30)
            writer.close()
    assert relay.stats.timeouts == 2 and relay.stats.served == 2
    closed = [r.getMessage() for r in caplog.records if "closed a connection" in r.getMessage()]
    assert closed == ["forward relay closed a connection: idle for 0 s or open for 3600 s"] * 2


async def test_a_busy_connection_is_closed_at_its_total_lifetime(tmp_path: Path) -> None:
    async with Holder(tick=b"x") as upstream:
        relay = ForwardRelay(tmp_path / "s.sock", "127.0.0.1", upstream.port, idle_s=60, total_s=0.5)
        async with relay:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
            received = b""
            while chunk := await asyncio.wait_for(reader.read(4096), 30):
                received += chunk
            writer.close()
            await asyncio.wait_for(upstream.closed.wait(), 30)
    assert received.startswith(b"x") and relay.stats.timeouts == 1


async def test_the_end_of_a_request_is_passed_on_and_the_answer_still_comes_back(tmp_path: Path) -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        writer.write(b"answer to " + request)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_after_eof, "127.0.0.1", 0)
    async with ForwardRelay(tmp_path / "s.sock", "127.0.0.1", server.sockets[0].getsockname()[1]):
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
        writer.write(b"question")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"answer to question"
        writer.close()
    server.close()


MALFORMED = [
    (b"CONNECT " + b"a" * 70 * 1024 + b":443 HTTP/1.1\r\n\r\n", b"431"),
    (b"CONNECT allowed.test:443 HTTP/1.1\r\nx-pad: " + b"p" * 9000 + b"\r\n\r\n", b"431"),
    ("CONNECT b\u00fccher.allowed.test:443 HTTP/1.1\r\n\r\n".encode(), b"400"),
    ("CONNECT b\u00fccher.allowed.test:443 HTTP/1.1\r\n\r\n".encode("latin-1"), b"400"),
    (b"CONNECT xn--zz.allowed.test:443 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test:0 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test:65536 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test:99999999999999999999 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test:+443 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test:-1 HTTP/1.1\r\n\r\n", b"400"),
    ("CONNECT allowed.test:4\u00b2 HTTP/1.1\r\n\r\n".encode("latin-1"), b"400"),
    ("CONNECT allowed.test:\u0664\u0664\u0663 HTTP/1.1\r\n\r\n".encode(), b"400"),
    (b"CONNECT allowed.test: HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT [::1 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT [::1] HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT :443 HTTP/1.1\r\n\r\n", b"400"),
    (b"CONNECT allowed.test:443 HTTP/2\r\n\r\n", b"400"),
    (b"CONNECT  allowed.test:443 HTTP/1.1\r\n\r\n", b"400"),
    (b"connect allowed.test:443 HTTP/1.1\r\n\r\n", b"405"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),
    (b"\r\n\r\n", b"400"),
]


async def test_every_malformed_request_is_answered_and_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="hydra_sandbox.egress_relay")
    monkeypatch.setattr(egress_relay, "LOG_BURST", 1000)
    relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["allowed.test"], allowed_ports={443}, trusted=set())
    with LoopErrors() as errors:
        async with relay:
            for request, status in MALFORMED:
                answer = await through(tmp_path / "c.sock", request)
                assert answer.startswith(b"HTTP/1.1 " + status + b" "), (request[:60], answer)
                assert b"\r\n\r\nhydra egress: " in answer
    assert errors.seen == []
    assert relay.stats.refused == len(MALFORMED)
    assert relay.stats.by_kind == {"header-too-large": 2, "method": 1, "malformed": len(MALFORMED) - 3}
    records = [r for r in caplog.records if r.name == "hydra_sandbox.egress_relay"]
    assert len(records) == len(MALFORMED) and all(r.exc_info is None for r in records)


@pytest.mark.parametrize(
    ("request_line", "why"),
    [
        (b"CONNECT allowed.test:0", "port '0' is not a number from 1 to 65535"),
        (b"CONNECT allowed.test:+443", "port '+443' is not a number from 1 to 65535"),
        (b"CONNECT xn--zz.allowed.test:443", "host 'xn--zz.allowed.test': label 'xn--zz' is not valid IDNA"),
        (b"CONNECT :443", "the target is not host:port (or [IPv6]:port)"),
        (b"CONNECT [::1] HTTP/1.1", "malformed request line"),
    ],
)
async def test_a_malformed_target_is_answered_with_what_was_wrong(
    tmp_path: Path, request_line: bytes, why: str
) -> None:
    relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["allowed.test"], allowed_ports={443}, trusted=set())
    async with relay:
        answer = await through(tmp_path / "c.sock", request_line + b" HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"\r\n\r\nhydra egress: " + why.encode() in answer
    assert relay.stats.by_kind == {"malformed": 1}


def test_trusted_endpoints_are_keyed_like_the_targets_they_are_compared_with(tmp_path: Path) -> None:
    relay = ConnectRelay(
        tmp_path / "c.sock",
        allowed_domains=[],
        allowed_ports=set(),
        trusted={("Model.Example.", 443), ("[::1]", 8080), ("127.0.0.1", 9)},
    )
    assert relay.trusted == {("model.example", 443), ("::1", 8080), ("127.0.0.1", 9)}


async def test_a_silent_client_is_answered_408_when_the_header_deadline_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egress_relay, "HEADER_TIMEOUT_S", 0.2)
    monkeypatch.setattr(egress_relay.read_head, "__defaults__", (egress_relay.MAX_HEADER, 0.2))
    async with ConnectRelay(tmp_path / "c.sock", allowed_domains=[], allowed_ports={443}, trusted=set()) as relay:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
        writer.write(b"CONNECT allowed.test:443 HTTP/1.1\r\n")  # never finished
        assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.1 408")
        writer.close()
    assert relay.stats.by_kind["timeout"] == 1


async def test_connections_past_the_limit_are_answered_503(tmp_path: Path) -> None:
    async with ConnectRelay(tmp_path / "c.sock", allowed_domains=[], allowed_ports={443}, trusted=set()) as relay:
        limit = egress_relay.MAX_CONNECTIONS
        held = [await asyncio.open_unix_connection(str(tmp_path / "c.sock")) for _ in range(limit)]
        deadline = asyncio.get_running_loop().time() + 30
        while relay.stats.connections < limit:
            assert asyncio.get_running_loop().time() < deadline, "the relay never accepted the held connections"
            await asyncio.sleep(0.01)
        answer = await through(tmp_path / "c.sock", b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503"), answer
        for _reader, writer in held:
            writer.close()
    assert relay.stats.by_kind["busy"] == 1


def test_a_refusal_flood_is_counted_in_bounded_space_and_logging_is_throttled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hydra_sandbox.egress_relay")
    clock = [1000.0]
    monkeypatch.setattr(egress_relay.time, "monotonic", lambda: clock[0])
    stats = RelayStats()
    for n in range(13_000):
        stats.refuse("connect relay", Refusal(403, "name", "name is not in the allowlist", f"evil{n}.test:443"))
    assert stats.refused == 13_000 and stats.by_kind == {"name": 13_000}
    assert len(stats.recent) == egress_relay.RECENT_REFUSALS and stats.recent[-1].startswith("evil12999.test")
    assert len(caplog.records) == egress_relay.LOG_BURST
    clock[0] += egress_relay.LOG_WINDOW_S
    stats.refuse("connect relay", Refusal(403, "name", "again", "evil.test:443"))
    summary = [r.getMessage() for r in caplog.records if "counted, not logged" in r.getMessage()]
    assert summary == [f"egress relay: {13_000 - egress_relay.LOG_BURST} more refusals were counted, not logged"]


class Resolver:
    """Stands in for the event loop's ``getaddrinfo``: answers from ``answers`` the first time a name is
    looked up and from ``later`` every time after (a DNS rebinding), recording every lookup."""

    def __init__(self, answers: dict[str, list[str]], later: dict[str, list[str]] | None = None) -> None:
        self.answers, self.later = answers, later or {}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int, **_kw: object) -> list[tuple[object, ...]]:
        first = all(h != host for h, _p in self.calls)
        self.calls.append((host, port))
        table = self.answers if first else self.later
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]


# Loopback addresses these tests treat as public: the relay's own tests only ever talk to listeners they
# started on this machine, so a "public" destination is one of these (forbidden_address has its own tests).
PRETEND_PUBLIC = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}


@pytest.fixture
def pretend_public(monkeypatch: pytest.MonkeyPatch) -> None:
    real = egress_relay.forbidden_address
    monkeypatch.setattr(egress_relay, "forbidden_address", lambda a: a not in PRETEND_PUBLIC and real(a))


async def open_tunnel(socket_path: Path, target: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return head, reader, writer


@pytest.mark.usefixtures("pretend_public")
async def test_an_allowed_name_is_tunnelled_to_the_very_address_that_was_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Listener("127.0.0.2") as checked, Listener("127.0.0.1") as rebound:
        # the name answers a public address once, then (if asked again) the loopback listener
        resolver = Resolver({"api.allowed.test": ["127.0.0.2"]}, later={"api.allowed.test": ["127.0.0.1"]})
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        relay = ConnectRelay(
            tmp_path / "c.sock", allowed_domains=["Allowed.Test."], allowed_ports={checked.port}, trusted=set()
        )
        async with relay:
            head, reader, writer = await open_tunnel(tmp_path / "c.sock", f"API.allowed.test.:{checked.port}")
            assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
            writer.write(b"tls-bytes")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b"pong:tls-bytes"
            writer.close()
        assert checked.received == b"tls-bytes" and rebound.received == b""
        assert resolver.calls == [("api.allowed.test", checked.port)]
        assert (relay.stats.connections, relay.stats.served, relay.stats.refused) == (1, 1, 0)


@pytest.mark.usefixtures("pretend_public")
async def test_the_checked_addresses_are_tried_in_order_and_no_more_than_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Listener("127.0.0.2") as upstream:
        resolver = Resolver(
            {
                "second.allowed.test": ["127.0.0.3", "127.0.0.2"],  # nothing listens on .3: .2 is next
                "fourth.allowed.test": ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.2"],
            }
        )
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        port = upstream.port
        relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["allowed.test"], allowed_ports={port}, trusted=set())
        async with relay:
            head, reader, writer = await open_tunnel(tmp_path / "c.sock", f"second.allowed.test:{port}")
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.write(b"one")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 5) == b"pong:one"
            writer.close()
            answer = await through(tmp_path / "c.sock", f"CONNECT fourth.allowed.test:{port} HTTP/1.1\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"could not connect" in answer, answer
        assert upstream.received == b"one"
        assert relay.stats.by_kind == {"upstream": 1} and relay.stats.recent[-1].startswith("fourth.allowed.test:")


@pytest.mark.usefixtures("pretend_public")
async def test_a_name_is_refused_when_any_address_is_forbidden_or_none_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Listener("127.0.0.2") as upstream:
        port = upstream.port
        resolver = Resolver({"mixed.allowed.test": ["127.0.0.2", "127.0.0.1"], "empty.allowed.test": []})
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        relay = ConnectRelay(tmp_path / "c.sock", allowed_domains=["allowed.test"], allowed_ports={port}, trusted=set())
        async with relay:
            for name, status, why in [
                ("mixed.allowed.test", b"403", b"loopback, private or link-local"),
                ("empty.allowed.test", b"403", b"loopback, private or link-local"),
                ("unknown.allowed.test", b"403", b"does not resolve"),
            ]:
                answer = await through(tmp_path / "c.sock", f"CONNECT {name}:{port} HTTP/1.1\r\n\r\n".encode())
                assert answer.startswith(b"HTTP/1.1 " + status + b" Forbidden\r\n") and why in answer, answer
        assert upstream.received == b""
        assert relay.stats.by_kind == {"address": 2, "resolve": 1} and relay.stats.served == 0


async def test_only_the_allowed_domain_and_its_subdomains_pass_the_name_check(tmp_path: Path) -> None:
    relay = ConnectRelay(
        tmp_path / "c.sock", allowed_domains=["allowed.test", "10.0.0.1"], allowed_ports={443}, trusted=set()
    )
    assert relay.allowed_domains == ["allowed.test"], "an IP literal in the policy is never a name"
    assert relay.name_allowed("allowed.test") and relay.name_allowed("a.b.allowed.test")
    for name in ["evilallowed.test", "allowed.test.evil", "llowed.test", "test", "xallowed.test"]:
        assert not relay.name_allowed(name), name


def fed(data: bytes, limit: int = 2**16) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_a_request_head_of_exactly_the_limit_is_read_and_one_byte_more_is_refused_431() -> None:
    limit = egress_relay.MAX_HEADER
    head = b"CONNECT a.test:443 HTTP/1.1\r\nx: "
    exact = head + b"p" * (limit - len(head) - 4) + b"\r\n\r\n"
    assert len(exact) == limit
    assert await egress_relay.read_head(fed(exact + b"tls")) == exact
    with pytest.raises(Refusal) as refused:
        await egress_relay.read_head(fed(exact[:-4] + b"p\r\n\r\n"))
    assert (refused.value.status, refused.value.kind) == (431, "header-too-large")
    assert refused.value.why == f"request header larger than {limit} bytes"
    # a head past the reader's own buffer is refused the same way, not raised as a stream error
    with pytest.raises(Refusal) as overrun:
        await egress_relay.read_head(fed(b"x" * 100 + b"\r\n\r\n", limit=64), limit=1000)
    assert (overrun.value.status, overrun.value.why) == (431, "request header larger than 1000 bytes")


async def test_a_head_cut_short_by_the_client_is_a_stream_error_not_a_refusal() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await egress_relay.read_head(fed(b"CONNECT a.test:443 HTTP/1.1\r\n"))


async def test_a_head_that_never_ends_is_refused_408_naming_the_deadline() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"CONNECT a.test:443 HTTP/1.1\r\n")
    with pytest.raises(Refusal) as refused:
        await egress_relay.read_head(reader, timeout_s=0.05)
    assert (refused.value.status, refused.value.kind) == (408, "timeout")
    assert refused.value.why == "no complete request header within 0 s"


async def test_a_read_error_on_one_side_ends_the_splice_quietly() -> None:
    async def pair() -> tuple[egress_relay.Stream, socket.socket]:
        ours, theirs = socket.socketpair()
        return await asyncio.open_connection(sock=ours), theirs

    agent, agent_peer = await pair()
    upstream, upstream_peer = await pair()
    with LoopErrors() as errors:
        agent[0].set_exception(OSError(5, "Input/output error"))  # the agent's side fails, not with a reset
        upstream_peer.close()  # the upstream's side ends
        assert await asyncio.wait_for(egress_relay.splice(agent, upstream, idle_s=30, total_s=60), 30) is False
        gc.collect()  # a task that ended in an unretrieved exception is reported when it is collected
    agent_peer.close()
    assert errors.seen == []


async def test_the_socket_is_open_to_the_agents_uid_and_removed_when_the_relay_closes_over_open_connections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run" / "c.sock"
    with LoopErrors() as errors:
        async with ConnectRelay(path, allowed_domains=[], allowed_ports={443}, trusted=set()) as relay:
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 and stat.S_ISSOCK(path.stat().st_mode)
            held = [await asyncio.open_unix_connection(str(path)) for _ in range(3)]
            deadline = asyncio.get_running_loop().time() + 30
            while relay.stats.connections < len(held):
                assert asyncio.get_running_loop().time() < deadline, "the relay never accepted the connections"
                await asyncio.sleep(0.01)
        # leaving the block cancelled the three connections waiting for a header, without raising
        assert not path.exists()
        for reader, writer in held:
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
    assert errors.seen == [] and relay.stats.refused == 0


class Buggy(egress_relay.SocketService):
    """A service whose handler fails on a request saying ``bug`` and echoes anything else."""

    name = "buggy service"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        if data == b"bug":
            raise RuntimeError("a bug in the handler")
        writer.write(b"echo:" + data)
        await writer.drain()


async def test_a_bug_in_one_connection_is_logged_once_and_the_service_keeps_serving_in_bounded_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hydra_sandbox.egress_relay")
    with LoopErrors() as errors:
        async with Buggy(tmp_path / "b.sock") as service:
            assert await through(tmp_path / "b.sock", b"bug") == b""
            assert await through(tmp_path / "b.sock", b"hello") == b"echo:hello"
            deadline = asyncio.get_running_loop().time() + 30
            while service._tasks:  # every finished connection is forgotten: nothing grows per connection
                assert asyncio.get_running_loop().time() < deadline, f"{len(service._tasks)} tasks kept"
                await asyncio.sleep(0.01)
    assert errors.seen == [] and service.stats.connections == 2
    records = [r for r in caplog.records if r.name == "hydra_sandbox.egress_relay"]
    assert [r.getMessage() for r in records] == ["buggy service: unexpected error serving a connection"]
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], RuntimeError)
