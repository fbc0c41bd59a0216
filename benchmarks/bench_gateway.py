"""Model gateway overhead: one model request (POST /v1/responses, streamed SSE answer) sent straight to
a local model server, and the same request through the gateway, alternating, in one run.

Three processes, as in a real run: the scripted model server (``hydra_sandbox.scripted_model``), the
gateway (this file with ``--serve``, standing in for the Hydra server that hosts it) on a Unix socket,
and this client, which keeps one connection open to each (Codex keeps its connection alive too).

Two scenarios: the scripted model answering at once (the gateway's whole cost shows), and the same
answers sent after ``--first-byte-ms`` (default 20 ms, far quicker than a real model's first token).
Usage: python benchmarks/bench_gateway.py [--requests N] [--body-kib K] [--first-byte-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h11

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hydra_sandbox.gateway_config import model_gateway_config
from hydra_sandbox.model_gateway import ModelGateway
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.scripted_model import Script, ScriptedModel

PORT = 18080


class Client:
    """One kept-alive HTTP/1.1 connection; ``post`` returns when the whole answer has arrived."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.conn = h11.Connection(h11.CLIENT)

    async def post(self, path: str, body: bytes) -> tuple[int, int]:
        headers = [("host", self.host), ("content-type", "application/json"), ("content-length", str(len(body)))]
        self.writer.write(self.conn.send(h11.Request(method="POST", target=path, headers=headers)))
        self.writer.write(self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
        status, size = 0, 0
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()
                return status, size
            else:
                raise RuntimeError(f"connection ended: {event}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def serve_gateway(model_url: str, socket_path: Path) -> None:
    """The gateway process: serve until stdin closes; print the usage it recorded on exit."""
    recorded: list[int] = []

    def on_usage(usage: TokenUsage) -> None:
        recorded.append(usage.total_tokens)

    config = model_gateway_config(model_url, None, listen_port=PORT)
    async with ModelGateway(socket_path, config, on_usage=on_usage):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"responses": len(recorded), "tokens": sum(recorded)}), flush=True)


class SlowModel(ScriptedModel):
    """The scripted model, answering each request after ``delay_s`` (a model's time to first token)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(Script())
        self.delay_s = delay_s

    async def _responses(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        await asyncio.sleep(self.delay_s)
        await super()._responses(writer, body)


async def serve_model(delay_ms: float) -> None:
    """The model process: print its URL, serve until stdin closes."""
    async with SlowModel(delay_ms / 1000) as model:
        print(model.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def measure(model_url: str, socket_path: Path, requests: int, body: bytes) -> dict[str, list[float]]:
    host, port = model_url.split("//", 1)[1].split("/", 1)[0].split(":")
    direct = Client(*await asyncio.open_connection(host, int(port)), f"{host}:{port}")
    through = Client(*await asyncio.open_unix_connection(str(socket_path)), f"127.0.0.1:{PORT}")
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    for n in range(requests + 20):
        order = [("direct", direct), ("gateway", through)]
        for name, client in order if n % 2 else reversed(order):
            start = time.perf_counter()
            status, size = await client.post("/v1/responses", body)
            elapsed = time.perf_counter() - start
            assert status == 200 and size > 0, (name, status)
            if n >= 20:  # the first 20 rounds warm both paths up
                times[name].append(elapsed * 1000)
    return times


def run_scenario(requests: int, body: bytes, delay_ms: float) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Start a model process and a gateway process, measure, stop both."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "env": env}
        model = subprocess.Popen([sys.executable, __file__, "--model", str(delay_ms)], **pipes)
        assert model.stdout is not None and model.stdin is not None
        model_url = model.stdout.readline().strip()
        socket_path = Path(tmp) / "model.sock"
        gateway = subprocess.Popen([sys.executable, __file__, "--serve", model_url, str(socket_path)], **pipes)
        assert gateway.stdout is not None and gateway.stdin is not None
        assert gateway.stdout.readline().strip() == "ready"
        try:
            times = asyncio.run(measure(model_url, socket_path, requests, body))
        finally:
            gateway.stdin.close()
            usage = json.loads(gateway.stdout.readline() or "{}")
            gateway.wait(10)
            model.stdin.close()
            model.wait(10)
    return times, usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--body-kib", type=int, default=16, help="request body size (Codex sends its context)")
    parser.add_argument("--first-byte-ms", type=float, default=20.0)
    parser.add_argument("--serve", nargs=2, metavar=("MODEL_URL", "SOCKET"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=float, metavar="DELAY_MS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_gateway(args.serve[0], Path(args.serve[1])))
        return
    if args.model is not None:
        asyncio.run(serve_model(args.model))
        return
    body = json.dumps({"model": "m", "input": "x" * (args.body_kib * 1024)}).encode()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.body_kib} KiB request body, scripted model answering SSE; load average {load}")
    print("| model answers | requests | direct p50 | gateway p50 | ratio p50 | direct p95 | gateway p95 | ratio p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for delay_ms, requests in ((0.0, args.requests), (args.first_byte_ms, max(100, args.requests // 10))):
        times, usage = run_scenario(requests, body, delay_ms)
        d50, d95 = statistics.median(times["direct"]), percentile(times["direct"], 0.95)
        g50, g95 = statistics.median(times["gateway"]), percentile(times["gateway"], 0.95)
        label = "at once" if not delay_ms else f"after {delay_ms:g} ms"
        row = [label, str(requests), f"{d50:.2f} ms", f"{g50:.2f} ms", f"**{g50 / d50:.2f}x**"]
        print("| " + " | ".join([*row, f"{d95:.2f} ms", f"{g95:.2f} ms", f"{g95 / d95:.2f}x"]) + " |")
        assert usage.get("responses") == requests + 20, usage  # every response's usage was recorded
    print("target: gateway p50 <= 1.2x direct")


if __name__ == "__main__":
    main()
