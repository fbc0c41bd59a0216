"""What runs in a gateway pod (backends/kubernetes/gateway_process.py): the plan and key read from the
environment the pod's manifest gives it, and the shared gateway process (the remote Docker engine's)
serving the model gateway on a TCP port: a model request gets the key added, anything else is refused
by the gateway's own rules, and the usage lines on stdout are the same numbered ones."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import (
    MODEL_KEY_ENV,
    PLAN_ENV,
    GatewayPodSpec,
    gateway_pod_manifest,
)
from hydra_sandbox.sandbox.backends.kubernetes.gateway_process import config_from_env
from hydra_sandbox.sandbox.backends.kubernetes.manifests import PodOptions
from hydra_sandbox.sandbox.egress import EGRESS_PORT, EgressPlan, GatewaySecrets
from hydra_sandbox.sandbox.gateway_process import GatewayProcessConfig, TcpFront, serve
from tests.unit.test_model_gateway import KEY, Answer, Upstream, read_answer, request

SID = "s-0a1b2c3d4e5f"


def plan(url: str, mode: str = "model-only") -> EgressPlan:
    return EgressPlan(session_id=SID, mode=mode, relay="gateway" if mode != "none" else "none", model_url=url)


async def ask_tcp(port: int, raw: bytes) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await read_answer(reader)
    finally:
        writer.close()


def test_the_plan_is_read_from_the_environment_the_pods_manifest_sets() -> None:
    spec = GatewayPodSpec(plan=plan("http://127.0.0.1:9/v1"), labels={}, image="i", command=["c"], timeout_s=60)
    pod = gateway_pod_manifest(spec, GatewaySecrets(model_key=KEY), PodOptions(namespace="hydra"))
    env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}
    env[MODEL_KEY_ENV] = KEY.get_secret_value()  # what the kubelet puts there from the Secret
    config = config_from_env(env)
    assert config.plan == spec.plan and config.model_key == KEY and config.tcp_port == EGRESS_PORT


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, f"{PLAN_ENV} is not set"),
        ({PLAN_ENV: "{"}, f"{PLAN_ENV}: not an egress plan"),
        ({PLAN_ENV: json.dumps({"session_id": SID, "mode": "sideways", "model_url": "x"})}, "not an egress plan"),
        ({PLAN_ENV: plan("http://127.0.0.1:9/v1", "none").model_dump_json()}, "mode 'none' has no gateway"),
    ],
)
def test_a_missing_or_bad_plan_is_refused_naming_the_variable(env: dict[str, str], said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        config_from_env(env)


@contextlib.asynccontextmanager
async def serving(url: str, socket_dir: Path, out: io.StringIO, key: bool = True) -> AsyncIterator[TcpFront]:
    """The shared process serving ``url``'s plan as the pod does (TCP port 0: any free one)."""
    config = GatewayProcessConfig(
        plan=plan(url), model_key=KEY if key else None, socket_dir=socket_dir, tcp_port=0, tcp_host="127.0.0.1"
    )
    stop = asyncio.Event()
    fronts: list[TcpFront] = []
    with redirect_stdout(out):
        task = asyncio.create_task(serve(config, stop, on_front=fronts.append))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while '"ready"' not in out.getvalue():
            assert loop.time() < deadline and not task.done(), "the gateway never said it was ready"
            await asyncio.sleep(0.01)
        try:
            yield fronts[0]
        finally:
            stop.set()
            await task


async def test_a_model_request_on_the_pods_port_reaches_the_model_with_the_key_added_and_its_usage_is_a_line(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    async with Upstream() as upstream, serving(upstream.url, tmp_path, out) as front:
        answer = await ask_tcp(front.port, request(body=b'{"input": "hi"}', extra="authorization: Bearer own\r\n"))
        refused = await ask_tcp(front.port, request(target="/v1/files"))
    assert answer.status == 200 and json.loads(answer.body)["echo"] == '{"input": "hi"}'
    (seen,) = upstream.seen
    assert seen.header("authorization") == [f"Bearer {KEY.get_secret_value()}"]
    assert refused.status == 403 and "not served" in refused.error
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"ready": True} and [line["usage"]["seq"] for line in lines[1:] if "usage" in line] == [0]
    assert KEY.get_secret_value() not in out.getvalue()


async def test_the_port_closes_with_the_gateway(tmp_path: Path) -> None:
    async with serving("http://127.0.0.1:9/v1", tmp_path, io.StringIO(), key=False) as front:
        port = front.port
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_the_pods_process_reads_the_two_variables_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_sandbox.sandbox.backends.kubernetes.gateway_process import PodEnvironment

    monkeypatch.setenv(PLAN_ENV, plan("http://127.0.0.1:9/v1").model_dump_json())
    monkeypatch.setenv(MODEL_KEY_ENV, KEY.get_secret_value())
    config = config_from_env(PodEnvironment().as_mapping())
    assert config.plan.session_id == SID and config.model_key == KEY
    monkeypatch.delenv(MODEL_KEY_ENV)
    assert config_from_env(PodEnvironment().as_mapping()).model_key is None
