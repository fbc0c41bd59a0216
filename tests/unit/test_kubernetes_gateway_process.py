"""What runs in a gateway pod (backends/kubernetes/gateway_process.py): the plan and key read from the
environment the pod's manifest gives it, and the same model gateway as on one machine served on a TCP
port: a model request gets the key added, anything else is refused by the gateway's own rules."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import (
    MODEL_KEY_ENV,
    PLAN_ENV,
    GatewayPodSpec,
    gateway_pod_manifest,
)
from hydra_sandbox.sandbox.backends.kubernetes.gateway_process import plan_from_env, serve_gateway
from hydra_sandbox.sandbox.backends.kubernetes.manifests import PodOptions
from hydra_sandbox.sandbox.egress import EgressPlan, GatewaySecrets
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
    found, secrets = plan_from_env(env)
    assert found == spec.plan and secrets.model_key == KEY


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
        plan_from_env(env)


async def test_a_model_request_on_the_pods_port_reaches_the_model_with_the_key_added(tmp_path: Path) -> None:
    async with (
        Upstream() as upstream,
        serve_gateway(plan(upstream.url), GatewaySecrets(model_key=KEY), tmp_path, host="127.0.0.1", port=0) as front,
    ):
        answer = await ask_tcp(front.port, request(body=b'{"input": "hi"}', extra="authorization: Bearer own\r\n"))
        refused = await ask_tcp(front.port, request(target="/v1/files"))
    assert answer.status == 200 and json.loads(answer.body)["echo"] == '{"input": "hi"}'
    (seen,) = upstream.seen
    assert seen.header("authorization") == [f"Bearer {KEY.get_secret_value()}"]
    assert refused.status == 403 and "not served" in refused.error


async def test_the_port_closes_with_the_gateway(tmp_path: Path) -> None:
    async with serve_gateway(
        plan("http://127.0.0.1:9/v1"), GatewaySecrets(), tmp_path, host="127.0.0.1", port=0
    ) as front:
        port = front.port
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
