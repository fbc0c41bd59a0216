"""Hydra's MCP server: tools, resources and prompts over stdio or streamable HTTP.

Every tool validates its arguments with pydantic, turns :class:`HydraError`s into ``ToolError``s
that say what was wrong and what is valid, and returns only masked text. Blocking work (Docker,
Chroma, SQLite) runs in worker threads; the event loop never blocks.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.exceptions import ValidationError as ArgumentsError
from fastmcp.server.auth.auth import AccessToken, TokenVerifier
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.types import CallToolRequestParams, ToolAnnotations
from pydantic import Field, ValidationError

from hydra_sandbox import __version__
from hydra_sandbox.access import OPERATOR, Caller
from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.errors import HydraError, shown
from hydra_sandbox.events import EVENT_TYPES
from hydra_sandbox.http_routes import register_http_routes
from hydra_sandbox.lifecycle import SessionRecord
from hydra_sandbox.manager import HOST_SESSION, SpawnFlags, SpawnPolicy, SpawnRequest
from hydra_sandbox.metrics import HydraMetrics, ToolMetricsMiddleware
from hydra_sandbox.profiles import render_prompt
from hydra_sandbox.services import Services, open_services
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import SearchFilters
from hydra_sandbox.yaml_models import describe_validation_error

P = ParamSpec("P")
R = TypeVar("R")

INSTRUCTIONS = """Hydra runs Codex agents in hardened sandboxes. Typical loop: list_agents to pick a
profile; spawn_agent(working_dir=ABSOLUTE_PATH, custom_prompt=TASK) returns a session_id at once;
wait_session(session_id) until it is no longer running; get_diff(session_id) to review;
apply_diff(session_id, confirm=true) to write the changes, or discard_diff(session_id).
search_context finds anything recorded before."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn Hydra and validation errors into ToolErrors a model can act on; never a traceback."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except HydraError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from None
        except ValidationError as exc:
            raise ToolError(describe_validation_error(exc, fn.__name__)) from None

    return wrapper


class _ArgumentErrors(Middleware):
    """fastmcp checks a tool's arguments against its signature before Hydra's code runs; say what was
    wrong in Hydra's words (one line per argument, bounded) instead of pydantic's raw report."""

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        try:
            return await call_next(context)
        except ArgumentsError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(describe_validation_error(exc.__cause__, context.message.name)) from None
            raise


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
        session_id = self._tokens.session_for(token)
        if session_id is None:
            return None
        return AccessToken(
            token=token,
            client_id=f"agent:{session_id}",
            scopes=["hydra"],
            claims={"kind": "agent", "session_id": session_id},
        )


def _caller() -> Caller:
    token = get_access_token()
    if token is None or token.claims.get("kind") != "agent":
        return OPERATOR
    return Caller(kind="agent", session_id=token.claims.get("session_id"))


def _services(ctx: Context) -> Services:
    return ctx.lifespan_context["services"]  # type: ignore[no-any-return]


