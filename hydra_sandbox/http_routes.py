"""Plain HTTP routes beside the MCP endpoint on the streamable-HTTP transport.

- ``GET /healthz``: liveness, always unauthenticated; a tiny JSON body with no secrets and no state.
- ``GET /metrics``: Prometheus text format. It needs the operator's bearer token (the same one as
  ``/mcp``; agent tokens are refused) unless ``HYDRA_METRICS_PUBLIC=true``. Prometheus sends the token
  with ``authorization: {credentials: ...}`` in its scrape config. With no token verifier configured
  and metrics not public, it answers 401: closed by default.

FastMCP serves custom routes outside its bearer-auth guard, so ``/metrics`` checks the token itself.
"""

from __future__ import annotations

import asyncio

from fastmcp import FastMCP
from fastmcp.server.auth.auth import TokenVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hydra_sandbox import __version__
from hydra_sandbox.metrics import CONTENT_TYPE, HydraMetrics

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hydra"'}


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _refusal(request: Request, verifier: TokenVerifier | None) -> Response | None:
    """``None`` when the request carries the operator's token, else the response that refuses it."""
    token = bearer_token(request)
    if token is None or verifier is None:
        return JSONResponse(
            {"error": "unauthorized", "hint": "send the operator token: Authorization: Bearer <token>"},
            status_code=401,
            headers=CHALLENGE,
        )
    access = await verifier.verify_token(token)
    if access is None:
        return JSONResponse({"error": "invalid token"}, status_code=401, headers=CHALLENGE)
    if access.claims.get("kind") != "operator":
        return JSONResponse({"error": "metrics need the operator token, not an agent token"}, status_code=403)
    return None


def register_http_routes(
    mcp: FastMCP, metrics: HydraMetrics, *, verifier: TokenVerifier | None, metrics_public: bool
) -> None:
    """Add ``/healthz`` and ``/metrics`` to ``mcp``'s HTTP app."""

    @mcp.custom_route("/healthz", methods=["GET"], include_in_schema=False)
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    @mcp.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics_route(request: Request) -> Response:
        if not metrics_public:
            refusal = await _refusal(request, verifier)
            if refusal is not None:
                return refusal
        body = await asyncio.to_thread(metrics.render)
        return Response(body, headers={"Content-Type": CONTENT_TYPE})
