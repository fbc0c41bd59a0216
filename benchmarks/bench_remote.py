"""Agents on a remote Docker engine: spawn to the agent's first Codex event (``thread.started``) on a
second engine reached over mutual TLS (archive workspace, egress in a gateway container beside the agent)
against ``docker -H <engine> run --rm IMAGE true`` there, and the same pair on the local engine (overlay,
host sockets), in one run. Also the gateway image's build time and size, and how long copying the agent
and gateway images into a fresh engine takes (the CI cost of the remote tests).

The second engine is the tests' (tests/remote_engine.py: a second dockerd on this machine, its own bridge);
the scripted model listens on that bridge's address. Needs root and dockerd.
The four measurements are alternated (one of each in turn), so load on a shared machine hits them alike;
each session is also timed to its first model answer (``turn.completed``), which goes through the gateway.
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
from hydra_sandbox.events import Event
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


def plain_run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def codex_seen(events: list[Event], what: str) -> bool:
    return any(e.data.get("codex") == what for e in events)


class Sessions:
    """One manager for one engine: :meth:`one` spawns a session and times it to its first Codex event
    (``thread.started``) and to its first model answer (``turn.completed``, through the gateway), then
    waits for its end."""

    def __init__(self, settings: HydraSettings, repo: Path, runtime: ContainerRuntime) -> None:
        self.settings, self.repo, self.runtime = settings, repo, runtime
        self.manager = manager_for(settings, max_concurrent=1)
        self.first_event: list[float] = []
        self.first_answer: list[float] = []

    async def __aenter__(self) -> Sessions:
        await self.manager.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.manager.close()
        await collect_garbage(self.runtime, set(), home=home_label(self.settings.data_home))

    async def one(self) -> None:
        start = time.perf_counter()
        request = SpawnRequest(working_dir=str(self.repo), custom_prompt=f"probe {len(self.first_event)}")
        sid = (await self.manager.spawn(request, OPERATOR)).session["session_id"]
        while not codex_seen(await self.manager.events(sid), "thread.started"):
            await asyncio.sleep(0.01)
        self.first_event.append(time.perf_counter() - start)
        while not codex_seen(await self.manager.events(sid), "turn.completed"):
            await asyncio.sleep(0.01)
        self.first_answer.append(time.perf_counter() - start)
        await self.manager.wait(sid, 120, principal=OPERATOR)


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
                plain_local: list[float] = []
                plain_remote: list[float] = []
                async with (
                    Sessions(local_settings, work, DockerRuntime()) as hydra_local,
                    Sessions(remote_settings, work, engine_runtime(engine.engine)) as hydra_remote,
                ):
                    for _ in range(runs):  # alternated: a burst of load on the machine hits all four alike
                        plain_local.append(plain_run(["docker", "run", "--rm", agent_image, "true"]))
                        await hydra_local.one()
                        plain_remote.append(plain_run([*remote_cli, "run", "--rm", agent_image, "true"]))
                        await hydra_remote.one()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# bench_remote: {runs} runs each, medians")
    print(f"gateway image: built in {gateway.seconds:.1f} s, {gateway.size_bytes / 1e6:.0f} MB")
    print(f"copy into a fresh engine: agent image {agent_copy.seconds:.1f} s ({agent_copy.bytes_sent / 1e6:.0f} MB), "
          f"gateway image {gateway_copy.seconds:.1f} s ({gateway_copy.bytes_sent / 1e6:.0f} MB)")  # fmt: skip
    for where, plain, hydra in (("local", plain_local, hydra_local), ("remote", plain_remote, hydra_remote)):
        p, h, answer = (
            statistics.median(plain),
            statistics.median(hydra.first_event),
            statistics.median(hydra.first_answer),
        )
        print(f"{where}: docker run --rm true {p:.2f} s; spawn -> first Codex event {h:.2f} s; ratio {h / p:.2f}x; "
              f"spawn -> first model answer {answer:.2f} s")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
