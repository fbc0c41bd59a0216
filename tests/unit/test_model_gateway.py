"""The model gateway on real sockets: an upstream the test starts on loopback (or a Unix socket), an
agent speaking raw HTTP to the gateway's socket. Each property is checked on the upstream's side too:
what it received, and that a refused request sent it nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import h11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from hydra_sandbox import model_gateway
from hydra_sandbox.model_gateway import ModelGateway, mcp_gateway_config, model_gateway_config
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.scripted_model import Script, ScriptedModel, ScriptItem

PORT = 18080
KEY = SecretStr("sk-operator-test-0123456789")
Chunks = Callable[["Seen"], AsyncIterator[bytes]]


class Seen:
    def __init__(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.method, self.target, self.body = method, target, body
        self.headers = [(n.decode(), v.decode()) for n, v in headers]

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


async def _json_ok(seen: Seen) -> AsyncIterator[bytes]:
    yield json.dumps({"id": "r", "echo": seen.body.decode(), "usage": {"input_tokens": 3, "output_tokens": 4}}).encode()


class Upstream:
    """A loopback (or Unix socket) HTTP/1.1 server recording every request it receives."""

    def __init__(
        self,
        chunks: Chunks = _json_ok,
        content_type: str = "application/json",
        tls: ssl.SSLContext | None = None,
        unix: Path | None = None,
    ) -> None:
        self.chunks, self.content_type, self.tls, self.unix = chunks, content_type, tls, unix
        self.seen: list[Seen] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}/v1"

    async def __aenter__(self) -> Upstream:
        if self.unix is not None:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.unix))
        else:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                seen = Seen(request.method.decode(), request.target.decode(), list(request.headers), body)
                self.seen.append(seen)
                writer.write(conn.send(h11.Response(status_code=200, headers=[("content-type", self.content_type)])))
                async for chunk in self.chunks(seen):
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, ssl.SSLError):
            return
        finally:
            writer.close()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def error(self) -> str:
        return str(json.loads(self.body)["error"]["message"])


async def read_answer(reader: asyncio.StreamReader, conn: h11.Connection | None = None) -> Answer:
    conn = conn or h11.Connection(h11.CLIENT)
    response, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(65536), 30))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    assert response is not None
    return Answer(response.status_code, {n.decode(): v.decode() for n, v in response.headers}, body)


def request(
    method: str = "POST", target: str = "/v1/responses", body: bytes = b'{"model": "m"}', extra: str = ""
) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nhost: 127.0.0.1:{PORT}\r\ncontent-type: application/json\r\n{extra}"
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


async def ask(socket_path: Path, raw: bytes) -> Answer:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(raw)
    await writer.drain()
    try:
        return await read_answer(reader)
    finally:
        writer.close()


def gateway(tmp_path: Path, url: str, on_usage: Callable[[TokenUsage], Any] | None = None, **kw: Any) -> ModelGateway:
    config = model_gateway_config(url, KEY, listen_port=PORT).model_copy(update=kw)
    return ModelGateway(tmp_path / "model.sock", config, on_usage=on_usage)


async def test_a_model_request_reaches_the_upstream_with_the_key_added_and_the_agents_own_dropped(
    tmp_path: Path,
) -> None:
    async with Upstream() as upstream, gateway(tmp_path, upstream.url) as gw:
        extra = "authorization: Bearer agent-own\r\ncookie: c=1\r\nx-api-key: k\r\nx-forwarded-for: 1.2.3.4\r\n"
        extra += "openai-organization: org-other\r\nopenai-project: proj-other\r\n"
        extra += "openai-beta: responses=experimental\r\naccept-encoding: gzip\r\n"
        answer = await ask(gw.socket_path, request(body=b'{"input": "hi"}', extra=extra))
    assert answer.status == 200 and json.loads(answer.body)["echo"] == '{"input": "hi"}'
    (seen,) = upstream.seen
    assert (seen.method, seen.target) == ("POST", "/v1/responses")
    assert seen.header("authorization") == [f"Bearer {KEY.get_secret_value()}"]
    assert seen.header("host") == [f"localhost:{upstream.port}"]
    assert seen.header("accept-encoding") == ["identity"]
    assert seen.header("openai-beta") == ["responses=experimental"]
    for dropped in ("cookie", "x-api-key", "x-forwarded-for", "openai-organization", "openai-project"):
        assert seen.header(dropped) == [], dropped


REFUSED = [
    (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\n\r\n", 405, "CONNECT"),
    (request(extra="upgrade: websocket\r\nconnection: upgrade\r\n"), 400, "upgrades"),
    (request(extra="connection: Upgrade\r\n"), 400, "upgrades"),
    (request(method="GET", body=b"", extra="upgrade: h2c\r\n"), 400, "upgrades"),
    (request().replace(f"host: 127.0.0.1:{PORT}".encode(), b"host: evil.test"), 403, "Host"),
    (request().replace(f"host: 127.0.0.1:{PORT}".encode(), b"host: 127.0.0.1:18080.evil.test"), 403, "Host"),
    (request(extra="host: evil.test\r\n"), 403, "exactly one Host"),
    (request().replace(f"host: 127.0.0.1:{PORT}\r\n".encode(), b""), 403, "exactly one Host"),
    (request().replace(b"HTTP/1.1", b"HTTP/1.0"), 505, "HTTP/1.1"),
    (request(extra="content-length: 5\r\n"), 400, "malformed"),
    (request().replace(b"\r\n", b"\n"), 400, "malformed"),
    (request(extra="x-folded: a\r\n b\r\n"), 400, "malformed"),
    (request(extra="x-nul: a\x00b\r\n"), 400, "malformed"),
    (request(target="http://evil.test/v1/responses"), 403, "plain path"),
    (request(target="/v1/responses/../../admin"), 403, "plain path"),
    (request(target="/v1/./responses"), 403, "plain path"),
    (request(target="/v1/%72esponses"), 403, "plain path"),
    (request(target="/v1//responses"), 403, "plain path"),
    (request(target="/v1/responses/"), 403, "plain path"),
    (request(target="/v1/responses;x=1"), 403, "plain path"),
    (request(target="/v1/responses?x=<script>"), 403, "plain path"),
    (request(target="*", method="OPTIONS"), 403, "plain path"),
    (request(target="/v1/files"), 403, "not served"),
    (request(target="/v2/responses"), 403, "not served"),
    (request(method="GET"), 403, "not served"),
    (request(method="DELETE", target="/v1/models"), 403, "not served"),
    (request(extra="x-pad: " + "p" * 70 * 1024 + "\r\n"), 431, "larger than"),
    (request(extra="transfer-encoding: chunked\r\n"), 400, "malformed"),
    (request(body=b"").replace(b"content-length: 0", b"transfer-encoding: gzip"), 400, "malformed"),
    (b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:18080\r\ncontent-length: 99999999999\r\n\r\n", 413, "body"),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400, "malformed"),
]


async def test_requests_other_than_the_model_api_are_refused_and_reach_nothing(tmp_path: Path) -> None:
    async with Upstream() as upstream, gateway(tmp_path, upstream.url) as gw:
        for raw, status, why in REFUSED:
            answer = await ask(gw.socket_path, raw)
            assert answer.status == status and why in answer.error, (raw[:80], answer.status, answer.body)
        assert gw.stats.refused == len(REFUSED)
    assert upstream.seen == [] and upstream.connections == 0


async def test_a_chunked_body_past_the_limit_is_refused_and_the_upstream_request_abandoned(tmp_path: Path) -> None:
    async with Upstream() as upstream, gateway(tmp_path, upstream.url, max_body_bytes=4096) as gw:
        chunk = b"1000\r\n" + b"a" * 4096 + b"\r\n"
        head = f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{PORT}\r\ntransfer-encoding: chunked\r\n\r\n"
        answer = await ask(gw.socket_path, head.encode() + chunk * 2 + b"0\r\n\r\n")
    assert answer.status == 413 and "body" in answer.error
    assert upstream.seen == []


async def test_the_credential_is_never_sent_back_or_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with Upstream() as upstream, gateway(tmp_path, upstream.url) as gw:
        ok = await ask(gw.socket_path, request())
        refused = await ask(gw.socket_path, request(target="/v1/files"))
    secret = KEY.get_secret_value().encode()
    assert secret not in ok.body + refused.body and secret not in json.dumps(ok.headers).encode()
    assert KEY.get_secret_value() not in caplog.text


async def test_sse_passes_through_as_it_arrives_and_its_usage_is_recorded(tmp_path: Path) -> None:
    first_seen_by_agent = asyncio.Event()

    async def stream(seen: Seen) -> AsyncIterator[bytes]:
        yield b'event: response.created\ndata: {"type": "response.created"}\n\n'
        await asyncio.wait_for(first_seen_by_agent.wait(), 30)  # held until the agent has the first event
        completed = {"type": "response.completed", "response": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
        yield b"event: response.completed\ndata: " + json.dumps(completed).encode() + b"\n\n"

    usages: list[TokenUsage] = []
    async with Upstream(stream, "text/event-stream") as upstream, gateway(tmp_path, upstream.url, usages.append) as gw:
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        writer.write(request())
        received = b""
        while b"response.created" not in received:
            received += await asyncio.wait_for(reader.read(65536), 30)
        assert b"response.completed" not in received
        first_seen_by_agent.set()
        while not received.endswith(b"0\r\n\r\n"):
            received += await asyncio.wait_for(reader.read(65536), 30)
        writer.close()
    assert b"response.completed" in received
    assert [(u.input_tokens, u.output_tokens, u.total_tokens, u.known) for u in usages] == [(9, 1, 10, True)]


async def test_the_scripted_model_streams_through_and_its_usage_is_recorded(tmp_path: Path) -> None:
    usages: list[TokenUsage] = []
    script = Script(turns=[[ScriptItem(message="one")], [ScriptItem(message="two")]])
    async with ScriptedModel(script) as model, gateway(tmp_path, model.base_url, usages.append) as gw:
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        conn = h11.Connection(h11.CLIENT)
        for expected in (b"one", b"two"):  # two requests on one kept-alive connection
            body = b'{"model": "m"}'
            headers = [("host", f"127.0.0.1:{PORT}"), ("content-length", str(len(body)))]
            writer.write(conn.send(h11.Request(method="POST", target="/v1/responses", headers=headers)))
            writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            answer = await read_answer(reader, conn)
            assert answer.status == 200 and expected in answer.body
            assert answer.headers["content-type"] == "text/event-stream"
            conn.start_next_cycle()
        writer.close()
    assert len(model.requests) == 2
    assert [u.total_tokens for u in usages] == [120, 120]


async def test_kept_alive_agent_requests_reuse_one_upstream_connection(tmp_path: Path) -> None:
    async with Upstream() as upstream, gateway(tmp_path, upstream.url) as gw:
        for _ in range(3):
            assert (await ask(gw.socket_path, request())).status == 200
    assert len(upstream.seen) == 3 and upstream.connections == 1


async def test_a_token_budget_refuses_further_requests_with_the_reason(tmp_path: Path) -> None:
    spent = [0]

    def budget(usage: TokenUsage) -> str | None:
        spent[0] += usage.total_tokens
        return f"token budget of 10 used up ({spent[0]} used)" if spent[0] >= 10 else None

    async with Upstream() as upstream, gateway(tmp_path, upstream.url, budget) as gw:
        assert (await ask(gw.socket_path, request())).status == 200  # 7 tokens
        assert (await ask(gw.socket_path, request())).status == 200  # 14: past the budget
        refused = await ask(gw.socket_path, request())
    assert refused.status == 429 and "token budget of 10 used up (14 used)" in refused.error
    assert json.loads(refused.body)["error"]["code"] == "insufficient_quota"
    assert len(upstream.seen) == 2 and gw.stopped


async def test_an_async_usage_callback_is_awaited(tmp_path: Path) -> None:
    seen: list[int] = []

    async def record(usage: TokenUsage) -> None:
        await asyncio.sleep(0)
        seen.append(usage.total_tokens)

    async with Upstream() as upstream, gateway(tmp_path, upstream.url, record) as gw:
        await ask(gw.socket_path, request())
    assert seen == [7]


def make_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A private CA and a certificate for the name localhost only, signed by it: (server context, CA file)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hydra test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    names = [x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, tmp_path / "ca.pem"


async def test_an_https_upstream_is_reached_only_with_a_certificate_it_trusts(tmp_path: Path) -> None:
    server_tls, ca_file = make_tls(tmp_path)
    async with Upstream(tls=server_tls) as upstream:
        async with gateway(tmp_path, upstream.url) as gw:  # the system's CAs: the test CA is not among them
            untrusted = await ask(gw.socket_path, request())
        assert untrusted.status == 502 and "not trusted" in untrusted.error
        assert upstream.seen == []
        async with gateway(tmp_path, upstream.url, ca_file=ca_file) as gw:
            trusted = await ask(gw.socket_path, request())
        other_name = upstream.url.replace("localhost", "127.0.0.1")
        async with gateway(tmp_path, other_name, ca_file=ca_file) as gw:  # a name the certificate does not hold
            wrong_name = await ask(gw.socket_path, request())
    assert trusted.status == 200 and len(upstream.seen) == 1
    assert upstream.seen[0].header("authorization") == [f"Bearer {KEY.get_secret_value()}"]
    assert wrong_name.status == 502 and "not trusted" in wrong_name.error


async def test_an_unreachable_upstream_is_answered_502_with_where(tmp_path: Path) -> None:
    async with Upstream() as upstream:
        url = upstream.url
    async with gateway(tmp_path, url) as gw:
        answer = await ask(gw.socket_path, request())
    assert answer.status == 502 and f"localhost:{url.split(':')[2].split('/')[0]}" in answer.error


async def test_an_idle_agent_connection_is_closed_and_a_silent_one_answered_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_gateway, "HEADER_TIMEOUT_S", 0.2)
    async with Upstream() as upstream, gateway(tmp_path, upstream.url, keepalive_s=0.2) as gw:
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        writer.write(request())
        assert (await read_answer(reader)).status == 200
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed once idle
        writer.close()
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        writer.write(request()[:40])  # a head that never ends, byte by byte or not at all
        assert (await read_answer(reader)).status == 408
        writer.close()
    assert gw.stats.by_kind["timeout"] == 1 and len(upstream.seen) == 1


async def test_the_mcp_gateway_adds_the_agent_token_on_the_host_side(tmp_path: Path) -> None:
    token = SecretStr("agent-token-abc")
    async with Upstream(unix=tmp_path / "endpoint.sock") as endpoint:
        config = mcp_gateway_config(tmp_path / "endpoint.sock", token, listen_port=PORT)
        async with ModelGateway(tmp_path / "mcp.sock", config) as gw:
            ok = await ask(gw.socket_path, request(target="/mcp", extra="authorization: Bearer guess\r\n"))
            refused = await ask(gw.socket_path, request(target="/v1/responses"))
    assert ok.status == 200 and refused.status == 403
    (seen,) = endpoint.seen
    assert seen.target == "/mcp" and seen.header("authorization") == ["Bearer agent-token-abc"]




class RawUpstream:
    """A loopback server answering every connection with fixed bytes (then closing), whatever it is sent."""

    def __init__(self, answer: bytes) -> None:
        self.answer, self.received, self.port = answer, b"", 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> RawUpstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.received += await reader.readuntil(b"\r\n\r\n")
            writer.write(self.answer)
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n" + json.dumps(
            {"usage": {"input_tokens": 2, "output_tokens": 3}}
        ).encode(),  # ends when the connection does
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(
            b"%x\r\n%b\r\n" % (len(part), part)
            for part in (b"event: response.c", b'ompleted\ndata: {"response": {"usage": {"total_tokens": 5}}}\n\n')
        )
        + b"0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n"
        b'{"usage": {"total_tokens": 5}, "x": 1.0}',
    ],
)
async def test_every_response_framing_reaches_the_agent_intact_with_its_usage(tmp_path: Path, answer: bytes) -> None:
    usages: list[TokenUsage] = []
    async with RawUpstream(answer) as upstream, gateway(tmp_path, upstream.url, usages.append) as gw:
        got = await ask(gw.socket_path, request())
    assert got.status == 200 and b"usage" in got.body
    assert [u.total_tokens for u in usages] == [5]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", "cut"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxx", "failed"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", "failed"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "failed"),
        (b"", "failed"),
    ],
)
async def test_a_broken_upstream_answer_is_a_502_or_a_cut_never_a_hang(tmp_path: Path, answer: bytes, why: str) -> None:
    async with RawUpstream(answer) as upstream, gateway(tmp_path, upstream.url) as gw:
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        writer.write(request())
        raw = await asyncio.wait_for(reader.read(), 30)
        writer.close()
    if why == "cut":  # the head went out already: the agent sees a response shorter than announced
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"short")
    else:
        assert raw.startswith(b"HTTP/1.1 502") and b"model endpoint failed" in raw, raw


async def test_a_header_sent_in_small_pieces_is_still_bounded(tmp_path: Path) -> None:
    async with Upstream() as upstream, gateway(tmp_path, upstream.url) as gw:
        reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
        writer.write(f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{PORT}\r\nx-endless: ".encode())
        answer = b""
        for _ in range(100):  # up to 100 KiB of one header value, 1 KiB at a time
            try:
                writer.write(b"v" * 1024)
                await writer.drain()
            except ConnectionError:
                break
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.05)
            if answer:
                break
        answer += await asyncio.wait_for(reader.read(), 30)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert upstream.seen == []


def test_a_credential_that_would_split_a_header_is_refused_without_showing_it() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        model_gateway_config("https://models.example/v1", SecretStr("sk-abc\r\nx-evil: 1"), listen_port=PORT)
    assert "line break" in str(info.value) and "sk-abc" not in str(info.value)
