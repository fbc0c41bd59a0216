"""Agents on a remote Docker engine: spawn to the agent's first Codex event (``thread.started``) on a
second engine reached over mutual TLS (archive workspace, egress in a gateway container beside the agent)
against ``docker -H <engine> run --rm IMAGE true`` there, and the same pair on the local engine (overlay,
host sockets), in one run. Also the gateway image's build time and size, and how long copying the agent
and gateway images into a fresh engine takes (the CI cost of the remote tests).

The second engine is the tests' (tests/remote_engine.py: a second dockerd on this machine, its own bridge);
the scripted model listens on that bridge's address. Needs root and dockerd.
Usage: python benchmarks/bench_remote.py [--runs N]"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_server import repo
from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.gateway_image import build_gateway_image
from hydra_sandbox.gc import collect_garbage
from hydra_sandbox.image_copy import copy_image
from hydra_sandbox.images import build_agent_image
from hydra_sandbox.orchestration.spawning import SpawnRequest
from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.scripted_model import Script, ScriptedModel
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.managers import manager_for
from tests.remote_engine import RemoteEngine, second_engine

SCRIPT = Script.model_validate({"turns": [[{"message": "first event probe"}]] * 50})


def bridge_address(engine: RemoteEngine) -> str:
    ipam = docker.DockerClient(base_url=engine.socket_url).networks.get("bridge").attrs["IPAM"]["Config"][0]
    return str(ipam.get("Gateway") or ipam["Subnet"].rsplit(".", 1)[0] + ".1")


def plain_runs(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


async def first_events(settings: HydraSettings, repo: Path, runs: int, runtime: ContainerRuntime) -> list[float]:
    """Spawn → the first ``thread.started`` event, one session after another (each run to its end)."""
    manager = manager_for(settings, max_concurrent=1)
    await manager.start()
    times = []
    try:
        for i in range(runs):
            start = time.perf_counter()
            spawned = await manager.spawn(SpawnRequest(working_dir=str(repo), custom_prompt=f"probe {i}"), OPERATOR)
            sid = spawned.session["session_id"]
            while not any(e.data.get("codex") == "thread.started" for e in await manager.events(sid)):
                await asyncio.sleep(0.01)
            times.append(time.perf_counter() - start)
            await manager.wait(sid, 120, principal=OPERATOR)
    finally:
        await manager.close()
        await collect_garbage(runtime, set(), home=home_label(settings.data_home))
    return times


async def main(runs: int) -> None:
    base = load_settings()
    agent_image = build_agent_image(base).tag
    gateway = build_gateway_image(base, force=True)
    tmp = Path(tempfile.mkdtemp(prefix="hydra-bench-remote-"))
    try:
        work = repo(tmp)
        with second_engine() as engine:
            tls = engine.engine.tls
            assert tls is not None
            remote_cli = [
                "docker", "-H", engine.engine.url, "--tlsverify",
                f"--tlscacert={tls.ca}", f"--tlscert={tls.cert}", f"--tlskey={tls.key}",
            ]  # fmt: skip
            local, remote = docker.from_env(), engine_client(engine.engine)
            agent_copy = copy_image(local, remote, [agent_image])
            gateway_copy = copy_image(local, remote, [gateway.tag])
            host = bridge_address(engine)
            async with ScriptedModel(SCRIPT, host=host) as model:
                common = {"model_base_url": model.base_url, "model": "test-model"}
                local_settings = load_settings(data_home=tmp / "local", **common)
                remote_settings = load_settings(
                    data_home=tmp / "remote", docker_host=engine.engine.url, docker_tls_dir=engine.tls_dir, **common
                )
                plain_local = plain_runs(["docker", "run", "--rm", agent_image, "true"], runs)
                hydra_local = await first_events(local_settings, work, runs, DockerRuntime())
                plain_remote = plain_runs([*remote_cli, "run", "--rm", agent_image, "true"], runs)
                hydra_remote = await first_events(remote_settings, work, runs, engine_runtime(engine.engine))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# bench_remote: {runs} runs each, medians")
    print(f"gateway image: built in {gateway.seconds:.1f} s, {gateway.size_bytes / 1e6:.0f} MB")
    print(f"copy into a fresh engine: agent image {agent_copy.seconds:.1f} s ({agent_copy.bytes_sent / 1e6:.0f} MB), "
          f"gateway image {gateway_copy.seconds:.1f} s ({gateway_copy.bytes_sent / 1e6:.0f} MB)")  # fmt: skip
    for where, plain, hydra in (("local", plain_local, hydra_local), ("remote", plain_remote, hydra_remote)):
        p, h = statistics.median(plain), statistics.median(hydra)
        print(f"{where}: docker run --rm true {p:.2f} s; spawn -> first Codex event {h:.2f} s; ratio {h / p:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
