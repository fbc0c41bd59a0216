"""Egress from inside a real agent container. Every target is a listener this test started on this
machine; each check is made on the listener's side: no byte arrived."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from hydra_sandbox.model_gateway import ModelGateway, model_gateway_config
from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.backends.docker.egress import HostSocketEgress
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.egress import plan_egress
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec, Mount
from hydra_sandbox.sandbox.supervisor import supervise

pytestmark = pytest.mark.docker


class Listener:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.received = b""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(65536)
            self.received += data
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nmodel")
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYDRA_RUNTIME_DIR", "/tmp/hydra-egress-test")
    return Path("/tmp/hydra-egress-test")


async def in_agent(image: str, network: NetworkPolicy, model_url: str, script: str) -> str:
    session = f"s-{uuid.uuid4().hex[:12]}"
    async with HostSocketEgress().serve(plan_egress(network, model_url, session)) as active:
        return await run_script(image, session, script, active.entrypoint, active.env, active.mounts)


async def run_script(
    image: str, session: str, script: str, entrypoint: list[str], env: dict[str, str], mounts: list[Mount]
) -> str:
    runtime = DockerRuntime()
    spec = ContainerSpec(
        image=image,
        argv=[*entrypoint, "bash", "-c", script],
        user="1234:1234",
        env=env,
        mounts=mounts,
        network_mode="none",
        labels={LABEL_SESSION: session, LABEL_ROLE: "agent", "hydra.test": "1"},
    )
    cid = await runtime.create(spec)
    out: list[bytes] = []

    async def collect(_s: str, chunk: bytes) -> None:
        out.append(chunk)

    try:
        await runtime.start(cid)
        await supervise(
            runtime,
            cid,
            timeout_s=60,
            max_output_bytes=100_000,
            on_output=collect,  # type: ignore[arg-type]
            grace_s=2,
        )
    finally:
        await runtime.remove(cid)
    return b"".join(out).decode(errors="replace")


@pytest.fixture
async def host_ip() -> AsyncIterator[str]:
    """This machine's address on Docker's default bridge (the gateway a container would try)."""
    import ipaddress

    import docker

    config = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    yield config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"])[1])


TRY = "timeout 3 bash -c 'echo probe > /dev/tcp/{host}/{port}' 2>&1 && echo CONNECTED || echo BLOCKED"


async def test_none_reaches_nothing(agent_image: str, runtime_dir: Path, host_ip: str) -> None:
    async with Listener("0.0.0.0") as target:
        out = await in_agent(
            agent_image,
            NetworkPolicy(mode="none"),
            "http://127.0.0.1:9/v1",
            TRY.format(host=host_ip, port=target.port) + "; " + TRY.format(host="127.0.0.1", port=target.port),
        )
    assert out.count("BLOCKED") == 2 and "CONNECTED" not in out
    assert target.received == b""


async def test_model_only_reaches_the_model_and_nothing_else(agent_image: str, runtime_dir: Path, host_ip: str) -> None:
    async with Listener() as model, Listener("0.0.0.0") as other:
        script = (
            "curl -s --max-time 5 http://127.0.0.1:18080/v1/responses -d hi; echo; "
            + TRY.format(host=host_ip, port=other.port)
            + "; "
            + "env -u HTTPS_PROXY -u HTTP_PROXY "
            + TRY.format(host="127.0.0.1", port=other.port)
        )
        out = await in_agent(agent_image, NetworkPolicy(mode="model-only"), f"http://127.0.0.1:{model.port}/v1", script)
    assert out.startswith("model"), out
    assert b"POST /v1/responses" in model.received
    assert out.count("BLOCKED") == 2 and other.received == b""


async def test_allowlist_proxy_refuses_unlisted_names_ip_literals_private_targets_and_bypass(
    agent_image: str, runtime_dir: Path, host_ip: str
) -> None:
    async with Listener("0.0.0.0") as target:
        # --noproxy '': through the proxy even for localhost (NO_PROXY exempts the container's loopback,
        # where Codex's model URL and Hydra's MCP relay are)
        proxy = "--noproxy '' -x http://127.0.0.1:18080"
        curl = "curl -s -o /dev/null -w '%{{http_connect}} ' --max-time 5 " + proxy + " https://{}/ ; "
        script = (
            curl.format(f"not-listed.invalid:{target.port}")
            + curl.format(f"{host_ip}:{target.port}")
            + curl.format("localhost:443")
            + curl.format(f"localhost:{target.port}")
            + "echo; "
            + "env -u HTTPS_PROXY -u https_proxy "
            + TRY.format(host=host_ip, port=target.port)
        )
        out = await in_agent(
            agent_image,
            NetworkPolicy(mode="allowlist", allow_domains=["localhost"]),
            "https://models.invalid/v1",
            script,
        )
    codes = out.split()[:4]
    assert codes == ["403", "403", "403", "403"], out
    assert "BLOCKED" in out and target.received == b""


@contextlib.asynccontextmanager
async def _removed(path: Path) -> AsyncIterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_the_model_gateway_serves_the_model_api_from_inside_an_agent_and_adds_the_key_on_the_host(
    agent_image: str, runtime_dir: Path
) -> None:
    key = "sk-test-gateway-key-0123456789abcdef"
    session = f"s-{uuid.uuid4().hex[:12]}"
    socket_dir = runtime_dir / session
    socket_dir.mkdir(parents=True, mode=0o755)
    socket_dir.chmod(0o755)
    async with Listener() as model, _removed(socket_dir):
        config = model_gateway_config(f"http://127.0.0.1:{model.port}/v1", SecretStr(key), listen_port=18080)
        async with ModelGateway(socket_dir / "egress.sock", config) as gateway:
            script = (
                "curl -s --max-time 5 http://127.0.0.1:18080/v1/responses -H 'authorization: Bearer mine' -d hi;"
                " echo; curl -s -o /dev/null -w '%{http_code} ' --max-time 5 http://127.0.0.1:18080/v1/files;"
                " curl -s -o /dev/null -w '%{http_code} ' --max-time 5 -H 'host: evil.test' "
                "http://127.0.0.1:18080/v1/responses -d x;"
                " curl -s -o /dev/null -w '%{http_connect} ' --max-time 5 -p -x http://127.0.0.1:18080 https://evil.test/;"
                " echo; (env; cat /proc/*/environ; cat $HOME/.codex/* $CODEX_HOME/* 2>/dev/null) | grep -c sk-test"
            )
            mount = Mount(type="bind", source=str(socket_dir), target="/run/hydra", read_only=True)
            env = {"HYDRA_EGRESS_SOCKET": "/run/hydra/egress.sock", "HYDRA_EGRESS_PORT": "18080"}
            out = await run_script(agent_image, session, script, ["hydra-agent-entry"], env, [mount])
    lines = out.splitlines()
    assert lines[0] == "model", out
    assert lines[1].split() == ["403", "403", "405"], out
    assert lines[2] == "0", out  # the key is nowhere in the container
    head = model.received.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("post /v1/responses http/1.1") and f"authorization: bearer {key}" in head
    assert "bearer mine" not in head and model.received.count(b"HTTP/1.1") == 1
    assert gateway.stats.refused == 3 and gateway.requests == 1
