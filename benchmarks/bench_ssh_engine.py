"""The same engine reached over ``ssh://`` against over mutual TLS (the baseline), in one run: an API round
trip on an open client, a new client (connect and ping), an image streamed in (``docker load``), and
spawn to the agent's first Codex event (archive workspace, gateway container beside the agent).

The engine is the tests' second dockerd (tests/remote_engine.py), the ssh server the tests' sshd in front
of it (tests/ssh_engine.py), both on this machine: the numbers are the transport's own cost (an ssh
process and ``docker system dial-stdio`` per connection, ssh's encryption), not a network's.
Needs root, dockerd and OpenSSH's server. Usage: python benchmarks/bench_ssh_engine.py [--runs N]"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_remote import SCRIPT, bridge_address, first_events
from benchmarks.bench_server import repo
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.docker_hosts import EngineConfig
from hydra_sandbox.docker_ssh import ssh_argv
from hydra_sandbox.gateway_image import build_gateway_image
from hydra_sandbox.image_copy import copy_image
from hydra_sandbox.images import build_agent_image
from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime
from hydra_sandbox.scripted_model import ScriptedModel
from hydra_sandbox.settings import load_settings
from tests.remote_engine import second_engine
from tests.ssh_engine import ssh_front

BASE_IMAGE = "hydra-local/debian:bookworm"


def timed(action: Callable[[], object], runs: int) -> float:
    """The median of ``runs`` timings of ``action``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def new_client(engine: EngineConfig) -> None:
    engine_client(engine).close()


def stream_in(local: docker.DockerClient, engine: EngineConfig) -> float:
    """Seconds to stream the base image into the engine (removed there first and after)."""
    client = engine_client(engine)
    try:
        return copy_image(local, client, [BASE_IMAGE]).seconds
    finally:
        client.images.remove(BASE_IMAGE)
        client.close()


async def main(runs: int) -> None:
    base = load_settings()
    agent_image, gateway = build_agent_image(base).tag, build_gateway_image(base).tag
    local = docker.from_env()
    tmp = Path(tempfile.mkdtemp(prefix="hydra-bench-ssh-"))
    results: dict[str, dict[str, float]] = {}
    try:
        work = repo(tmp)
        with second_engine() as remote, ssh_front(remote) as front:
            engines = {"tls": remote.engine, "ssh": front.engine(), "ssh+mux": front.engine(multiplex=True)}
            for image in (agent_image, gateway):  # one image (under its tags) per copy
                copy_image(local, engine_client(remote.engine), [image])
            async with ScriptedModel(SCRIPT, host=bridge_address(remote)) as model:
                for name, engine in engines.items():
                    client = engine_client(engine)
                    hosts = {"docker_host": engine.url, "docker_tls_dir": remote.tls_dir}
                    if engine.ssh_config is not None:
                        hosts = {"docker_host": engine.url, "docker_ssh_config": engine.ssh_config}
                    settings = load_settings(
                        data_home=tmp / name, model_base_url=model.base_url, model="test-model", **hosts
                    )
                    results[name] = {
                        "round trip": timed(client.api.ping, runs * 40),
                        "new client": timed(lambda engine=engine: new_client(engine), runs * 4),
                        "image stream": statistics.median(stream_in(local, engine) for _ in range(runs)),
                        "first event": statistics.median(
                            await first_events(settings, work, runs, engine_runtime(engine))
                        ),
                    }
                    client.close()
            mux = front.engine(multiplex=True)
            subprocess.run([*ssh_argv(mux)[:-2], "-O", "exit", "--", mux.host], capture_output=True, check=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"# bench_ssh_engine: medians; {runs} runs (x40 round trips, x4 new clients)")
    for what in results["tls"]:
        tls = results["tls"][what]
        scale, unit = (1000, "ms") if what in {"round trip", "new client"} else (1, "s")
        line = [f"tls {tls * scale:.2f} {unit}"]
        for name in ("ssh", "ssh+mux"):
            value = results[name][what]
            line.append(f"{name} {value * scale:.2f} {unit} ({value / tls:.2f}x)")
        print(f"{what}: " + ", ".join(line))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
