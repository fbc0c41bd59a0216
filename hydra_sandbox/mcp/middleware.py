"""The one middleware every Hydra MCP server runs: per request it binds the caller, checks the authority
table, times tool calls, and turns Hydra's errors into the short messages a model can act on.

With the agents' server mounted into the operator's, a call to a mounted tool passes both servers'
middleware. The outermost one (the server the request reached) binds the principal and counts the
call; the inner one sees the principal bound and only checks the table again.

Errors: a :class:`~hydra_sandbox.errors.HydraError` (raised by a tool, a resource, a prompt, or by the
authority check here) becomes ``"<ErrorType>: <message (hint)>"``; a pydantic validation error (bad
arguments, checked by fastmcp before Hydra's code runs, or by a model inside it) becomes one line per
problem, bounded (:func:`~hydra_sandbox.yaml_models.describe_validation_error`). Anything else keeps
fastmcp's masked "Error calling tool" message: never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TypeVar

import mcp.types as mt
from fastmcp.exceptions import FastMCPError, NotFoundError, PromptError, ResourceError, ToolError
from fastmcp.prompts.base import Prompt, PromptResult
from fastmcp.resources.base import Resource, ResourceResult
from fastmcp.resources.template import ResourceTemplate
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool, ToolResult
from pydantic import ValidationError

from hydra_sandbox.authority import (
    Component,
    Kind,
    Principal,
    authorize_component,
    component,
    component_key,
    resource_for,
)
from hydra_sandbox.errors import AccessDenied, HydraError
from hydra_sandbox.mcp.auth import PrincipalOf
from hydra_sandbox.mcp.facade import Facade, binding
from hydra_sandbox.metrics import UNKNOWN_TOOL, HydraMetrics
from hydra_sandbox.services import Services
from hydra_sandbox.yaml_models import describe_validation_error

T = TypeVar("T")
_principal: ContextVar[Principal | None] = ContextVar("hydra_principal", default=None)


class ServicesRef:
    """Where the servers find the services the lifespan opened (``None`` before and after)."""

    def __init__(self, services: Services | None = None) -> None:
        self.services = services

    def get(self) -> Services:
        if self.services is None:
            raise HydraError("Hydra's services are not running", hint="the server is starting or shutting down")
        return self.services


def _origin(exc: BaseException | None) -> BaseException | None:
    """The Hydra or validation error behind ``exc``: fastmcp wraps what a tool body raises (a
    ToolError caused by it, or a validation error tagged as the body's) before middleware sees it."""
    for _ in range(4):
        if exc is None or isinstance(exc, HydraError | ValidationError):
            return exc
        exc = exc.__cause__
    return None


def refusal(exc: BaseException, name: str, kind: type[FastMCPError]) -> FastMCPError | None:
    """The error the client should see for ``exc`` raised while serving ``name``, or ``None`` to keep it."""
    origin = _origin(exc)
    if isinstance(origin, HydraError):
        return kind(f"{type(origin).__name__}: {origin}")
    if isinstance(origin, ValidationError):  # fastmcp's argument check, or a model built in Hydra's code
        return kind(describe_validation_error(origin, name))
    return None


class HydraMiddleware(Middleware):
    """Principal binding, the authority check, tool metrics and error messages, in one place."""

    def __init__(self, services: ServicesRef, principal_of: PrincipalOf, metrics: HydraMetrics | None) -> None:
        self._services = services
        self._principal_of = principal_of
        self._metrics = metrics

    # -- the request scope -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _scope(self) -> AsyncIterator[tuple[Principal, bool]]:
        """The request's principal, and whether this server bound it (it is the outermost)."""
        bound = _principal.get()
        if bound is not None:
            yield bound, False
            return
        principal = self._principal_of(get_access_token())
        if principal is None:
            raise AccessDenied("this token does not give access to this server", hint="use the token Hydra gave you")
        token = _principal.set(principal)
        try:
            with binding(Facade(self._services.get(), principal)):
                yield principal, True
        finally:
            _principal.reset(token)

    async def _gated(self, row: Component | None, shown_as: str, call: Callable[[], Awaitable[T]]) -> T:
        if row is None:  # not in the table: as good as absent (the matrix test catches a forgotten row)
            raise NotFoundError(f"Unknown {shown_as}")
        async with self._scope() as (principal, _outer):
            authorize_component(principal, row.kind, row.key, row.key)
            return await call()

    # -- calls -------------------------------------------------------------------------------

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        outer = _principal.get() is None
        started = time.perf_counter()
        try:
            result = await self._gated(component(Kind.TOOL, name), f"tool: {name!r}", lambda: call_next(context))
        except NotFoundError:
            self._count(outer, UNKNOWN_TOOL, started, failed=True)
            raise
        except Exception as exc:
            self._count(outer, name, started, failed=True)
            mapped = refusal(exc, name, ToolError)
            if mapped is None:
                raise
            raise mapped from None
        self._count(outer, name, started, failed=bool(result.is_error))
        return result

    def _count(self, outer: bool, tool: str, started: float, *, failed: bool) -> None:
        if outer and self._metrics is not None:
            self._metrics.tool_called(tool, time.perf_counter() - started, failed=failed)

    async def on_read_resource(
        self,
        context: MiddlewareContext[mt.ReadResourceRequestParams],
        call_next: CallNext[mt.ReadResourceRequestParams, ResourceResult],
    ) -> ResourceResult:
        uri = str(context.message.uri)
        try:
            return await self._gated(resource_for(uri), f"resource: {uri!r}", lambda: call_next(context))
        except Exception as exc:
            mapped = refusal(exc, uri, ResourceError)
            if mapped is None:
                raise
            raise mapped from None

    async def on_get_prompt(
        self,
        context: MiddlewareContext[mt.GetPromptRequestParams],
        call_next: CallNext[mt.GetPromptRequestParams, PromptResult],
    ) -> PromptResult:
        name = context.message.name
        server = context.fastmcp_context.fastmcp if context.fastmcp_context else None
        prompt = await server.get_prompt(name) if server is not None else None
        row = component(Kind.PROMPT, component_key(Kind.PROMPT, name, prompt.tags)) if prompt else None
        try:
            return await self._gated(row, f"prompt: {name!r}", lambda: call_next(context))
        except Exception as exc:
            mapped = refusal(exc, name, PromptError)
            if mapped is None:
                raise
            raise mapped from None

    # -- listings: a caller sees what it may call ------------------------------------------------

    async def _visible(
        self, list_next: Callable[[], Awaitable[Sequence[T]]], row_of: Callable[[T], Component | None]
    ) -> list[T]:
        """What the caller may call, of what ``list_next`` lists (with the caller bound while it runs)."""
        try:
            async with self._scope() as (principal, _outer):
                items = await list_next()
                return [i for i in items if (row := row_of(i)) is not None and principal.role in row.roles]
        except AccessDenied:
            return []

    async def on_list_tools(
        self, context: MiddlewareContext[mt.ListToolsRequest], call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]]
    ) -> Sequence[Tool]:
        return await self._visible(lambda: call_next(context), lambda t: component(Kind.TOOL, t.name))

    async def on_list_resources(
        self,
        context: MiddlewareContext[mt.ListResourcesRequest],
        call_next: CallNext[mt.ListResourcesRequest, Sequence[Resource]],
    ) -> Sequence[Resource]:
        return await self._visible(lambda: call_next(context), lambda r: component(Kind.RESOURCE, str(r.uri)))

    async def on_list_resource_templates(
        self,
        context: MiddlewareContext[mt.ListResourceTemplatesRequest],
        call_next: CallNext[mt.ListResourceTemplatesRequest, Sequence[ResourceTemplate]],
    ) -> Sequence[ResourceTemplate]:
        return await self._visible(lambda: call_next(context), lambda t: component(Kind.RESOURCE, t.uri_template))

    async def on_list_prompts(
        self,
        context: MiddlewareContext[mt.ListPromptsRequest],
        call_next: CallNext[mt.ListPromptsRequest, Sequence[Prompt]],
    ) -> Sequence[Prompt]:
        return await self._visible(
            lambda: call_next(context), lambda p: component(Kind.PROMPT, component_key(Kind.PROMPT, p.name, p.tags))
        )


class QuietRefusals(logging.Filter):
    """fastmcp logs every exception a tool raises with its traceback. A refusal (a HydraError, a
    validation error) is not a crash: log it as one INFO line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _origin(record.exc_info[1]) is not None:
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_QUIET = QuietRefusals()
_LOGGERS = ("fastmcp.server.server", "fastmcp.prompts.function_prompt", "fastmcp.resources.types")


def quiet_refusals() -> None:
    """Attach :class:`QuietRefusals` to fastmcp's loggers (once; called when a server is built)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