def _event_dicts(events: list[Any]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


def _session_view(services: Services, record: SessionRecord) -> dict[str, Any]:
    view = record.public()
    checklist = services.manager.recorder.checklist(record.session_id)
    if checklist is not None:
        view["checklist"] = checklist.state().model_dump(mode="json")
    return view


def build_server(
    settings: HydraSettings,
    *,
    services_factory: Callable[[HydraSettings], contextlib.AbstractAsyncContextManager[Services]] | None = None,
    auth: TokenVerifier | None = None,
    serve_agents: bool = True,
    metrics: HydraMetrics | None = None,
) -> FastMCP:
    """The FastMCP server. ``services_factory`` lets tests swap the sandbox and store; ``metrics``
    lets them read the server's registry (a new one is made otherwise). With ``serve_agents`` the
    server also starts the endpoint agents delegate through, when the services have one (see
    :mod:`hydra_sandbox.agent_endpoint`); that endpoint's server shares these metrics."""
    factory = services_factory or open_services
    server_metrics = metrics if metrics is not None else HydraMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        async with factory(settings) as services:
            if serve_agents:
                server_metrics.attach(services)
            endpoint = services.agent_endpoint if serve_agents else None
            try:
                if endpoint is not None:
                    for_agents = build_server(
                        settings,
                        services_factory=lambda _s: contextlib.nullcontext(services),
                        auth=AgentTokenVerifier(endpoint.tokens),
                        serve_agents=False,
                        metrics=server_metrics,
                    )
                    await endpoint.start(for_agents.http_app(path="/mcp"))
                yield {"services": services}
            finally:
                if endpoint is not None:
                    await endpoint.stop()
                if serve_agents:
                    server_metrics.detach()

    mcp = FastMCP(
        name="hydra",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        auth=auth,
        mask_error_details=True,
        middleware=[ToolMetricsMiddleware(server_metrics), _ArgumentErrors()],
    )
    _register_tools(mcp)
    _register_resources(mcp)
    _register_prompts(mcp, settings)
    register_http_routes(mcp, server_metrics, verifier=auth, metrics_public=settings.metrics_public)
    return mcp


def _register_tools(mcp: FastMCP) -> None:
    @mcp.tool(
        annotations=ToolAnnotations(
            title="Spawn a sandboxed Codex agent",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        )
    )
    @_tool_errors
    async def spawn_agent(
        working_dir: Annotated[
            str,
            Field(
                description="Absolute path of the directory the agent works on. An agent inside a Hydra "
                "sandbox passes /workspace: its child works on the same directory."
            ),
        ],
        ctx: Context,
        profile_id: Annotated[str, Field(description="Profile id from list_agents.")] = "default",
        custom_prompt: Annotated[str | None, Field(description="The task, in plain words.")] = None,
        goalset: Annotated[list[str] | None, Field(description="Extra goals appended to the profile's.")] = None,
        inputs: Annotated[dict[str, Any] | None, Field(description="Named values given to the agent.")] = None,
        flags: Annotated[
            SpawnFlags | None, Field(description="Per-run options: model, timeout_s, max_output_bytes.")
        ] = None,
        policy: Annotated[
            SpawnPolicy | None,
            Field(
                description="base policy name and/or narrowing of directory, network, resources, "
                "delegation. Can only narrow the profile's (or parent's) policy."
            ),
        ] = None,
        parent_session_id: Annotated[str | None, Field(description="Spawn as a child of this session.")] = None,
        relationship: Annotated[str | None, Field(description="e.g. 'review', 'subtask'.")] = None,
        idempotency_key: Annotated[
            str | None, Field(description="Same key again returns the existing session.")
        ] = None,
    ) -> dict[str, Any]:
        """Start a Codex agent in a hardened sandbox on a copy-on-write view of working_dir.

        Returns at once with the session_id, its status and first events; the host directory is
        not changed until apply_diff(confirm=true). Use wait_session to follow it."""
        services = _services(ctx)
        request = SpawnRequest(
            profile_id=profile_id,
            custom_prompt=custom_prompt,
            goalset=goalset,
            inputs=inputs,
            working_dir=working_dir,
            flags=flags,
            policy=policy,
            parent_session_id=parent_session_id,
            relationship=relationship,
            idempotency_key=idempotency_key,
        )
        result = await services.manager.spawn(request, _caller())
        return {
            "session_id": result.session["session_id"],
            "status": result.session["status"],
            "reused": result.reused,
            "session": result.session,
            "events": _event_dicts(result.events),
        }

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def list_agents(ctx: Context) -> dict[str, Any]:
        """The agent profiles: id, title, description, goalset, checklist and default policy."""
        good, bad = _services(ctx).profiles.load_all()
        return {
            "profiles": [
                {
                    "id": p.id,
                    "title": p.title,
                    "description": p.description,
                    "goalset": p.goalset,
                    "policy": p.policy,
                    "read_only": p.read_only,
                    "checklist": [{"id": i.id, "description": i.description} for i in p.checklist_template],
                }
                for p in good.values()
            ],
            "broken": {k: str(v) for k, v in bad.items()},
        }

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def list_sessions(
        ctx: Context,
        status: Annotated[
            str | None,
            Field(
                description="queued, starting, running, awaiting_approval, completed, failed, cancelled or timed_out"
            ),
        ] = None,
        profile_id: str | None = None,
        parent_session_id: str | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Sessions, newest first, filtered by status, profile or parent."""
        services = _services(ctx)
        records = services.manager.list_sessions(status, profile_id, parent_session_id, limit, _caller())
        return {"sessions": [r.public() for r in records], "queue_length": services.manager.queue_length()}

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def wait_session(
        session_id: str,
        ctx: Context,
        timeout_s: Annotated[float, Field(ge=0, le=3600)] = 60,
    ) -> dict[str, Any]:
        """Wait until the session leaves queued/starting/running, or timeout_s passes.

        Sends progress notifications (events so far, checklist state) while waiting."""
        services = _services(ctx)

        async def progress(record: SessionRecord, count: int) -> None:
            checklist = services.manager.recorder.checklist(record.session_id)
            done = checklist.state().done_count if checklist else 0
            total = len(checklist.state().items) if checklist else 0
            await ctx.report_progress(count, None, f"{record.status}: {count} events, checklist {done}/{total}")

        record = await services.manager.wait(session_id, timeout_s, progress, _caller())
        return {
            "session_id": session_id,
            "status": record.status.value,
            "finished": not record.active,
            "session": _session_view(services, record),
            "last_events": _event_dicts(services.manager.events(session_id)[-10:]),
        }

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def tail_logs(
        session_id: str,
        ctx: Context,
        since: Annotated[int, Field(ge=0, description="First event counter to return.")] = 0,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Masked events of a session from counter `since` on, for hosts that poll."""
        services = _services(ctx)
        services.manager.get(session_id, _caller())
        events = services.manager.events(session_id, since=since, limit=limit)
        next_since = events[-1].counter + 1 if events else since
        return {"session_id": session_id, "events": _event_dicts(events), "next_since": next_since}

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def summarize_session(session_id: str, ctx: Context) -> dict[str, Any]:
        """Structured summary, narrative and checklist status of a session."""
        services = _services(ctx)
        record = services.manager.get(session_id, _caller())
        summaries = [e for e in services.manager.events(session_id) if e.type == "summary"]
        latest = summaries[-1] if summaries else None
        return {
            "session": _session_view(services, record),
            "narrative": latest.text if latest else "no summary yet",
            "summary": latest.data if latest else {},
        }

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        )
    )
    @_tool_errors
    async def terminate_session(session_id: str, reason: str, ctx: Context) -> dict[str, Any]:
        """Stop a queued or running session (SIGTERM, grace period, then kill)."""
        record = await _services(ctx).manager.terminate(session_id, reason, _caller())
        return {"session_id": session_id, "status": record.status.value}

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        )
    )
    @_tool_errors
    async def resume_session(session_id: str, prompt: str, ctx: Context) -> dict[str, Any]:
        """Continue a finished session's Codex thread with a new prompt, in a new run."""
        record = await _services(ctx).manager.resume(session_id, prompt, _caller())
        return {"session_id": session_id, "status": record.status.value}

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
        )
    )
    @_tool_errors
    async def log_context(
        note: Annotated[str, Field(min_length=1, max_length=100_000)],
        ctx: Context,
        session_id: str | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Record a host's own note (a decision, a hint for later) into the searchable record."""
        event = await _services(ctx).manager.log_context(note, session_id, tags, _caller())
        return {"id": event.id, "session_id": event.session_id}

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def search_context(
        query: Annotated[str, Field(min_length=1, max_length=10_000)],
        ctx: Context,
        session_id: str | None = None,
        profile_id: str | None = None,
        event_type: Annotated[str | None, Field(description=f"One of: {', '.join(EVENT_TYPES)}")] = None,
        since: Annotated[datetime | None, Field(description="ISO 8601 time, e.g. 2026-11-18T00:00:00Z")] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
    ) -> dict[str, Any]:
        """Semantic search over everything recorded (commands, messages, diffs, tests, notes, summaries)."""
        import asyncio

        services = _services(ctx)
        if event_type is not None and event_type not in EVENT_TYPES:
            raise HydraError(
                f"event_type: {shown(event_type)} is not an event type", hint="valid: " + ", ".join(EVENT_TYPES)
            )
        if session_id is not None and session_id != HOST_SESSION:
            services.manager.get(session_id, _caller())
        filters = SearchFilters(session_id=session_id, profile_id=profile_id, event_type=event_type, since=since)
        hits = await asyncio.to_thread(services.store.semantic_search, query, filters, limit)
        caller = _caller()
        if caller.kind == "agent":
            visible = {r.session_id for r in services.manager.list_sessions(limit=100_000, caller=caller)}
            hits = [h for h in hits if h.session_id in visible]
        return {"hits": [h.model_dump(mode="json") for h in hits], "index_lag": services.indexer.lag()}

    @mcp.tool(annotations=READ_ONLY)
    @_tool_errors
    async def get_diff(session_id: str, ctx: Context) -> dict[str, Any]:
        """Preview of a finished session's changes: unified diff, per-file status, stats, refused writes."""
        preview = await _services(ctx).manager.diff(session_id, _caller())
        return preview.model_dump(mode="json")  # type: ignore[no-any-return]

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
        )
    )
    @_tool_errors
    async def apply_diff(
        session_id: str,
        ctx: Context,
        confirm: Annotated[bool, Field(description="Must be true to write anything to the host.")] = False,
    ) -> dict[str, Any]:
        """Write a session's allowed changes to its working_dir. Does nothing unless confirm is true.

        Refuses when target files changed on the host since the session started, or when a profile
        rule (e.g. a passing code review) is not met."""
        result = await _services(ctx).manager.apply(session_id, confirm, _caller())
        return result.model_dump(mode="json")  # type: ignore[no-any-return]

    @mcp.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        )
    )
    @_tool_errors
    async def discard_diff(session_id: str, ctx: Context) -> dict[str, Any]:
        """Throw a finished session's changes away; the host directory is not touched."""
        record = await _services(ctx).manager.discard(session_id, _caller())
        return {
            "session_id": session_id,
            "status": record.status.value,
            "diff_state": record.diff_state.value,
        }


