"""The process of a gateway container (``python3 -m hydra_sandbox.sandbox.gateway_process --config FILE``):
a session's gateways (:func:`~hydra_sandbox.sandbox.gateways.session_gateways`, the same code the local
backend serves in Hydra's process) served in a socket volume that the agent's container mounts. It is what
:class:`~hydra_sandbox.sandbox.backends.docker.sidecar_egress.SidecarEgress` runs beside an agent on an
engine that does not share Hydra's machine.

Its configuration (:class:`GatewayProcessConfig`: the plan and the model key)
arrives as a file Hydra puts into a volume of its own before the container starts (mode 0400, the gateway
user's), never through the environment or the command line, which ``docker inspect`` shows.

A gateway pod on Kubernetes runs the same process (its thin wrapper
:mod:`hydra_sandbox.sandbox.backends.kubernetes.gateway_process` builds the configuration from the pod's
environment): there the agent is in another pod, so :attr:`GatewayProcessConfig.tcp_port` also serves the
model gateway's socket on a TCP port (:class:`TcpFront`, which splices each connection to the socket, so
every rule stays the gateway's own code).

It talks back on stdout, one JSON object a line: ``{"ready": true}`` once every socket (and port) is served,
and ``{"usage": {...}}`` after each model response (Hydra follows the container's log, counts it against
the session's budget, and stops this container once the budget is spent). Nothing it prints holds the key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from hydra_sandbox.egress_relay import IDLE_TIMEOUT_S, TOTAL_TIMEOUT_S, SocketService, splice
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.sandbox.egress import EgressPlan, GatewaySecrets
from hydra_sandbox.sandbox.gateways import session_gateways

READY = "ready"
USAGE = "usage"


class GatewayProcessConfig(BaseModel):
    """What a gateway container is given (a file, 0400): never logged, never in its environment."""

    model_config = ConfigDict(extra="forbid")

    plan: EgressPlan
    model_key: SecretStr | None = None
    socket_dir: Path = Path("/run/hydra")
    tcp_port: int | None = Field(
        default=None, ge=0, le=65535, description="Also serve the model gateway on this TCP port (0: any free one)."
    )
    tcp_host: str = Field(default="0.0.0.0", description="The address the TCP port listens on.")


class TcpFront:
    """A TCP listener whose every connection is spliced to one gateway's Unix socket."""

    def __init__(self, service: SocketService, host: str, port: int) -> None:
        self.service, self.host, self.port = service, host, port
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> TcpFront:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_unix_connection(str(self.service.socket_path))
        except OSError:
            writer.close()
            return
        await splice((reader, writer), upstream, idle_s=IDLE_TIMEOUT_S, total_s=TOTAL_TIMEOUT_S)


class UsageReporter:
    """The gateway's ``on_usage``: a numbered usage line for Hydra, which counts the session's budget and
    stops this container once it is spent (the number lets a re-attaching server record each once)."""

    def __init__(self) -> None:
        self.reported = 0

    def __call__(self, usage: TokenUsage) -> None:
        emit_line({USAGE: usage.model_copy(update={"seq": self.reported}).model_dump()})
        self.reported += 1


def emit_line(message: dict[str, object]) -> None:
    """One JSON line on stdout, flushed at once (Hydra follows the container's log)."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def load_config(path: Path, *, consume: bool = False) -> GatewayProcessConfig:
    """The configuration in ``path``; with ``consume`` the file is removed once read, so the model key is
    left in this process's memory only, not on the engine's disk for as long as the run lasts."""
    try:
        config = GatewayProcessConfig.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise SystemExit(f"gateway: cannot read its configuration {path}: {exc}") from None
    except ValidationError as exc:  # the fields and what is wrong, never the values (the key is one)
        wrong = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"gateway: cannot read its configuration {path}: {wrong}") from None
    if consume:
        with contextlib.suppress(OSError):
            path.unlink()
    return config


async def serve(
    config: GatewayProcessConfig, stop: asyncio.Event, *, on_front: Callable[[TcpFront], None] | None = None
) -> None:
    """Serve the plan's gateways in ``config.socket_dir`` (and the model gateway on ``config.tcp_port``,
    whose :class:`TcpFront` ``on_front`` is given once it listens) until ``stop`` is set."""
    secrets = GatewaySecrets(model_key=config.model_key)
    services = session_gateways(config.plan, config.socket_dir, secrets, on_usage=UsageReporter())
    async with contextlib.AsyncExitStack() as stack:
        for service in services:
            await stack.enter_async_context(service)
        if config.tcp_port is not None and services:
            front = await stack.enter_async_context(TcpFront(services[0], config.tcp_host, config.tcp_port))
            if on_front is not None:
                on_front(front)
        emit_line({READY: True})
        await stop.wait()


async def run(config: GatewayProcessConfig) -> None:
    """Serve ``config`` until SIGTERM or SIGINT (the process's whole life)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hydra-gateway", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="the configuration file Hydra put in")
    parser.add_argument("--consume", action="store_true", help="remove the file once read")
    args = parser.parse_args(argv)
    asyncio.run(run(load_config(args.config, consume=args.consume)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
