"""The gateway container's process, run here without Docker: it serves the plan's socket (any uid may
connect; the agent runs as another), says it is ready and each response's usage on stdout without the
key, and refuses a configuration it cannot read, naming the file. The gateway image stages only what it
imports."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from pydantic import SecretStr

from hydra_sandbox.gateway_image import gateway_distributions, gateway_imports
from hydra_sandbox.policy import NetworkPolicy
from hydra_sandbox.sandbox.egress import plan_egress
from hydra_sandbox.sandbox.gateway_process import GatewayProcessConfig, load_config, main, serve
from tests.unit.test_model_gateway import Upstream, ask, request

KEY = "sk-gateway-process-0123456789abcdef"


async def test_the_gateway_process_serves_the_model_socket_and_reports_usage_without_the_key(run_dir: Path) -> None:
    out = io.StringIO()
    async with Upstream() as model:
        plan = plan_egress(NetworkPolicy(mode="model-only"), model.url, "s-0000000000ab")
        config = GatewayProcessConfig(plan=plan, model_key=SecretStr(KEY), socket_dir=run_dir)
        stop = asyncio.Event()
        with redirect_stdout(out):
            serving = asyncio.create_task(serve(config, stop))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while '"ready"' not in out.getvalue():
                assert loop.time() < deadline and not serving.done(), "the gateway never said it was ready"
                await asyncio.sleep(0.01)
            sock = run_dir / "egress.sock"
            assert stat.S_IMODE(sock.stat().st_mode) == 0o666
            answer = await ask(sock, request())
            stop.set()
            await serving
    assert answer.status == 200 and model.seen[0].header("authorization") == [f"Bearer {KEY}"]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"ready": True} and [line["usage"]["seq"] for line in lines[1:] if "usage" in line] == [0]
    assert KEY not in out.getvalue()


def test_an_unreadable_configuration_stops_the_process_naming_the_file_but_never_a_value(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"plan": {}, "model_key": KEY, "extra": KEY}))
    with pytest.raises(SystemExit, match=f"cannot read its configuration {bad}: plan.session_id") as raised:
        main(["--config", str(bad)])
    assert KEY not in str(raised.value)
    with pytest.raises(SystemExit, match="No such file"):
        main(["--config", str(tmp_path / "missing.json")])


def test_the_gateway_image_stages_what_the_gateway_imports_and_nothing_of_the_server() -> None:
    modules = gateway_imports()
    names = gateway_distributions(modules)
    assert "hydra_sandbox" in modules and {"pydantic", "httptools"} <= set(names)
    assert not {"chromadb", "fastmcp", "docker", "onnxruntime", "hydra-sandbox", "setuptools"} & set(names)


def test_a_consumed_configuration_is_gone_from_disk_once_read(tmp_path: Path) -> None:
    plan = plan_egress(NetworkPolicy(mode="model-only"), "http://10.0.0.1:8080/v1", "s-0000000000ab")
    path = tmp_path / "config.json"
    path.write_text(GatewayProcessConfig(plan=plan).model_dump_json())
    assert load_config(path).plan == plan and path.exists()
    assert load_config(path, consume=True).plan == plan and not path.exists()