def _register_resources(mcp: FastMCP) -> None:
    @mcp.resource("hydra://profiles", mime_type="application/json")
    async def profiles_resource(ctx: Context) -> str:
        """Every agent profile."""
        good, _bad = _services(ctx).profiles.load_all()
        return json.dumps([p.model_dump(mode="json") for p in good.values()], indent=2)

    @mcp.resource("hydra://policies", mime_type="application/json")
    async def policies_resource(ctx: Context) -> str:
        """Every directory, network and resource policy."""
        good, _bad = _services(ctx).policies.load_all()
        return json.dumps([p.model_dump(mode="json") for p in good.values()], indent=2)

    @mcp.resource("hydra://sessions/{session_id}", mime_type="application/json")
    async def session_resource(session_id: str, ctx: Context) -> str:
        """A session's metadata and timeline."""
        services = _services(ctx)
        try:
            record = services.manager.get(session_id, _caller())
        except HydraError as exc:
            raise ToolError(str(exc)) from None
        return json.dumps(
            {
                "session": _session_view(services, record),
                "timeline": _event_dicts(services.manager.events(session_id)),
            },
            indent=2,
        )

    @mcp.resource("hydra://checklists/{session_id}", mime_type="application/json")
    async def checklist_resource(session_id: str, ctx: Context) -> str:
        """A session's checklist: items, done or not, and the event that proved each."""
        services = _services(ctx)
        try:
            services.manager.get(session_id, _caller())
        except HydraError as exc:
            raise ToolError(str(exc)) from None
        checklist = services.manager.recorder.checklist(session_id)
        return json.dumps(checklist.state().model_dump(mode="json") if checklist else {}, indent=2)

    @mcp.resource("hydra://status", mime_type="application/json")
    async def status_resource(ctx: Context) -> str:
        """Health: Docker, images, Codex version, store, queue, running sessions, disk."""
        import asyncio

        from hydra_sandbox.maintenance import disk_usage

        services = _services(ctx)
        try:
            store_count: int | str = await asyncio.to_thread(services.store.count)
        except Exception as exc:  # the store's health is what this resource reports
            store_count = f"unavailable: {type(exc).__name__}"
        return json.dumps(
            {
                "version": __version__,
                "runtime": await services.sandbox.status(),
                "store": {"documents": store_count, "index_lag": services.indexer.lag()},
                "journal": {"events": services.journal.count()},
                "disk": (await asyncio.to_thread(disk_usage, services.settings)).model_dump(mode="json"),
                "queue_length": services.manager.queue_length(),
                "running_sessions": services.manager.running,
            },
            indent=2,
            default=str,
        )


