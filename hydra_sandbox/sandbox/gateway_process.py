"""The process of a gateway container (``python3 -m hydra_sandbox.sandbox.gateway_process --config FILE``):
a session's gateways (:func:`~hydra_sandbox.sandbox.gateways.session_gateways`, the same code the local
backend serves in Hydra's process) served in a socket volume that the agent's container mounts. It is what
:class:`~hydra_sandbox.sandbox.backends.docker.sidecar_egress.SidecarEgress` runs beside an agent on an
engine that does not share Hydra's machine.

Its configuration (:class:`GatewayProcessConfig`: the plan and the model key)
arrives as a file Hydra puts into a volume of its own before the container starts (mode 0400, the gateway
user's), never through the environment or the command line, which ``docker inspect`` shows.

It talks back on stdout, one JSON object a line: ``{"ready": true}`` once every socket is served,
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
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

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


async def serve(config: GatewayProcessConfig, stop: asyncio.Event) -> None:
    """Serve the plan's gateways in ``config.socket_dir`` until ``stop`` is set."""
    secrets = GatewaySecrets(model_key=config.model_key)
    services = session_gateways(config.plan, config.socket_dir, secrets, on_usage=UsageReporter())
    async with contextlib.AsyncExitStack() as stack:
        for service in services:
            await stack.enter_async_context(service)
        emit_line({READY: True})
        await stop.wait()


async def _main(config: GatewayProcessConfig) -> None:
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
    asyncio.run(_main(load_config(args.config, consume=args.consume)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
