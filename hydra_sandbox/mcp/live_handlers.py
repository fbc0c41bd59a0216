"""The MCP methods of live updates, registered on each server's low-level MCP server (FastMCP 4.2 serves
neither ``resources/subscribe`` nor ``subscriptions/listen``; the ``mcp`` SDK under it dispatches both):

- ``subscriptions/listen`` (2026-07-28): the SDK's own :class:`~mcp.server.subscriptions.ListenHandler`
  over the caller's view of the hub;
- ``resources/subscribe`` and ``resources/unsubscribe`` (2025-era; the SDK refuses them on 2026-07-28
  connections before any handler runs);
- a 2025-era connection that spawns a session through ``spawn_agent`` follows it without subscribing.

Who asks is the server's own rule (:data:`~hydra_sandbox.mcp.auth.PrincipalOf`) applied to the request's
verified token, as for every tool. Each URI is authorized like a read of that resource: its row of the
authority table, and for a session URI the session itself (an agent: only its subtree). Refusals are
``Invalid params`` errors carrying Hydra's message.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.auth.auth import AccessToken
from fastmcp.server.dependencies import get_access_token, get_context
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)

from hydra_sandbox.authority import Kind, Principal, authorize_component, resource_for
from hydra_sandbox.errors import AccessDenied, HydraError, shown
from hydra_sandbox.mcp.auth import PrincipalOf
from hydra_sandbox.mcp.facade import bound_facade
from hydra_sandbox.mcp.live import LiveUpdates, session_uri
from hydra_sandbox.mcp.middleware import ServicesRef
from hydra_sandbox.services import Services

log = logging.getLogger(__name__)

_SESSION_URI = re.compile(r"hydra://(?:sessions|checklists)/(?P<session_id>[^/]+)(?:/tree)?")


def session_of(uri: str) -> str | None:
    """The session a resource URI is about (``hydra://sessions/S``, ``.../S/tree``, ``hydra://checklists/S``)."""
    found = _SESSION_URI.fullmatch(uri)
    return found["session_id"] if found else None


def authorize_uri(services: Services, principal: Principal, uri: str) -> None:
    """Refuse unless ``principal`` may read ``uri``: a resource of the table it may call, and for a
    session URI a session it may see (that exists)."""
    row = resource_for(uri)
    if row is None:
        raise AccessDenied(
            f"{shown(uri)}: not a Hydra resource, so there is nothing to follow",
            hint="follow hydra://sessions/SESSION_ID, its /tree, or hydra://checklists/SESSION_ID",
        )
    authorize_component(principal, Kind.RESOURCE, row.key, uri)
    session_id = session_of(uri)
    if session_id is not None:
        services.manager.get(session_id, principal)


def _token(ctx: ServerRequestContext[Any, Any]) -> AccessToken | None:
    """The request's verified token: from the HTTP request's authenticated user, else (no HTTP) none."""
    scope = getattr(ctx.request, "scope", None)
    if isinstance(scope, dict):
        token = getattr(scope.get("user"), "access_token", None)
    else:
        token = get_access_token()
    return token if isinstance(token, AccessToken) else None


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except HydraError as exc:
        raise MCPError(INVALID_PARAMS, f"{type(exc).__name__}: {exc}") from None


class LiveHandlers:
    """The live-update methods of one server (its own principal rule)."""

    def __init__(self, hub: LiveUpdates, services: ServicesRef, principal_of: PrincipalOf) -> None:
        self._hub = hub
        self._services = services
        self._principal_of = principal_of

    def _principal(self, ctx: ServerRequestContext[Any, Any]) -> Principal:
        principal = self._principal_of(_token(ctx))
        if principal is None:
            raise AccessDenied("this token does not give access to this server", hint="use the token Hydra gave you")
        return principal

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        with _refusals():
            principal = self._principal(ctx)
            uri = str(params.uri)
            authorize_uri(self._services.get(), principal, uri)
            self._hub.subscribe(ctx.session, principal, uri)
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        with _refusals():
            self._principal(ctx)
            self._hub.unsubscribe(ctx.session, str(params.uri))
        return EmptyResult()

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        with _refusals():
            principal = self._principal(ctx)
            services = self._services.get()
            for uri in params.notifications.resource_subscriptions or ():
                authorize_uri(services, principal, uri)
            self._hub.check_capacity()
        async with self._hub.listen_stream(principal) as handler:
            return await handler(ctx, params)

    def register(self, server: FastMCP) -> None:
        """Serve the three methods on ``server``'s low-level MCP server (FastMCP has no API for them)."""
        low = server._mcp_server
        low.add_request_handler("resources/subscribe", SubscribeRequestParams, self.subscribe)
        low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, self.unsubscribe)
        low.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, self.listen)


def follow_spawned(hub: LiveUpdates) -> None:
    """Make a 2025-era connection that spawns a session follow it (as if it had subscribed)."""

    def follow(session_id: str) -> None:
        try:
            session = get_context().session
            principal = bound_facade().principal
        except (RuntimeError, HydraError):  # not spawned by an MCP request (the CLI, a manager test)
            return
        if not hub.is_legacy(session):
            return
        try:
            hub.subscribe(session, principal, session_uri(session_id))
        except HydraError as exc:
            log.info("live updates: the spawner of %s does not follow it: %s", session_id, exc)

    hub.on_created = follow