def _register_prompts(mcp: FastMCP, settings: HydraSettings) -> None:
    from hydra_sandbox.profiles import ProfileCatalog

    good, _bad = ProfileCatalog(settings.profile_dirs).load_all()
    for profile in good.values():

        def make(profile_id: str) -> Callable[..., str]:
            def prompt(task: str, extra_goals: str = "") -> str:
                catalog = ProfileCatalog(settings.profile_dirs)
                from hydra_sandbox.profiles import ProfileOverrides, apply_overrides

                goals = [g.strip() for g in extra_goals.split(";") if g.strip()]
                resolved = apply_overrides(catalog.get(profile_id), ProfileOverrides(goalset=goals))
                return render_prompt(resolved, task)

            return prompt

        mcp.prompt(
            make(profile.id),
            name=profile.id,
            description=f"{profile.title}: {profile.description} Arguments: task; extra_goals (semicolon-separated).",
        )

    @mcp.prompt(name="additional_agent")
    def additional_agent(task: str, needs_network: str = "no", modifies_files: str = "yes") -> str:
        """Helps decide which profile and policy to give a new agent for a task."""
        catalog = ProfileCatalog(settings.profile_dirs)
        profiles, _ = catalog.load_all()
        lines = [f"- {p.id}: {p.title}. {p.description} (default policy: {p.policy})" for p in profiles.values()]
        return (
            "You are choosing an agent for this task:\n"
            f"{task}\n\nAvailable profiles:\n" + "\n".join(lines) + "\n\n"
            f"The task needs network beyond the model: {needs_network}. It modifies files: {modifies_files}.\n"
            "Rules: prefer the narrowest policy that can do the job; a review or analysis uses "
            "code_reviewer with the read_only policy; use network mode 'none' unless the model endpoint "
            "is needed, and 'allowlist' only with named domains; restrict directory.allow to the paths the "
            "task touches. Answer with the spawn_agent arguments (profile_id, policy, flags) and one "
            "sentence of justification."
        )


def http_app(settings: HydraSettings, token: str, **build: Any) -> Any:
    """The streamable-HTTP ASGI app: bearer token, Host/Origin checks (loopback plus
    ``settings.http_allowed_hosts``), MCP at ``/mcp``, ``/healthz`` and ``/metrics``."""
    server = build_server(settings, auth=HydraTokenVerifier(token), **build)
    return server.http_app(path="/mcp", host_origin_protection=True, allowed_hosts=settings.http_allowed_hosts or None)


def run(settings: HydraSettings, transport: Literal["stdio", "http"], token: str | None = None) -> None:
    """Run the server until interrupted. HTTP binds settings.http_host and requires the bearer token
    (for /metrics too, unless settings.metrics_public); /healthz is open."""
    if transport == "stdio":
        build_server(settings).run(transport="stdio", show_banner=False)
        return
    import uvicorn

    assert token, "http transport needs a token"
    app = http_app(settings, token)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")
