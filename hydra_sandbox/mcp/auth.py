"""Who is calling: bearer tokens verified, then turned into a :data:`~hydra_sandbox.authority.Principal`.

Each server has its own rule (:class:`PrincipalOf`): the operator's server takes the operator's token
(and, over stdio or in memory, where no token exists, the host process is the operator); the agents'
server takes agent tokens only. A request whose token fits neither gets no principal and is refused.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import TypeAlias

from fastmcp.server.auth.auth import AccessToken, TokenVerifier
from pydantic import ValidationError

from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.authority import OPERATOR, Agent, Principal

PrincipalOf: TypeAlias = Callable[[AccessToken | None], Principal | None]
"""A server's rule from the request's verified token (``None``: no token) to its principal."""


class HydraTokenVerifier(TokenVerifier):
    """The operator's bearer token (streamable HTTP on the host)."""

    def __init__(self, operator_token: str) -> None:
        super().__init__()
        self._operator = operator_token

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._operator.encode()):
            return AccessToken(token=token, client_id="operator", scopes=["hydra"], claims={"kind": "operator"})
        return None


class AgentTokenVerifier(TokenVerifier):
    """Per-run agent tokens (the endpoint inside sandboxes): each valid for one session's subtree."""

    def __init__(self, tokens: AgentTokens) -> None:
        super().__init__()
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        session_id = await asyncio.to_thread(self._tokens.session_for, token)  # a file read
        if session_id is None:
            return None
        return AccessToken(
            token=token,
            client_id=f"agent:{session_id}",
            scopes=["hydra"],
            claims={"kind": "agent", "session_id": session_id},
        )


def _agent(token: AccessToken) -> Agent | None:
    try:
        return Agent.model_validate({"session_id": token.claims.get("session_id")})
    except ValidationError:
        return None


def operator_side(*, tokens_required: bool) -> PrincipalOf:
    """The operator's server. Without a token (stdio, in memory) the caller is the host process, the
    operator, unless the server has a token verifier: then a missing token is refused. An agent token
    (a server configured to accept both) is that agent."""

    def principal_of(token: AccessToken | None) -> Principal | None:
        if token is None:
            return None if tokens_required else OPERATOR
        kind = token.claims.get("kind")
        if kind == "operator":
            return OPERATOR
        return _agent(token) if kind == "agent" else None

    return principal_of


def agent_side(token: AccessToken | None) -> Principal | None:
    """The agents' server: an agent token, and nothing else."""
    if token is None or token.claims.get("kind") != "agent":
        return None
    return _agent(token)
