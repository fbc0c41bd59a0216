"""What runs in a session's gateway pod: the same :func:`~hydra_sandbox.sandbox.gateways.session_gateways`
as on one machine, served on the pod's TCP port instead of a Unix socket bind-mounted into the agent.

The gateways listen on Unix sockets in a private directory of the pod (a memory-backed emptyDir); one TCP
listener per gateway splices each connection to its socket, so every rule (model API only, the key added
here, the allowlist's ``CONNECT`` checks, connection limits) is the gateway's own code, unchanged. The
plan comes from ``HYDRA_GATEWAY_PLAN`` (JSON, no secret in it) and the model key from
``HYDRA_GATEWAY_MODEL_KEY``, which the pod takes from the session's Secret (:mod:`.gateway_manifests`).

Run as ``python -m hydra_sandbox.sandbox.backends.kubernetes.gateway_process``; it serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from pydantic import SecretStr, ValidationError

from hydra_sandbox.egress_relay import IDLE_TIMEOUT_S, TOTAL_TIMEOUT_S, SocketService, splice
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.sandbox.backends.kubernetes.gateway_manifests import GATEWAY_SOCKET_DIR, MODEL_KEY_ENV, PLAN_ENV
from hydra_sandbox.sandbox.egress import EGRESS_PORT, EgressPlan, GatewaySecrets
from hydra_sandbox.sandbox.gateways import session_gateways


def plan_from_env(env: Mapping[str, str]) -> tuple[EgressPlan, GatewaySecrets]:
    """The plan and the model key the pod was given; a :class:`ConfigError` naming the variable."""
    raw = env.get(PLAN_ENV)
    if not raw:
        raise ConfigError(f"{PLAN_ENV} is not set", hint="the gateway pod's manifest sets it to the session's plan")
    try:
        plan = EgressPlan.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{PLAN_ENV}: not an egress plan ({exc.error_count()} errors: {exc.errors()[0]['msg']})"
        ) from None
    if plan.relay != "gateway":
        raise ConfigError(f"{PLAN_ENV}: mode {plan.mode!r} has no gateway to serve")
    key = env.get(MODEL_KEY_ENV)
    return plan, GatewaySecrets(model_key=SecretStr(key) if key else None)


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


@contextlib.asynccontextmanager
async def serve_gateway(
    plan: EgressPlan, secrets: GatewaySecrets, socket_dir: Path, *, host: str = "0.0.0.0", port: int = EGRESS_PORT
) -> AsyncIterator[TcpFront]:
    """Serve ``plan``'s model gateway on ``host:port`` (``port`` 0: any free one) for the duration of
    the block; yields the :class:`TcpFront` (its ``port`` is the bound one). In the pod it listens on
    every interface: its NetworkPolicy lets only the session's agent pods in."""
    async with contextlib.AsyncExitStack() as stack:
        [model] = [await stack.enter_async_context(s) for s in session_gateways(plan, socket_dir, secrets)]
        yield await stack.enter_async_context(TcpFront(model, host, port))


async def _main() -> None:
    plan, secrets = plan_from_env(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve_gateway(plan, secrets, Path(GATEWAY_SOCKET_DIR)):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_main())
