"""Hydra's side of the gateway process's stdout protocol (:mod:`hydra_sandbox.sandbox.gateway_process`):
``{"ready": true}`` once it serves, then one numbered ``{"usage": {...}}`` per model response. Shared by
every placement that follows a gateway's log: the remote Docker engine's gateway container
(:mod:`~hydra_sandbox.sandbox.backends.docker.sidecar_egress`) and the Kubernetes gateway pod
(:mod:`~hydra_sandbox.sandbox.backends.kubernetes.egress`). A line that is not such JSON is ignored: the
gateway's own output cannot be taken for usage it did not report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

from pydantic import ValidationError

from hydra_sandbox.model_gateway import UsageCallback
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.sandbox.gateway_process import READY, USAGE


async def gateway_line(line: bytes, ready: asyncio.Future[None], on_usage: UsageCallback | None) -> str | None:
    """Act on one stdout line: set ``ready`` on the ready line, tell ``on_usage`` a usage line; the
    reason ``on_usage`` gives once the session's budget is spent (the gateway is then to be stopped)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get(READY) is True and not ready.done():
        ready.set_result(None)
    if USAGE not in message or on_usage is None:
        return None
    try:
        usage = TokenUsage.model_validate(message[USAGE])
    except ValidationError:
        return None
    answer = on_usage(usage)
    reason = await answer if isinstance(answer, Awaitable) else answer
    return reason or None
