"""The real Sandbox: a hardened Docker container running the real Codex CLI on a copy-on-write,
policy-filtered view of the working directory, with controlled egress.

One run: stage (or re-mount) the session's workspace layer → serve its egress relay → create the agent
container with a per-session ``CODEX_HOME`` volume → supervise it (timeout, cancellation, OOM, output
limit) while its output is masked, split into lines and parsed into events → remove the container.
Workspace state is kept on disk (``sessions/<id>/workspace.json``) so diff, apply and re-attach work
after a server restart.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from pathlib import Path

from hydra_sandbox import __version__
from hydra_sandbox.agent_endpoint import MCP_PORT, TOKEN_ENV, AgentEndpoint
from hydra_sandbox.applying import ApplyResult, apply_changes
from hydra_sandbox.codex import build_exec, build_resume
from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.diffing import DiffPreview, compute_diff
from hydra_sandbox.errors import RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import LineMasker, SecretMasker
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox import ContainerObserver, EventSink, RunRequest, RunResult
from hydra_sandbox.sandbox.backends.docker.egress import ActiveEgress, egress, plan_egress
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import (
    LABEL_HOME,
    LABEL_PARENT,
    LABEL_PROFILE,
    LABEL_ROLE,
    LABEL_SESSION,
    LABEL_VERSION,
    ContainerSpec,
    LogStream,
    Mount,
    home_label,
)
from hydra_sandbox.sandbox.supervisor import FailureCause, RunOutcome, supervise
from hydra_sandbox.sandbox.workspace import StagedWorkspace, discard, mount, release, stage
from hydra_sandbox.settings import HydraSettings

log = logging.getLogger(__name__)

CODEX_HOME = "/codex-home"
AGENT_ENV = {
    "CODEX_HOME": CODEX_HOME,
    "HOME": "/home/agent",
    # keep build caches out of the session's diff
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTEST_ADDOPTS": "-p no:cacheprovider",
}
STDERR_SEQ_BASE = 1_000_000_000
MAX_LINE = 1_000_000
"""stderr events are numbered apart from stdout ones, so a replay numbers both the same way."""


class OutputPipeline:
    """Bytes from the container → lines → events (each with ``seq``) → sink, as soon as a line is complete.

    stdout is Codex's JSONL: each line is parsed first and every string the parser emits is masked (a
    JSON line holds whole secrets, escaped; masking the decoded values also catches a known secret that
    contains a quote). stderr, and stdout lines that are not JSON objects, are masked line by line,
    holding only multi-line private key blocks (a key printed raw spans lines; no single line shows it
    is one). Lines
    longer than :data:`MAX_LINE` are cut so a process that never prints a newline cannot grow memory.
    """

    def __init__(self, masker: SecretMasker, parser: CodexEventParser, sink: EventSink) -> None:
        self._decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        self._partial = {"stdout": "", "stderr": ""}
        self._seq = {"stdout": 0, "stderr": STDERR_SEQ_BASE}
        self._stderr = LineMasker(masker)
        self._stdout_text = LineMasker(masker)
        self._parser = parser
        self._sink = sink

    async def feed(self, stream: LogStream, chunk: bytes) -> None:
        await self._lines(stream, self._decoders[stream].decode(chunk))

    async def close(self) -> None:
        for stream in ("stdout", "stderr"):
            await self._lines(stream, self._decoders[stream].decode(b"", final=True), final=True)  # type: ignore[arg-type]
        for line in self._stdout_text.flush():
            await self._parse(line)
        for line in self._stderr.flush():
            await self._emit_stderr(line)
        for draft in self._parser.finish():
            await self._emit("stdout", draft)

    async def _lines(self, stream: LogStream, text: str, final: bool = False) -> None:
        *lines, rest = (self._partial[stream] + text).split("\n")
        if final and rest:
            lines.append(rest)
            rest = ""
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE] + " [hydra: line cut]")
            rest = rest[MAX_LINE:]
        self._partial[stream] = rest
        for line in lines:
            if not line.strip():
                continue
            if stream == "stdout":
                await self._stdout_line(line)
            else:
                for masked in self._stderr.feed_line(line):
                    await self._emit_stderr(masked)

    async def _stdout_line(self, line: str) -> None:
        if self._stdout_text.holding or not line.lstrip().startswith("{"):
            for masked in self._stdout_text.feed_line(line):
                await self._parse(masked)
        else:
            await self._parse(line)

    async def _parse(self, line: str) -> None:
        for draft in self._parser.feed_line(line):
            await self._emit("stdout", draft)

    async def _emit_stderr(self, line: str) -> None:
        await self._emit(
            "stderr", EventDraft(type="message", text=line[:4000], tags=["stderr"], data={"stream": "stderr"})
        )

    async def _emit(self, stream: LogStream, draft: EventDraft) -> None:
        seq = self._seq[stream]
        self._seq[stream] += 1
        await self._sink(draft.model_copy(update={"data": {**draft.data, "seq": seq, "stream": stream}}))


class DockerSandbox:
    def __init__(
        self,
        settings: HydraSettings,
        masker: SecretMasker,
        runtime: ContainerRuntime | None = None,
        agent_endpoint: AgentEndpoint | None = None,
    ) -> None:
        self.settings = settings
        self.masker = masker
        self.runtime: ContainerRuntime = runtime or DockerRuntime()
        self.agent_endpoint = agent_endpoint
        self._workspaces: dict[str, StagedWorkspace] = {}
        self._observers: list[ContainerObserver] = []

    def add_observer(self, observer: ContainerObserver) -> None:
        """Report container starts and failed runs to ``observer`` from now on."""
        self._observers.append(observer)

    def _started(self) -> None:
        for observer in self._observers:
            observer.container_started()

    def _failed(self, cause: FailureCause | None) -> None:
        if cause is None:
            return
        for observer in self._observers:
            observer.container_failed(cause)

    # -- workspace state ---------------------------------------------------------------------

    def _state_path(self, session_id: str) -> Path:
        return self.settings.sessions_dir / session_id / "workspace.json"

    def workspace(self, session_id: str) -> StagedWorkspace:
        ws = self._workspaces.get(session_id)
        if ws is None:
            path = self._state_path(session_id)
            if not path.exists():
                raise WorkspaceError(
                    f"session {session_id} has no workspace layer", hint="it never started, or its layer was discarded"
                )
            ws = StagedWorkspace.model_validate_json(path.read_text())
            self._workspaces[session_id] = ws
        return ws

    def _labels(self, request: RunRequest, role: str) -> dict[str, str]:
        return {
            LABEL_HOME: home_label(self.settings.data_home),
            LABEL_SESSION: request.session_id,
            LABEL_PROFILE: request.profile_id,
            LABEL_PARENT: request.parent_session_id or "",
            LABEL_VERSION: __version__,
            LABEL_ROLE: role,
        }

    async def _stage(self, request: RunRequest) -> StagedWorkspace:
        if self._state_path(request.session_id).exists():
            ws = self.workspace(request.session_id)
            await mount(ws, self.runtime)  # a resumed run: the same layer in a fresh volume
            return ws
        lowers = [self.workspace(s).upper for s in request.layer_sessions]
        ws = await stage(
            request.session_id,
            request.working_dir,
            request.policy,
            self.settings.sessions_dir,
            self.runtime,
            self._labels(request, "workspace"),
            extra_lowers=lowers,
            agent_uid=self.settings.agent_uid,
        )
        self._state_path(request.session_id).write_text(ws.model_dump_json())
        self._workspaces[request.session_id] = ws
        return ws

    # -- running -----------------------------------------------------------------------------

    def _mcp_target(self, request: RunRequest) -> Path | None:
        """The agent MCP endpoint's socket when this run may delegate and the endpoint is up."""
        endpoint = self.agent_endpoint
        if endpoint is None or not endpoint.serving or request.policy.delegation.max_depth == 0:
            return None
        return endpoint.socket_path

    def _issue_token(self, request: RunRequest) -> str:
        assert self.agent_endpoint is not None
        token = self.agent_endpoint.tokens.issue(request.session_id)
        self.masker.add_secret(token)
        return token

    def _revoke_tokens(self, session_id: str) -> None:
        if self.agent_endpoint is not None:
            self.agent_endpoint.tokens.revoke(session_id)

    async def _spec(
        self, request: RunRequest, ws: StagedWorkspace, active: ActiveEgress, mcp_token: str | None
    ) -> ContainerSpec:
        codex_home = f"hydra-codex-{request.session_id}"
        existing = {v.name for v in await self.runtime.list_volumes({LABEL_SESSION: request.session_id})}
        if codex_home not in existing:
            await self.runtime.create_volume(codex_home, self._labels(request, "codex-home"))
        api_key_env = "OPENAI_API_KEY" if self.settings.model_api_key else None
        base_url = active.model_base_url
        mcp_servers = None
        if mcp_token is not None:
            url = f"http://127.0.0.1:{MCP_PORT}/mcp"
            mcp_servers = {"hydra": {"url": url, "bearer_token_env_var": TOKEN_ENV}}
        if request.resume_thread_id:
            invocation = build_resume(
                request.resume_thread_id,
                request.prompt,
                model=request.model,
                base_url=base_url,
                api_key_env=api_key_env,
                codex_home=CODEX_HOME,
                mcp_servers=mcp_servers,
            )
        else:
            invocation = build_exec(
                request.prompt,
                model=request.model,
                base_url=base_url,
                api_key_env=api_key_env,
                codex_home=CODEX_HOME,
                mcp_servers=mcp_servers,
            )
        env = {**invocation.env, **active.env, **AGENT_ENV}
        if mcp_token is not None:
            env[TOKEN_ENV] = mcp_token
        if self.settings.model_api_key:
            env["OPENAI_API_KEY"] = self.settings.model_api_key.get_secret_value()
        return ContainerSpec(
            image=self.settings.agent_image,
            argv=[*active.entrypoint, *invocation.argv],
            env=env,
            user=f"{ws.agent_uid}:{ws.agent_gid}",
            labels=self._labels(request, "agent"),
            mounts=[
                Mount(type="volume", source=ws.volume_name, target="/workspace"),
                Mount(type="volume", source=codex_home, target=CODEX_HOME),
                *active.mounts,
            ],
            network_mode=active.network_mode,
            limits=request.policy.resources,
            name=f"hydra-{request.session_id}-{request.run_index}",
        )

    async def _supervise(
        self, request: RunRequest, container_id: str, pipeline: OutputPipeline, cancel: asyncio.Event
    ) -> RunOutcome:
        outcome = await supervise(
            self.runtime,
            container_id,
            timeout_s=request.policy.resources.timeout_s,
            max_output_bytes=request.policy.resources.max_output_bytes,
            on_output=pipeline.feed,
            cancel=cancel,
        )
        await pipeline.close()
        return outcome

    async def run(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        if not await self.runtime.image_exists(self.settings.agent_image):
            raise RuntimeUnavailableError(
                f"agent image {self.settings.agent_image} is missing", hint="run `hydra images build`"
            )
        for value in request.secrets:
            self.masker.add_secret(value)
        ws = await self._stage(request)
        parser = CodexEventParser(request.test_runners, self.masker.mask)
        pipeline = OutputPipeline(self.masker, parser, sink)
        plan = plan_egress(request.policy.network, self.settings.model_base_url, request.session_id)
        mcp_target = self._mcp_target(request)
        container_id: str | None = None
        detached = False
        try:
            async with egress(plan, mcp_target) as active:
                token = self._issue_token(request) if mcp_target is not None else None
                container_id = await self.runtime.create(await self._spec(request, ws, active, token))
                await self.runtime.start(container_id)
                self._started()
                outcome = await self._supervise(request, container_id, pipeline, cancel)
        except asyncio.CancelledError:
            detached = container_id is not None  # server shutdown: the agent keeps running for re-attach
            raise
        except Exception:
            self._failed("error")  # counted, then the manager fails the session with the reason
            raise
        finally:
            if not detached:
                await asyncio.shield(self._teardown(container_id, ws))
        return await self._result(request, outcome, parser)

    async def _teardown(self, container_id: str | None, ws: StagedWorkspace) -> None:
        self._revoke_tokens(ws.session_id)
        if container_id is not None:
            with contextlib.suppress(RuntimeUnavailableError):
                await self.runtime.remove(container_id)
        with contextlib.suppress(RuntimeUnavailableError):
            await release(ws, self.runtime)

    async def _result(self, request: RunRequest, outcome: RunOutcome, parser: CodexEventParser) -> RunResult:
        self._failed(outcome.failure)
        has_changes = False
        with contextlib.suppress(WorkspaceError):
            has_changes = bool((await self.diff(request.session_id, request.policy)).files)
        return RunResult(
            status=outcome.status,
            reason=outcome.reason,
            exit_code=outcome.exit_code,
            thread_id=parser.thread_id,
            has_changes=has_changes,
            output_truncated=outcome.truncated,
        )

    async def follow(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event, skip: int) -> RunResult:
        """Re-attach after a restart: replay the container's log (the recorder drops what it has) and
        serve its egress socket again, at the same path."""
        containers = await self.runtime.list_containers({LABEL_SESSION: request.session_id, LABEL_ROLE: "agent"})
        running = [c for c in containers if c.status == "running"]
        if not running:
            return RunResult(status="failed", reason="its container vanished while the server was down")
        container_id = running[0].id
        ws = self.workspace(request.session_id)
        parser = CodexEventParser(request.test_runners, self.masker.mask)
        pipeline = OutputPipeline(self.masker, parser, sink)
        plan = plan_egress(request.policy.network, self.settings.model_base_url, request.session_id)
        detached = False
        try:
            async with egress(plan, self._mcp_target(request)):
                outcome = await self._supervise(request, container_id, pipeline, cancel)
        except asyncio.CancelledError:
            detached = True
            raise
        except Exception:
            self._failed("error")
            raise
        finally:
            if not detached:
                await asyncio.shield(self._teardown(container_id, ws))
        return await self._result(request, outcome, parser)

    # -- reviewing ---------------------------------------------------------------------------

    async def diff(self, session_id: str, policy: Policy) -> DiffPreview:
        ws = self.workspace(session_id)
        return await asyncio.to_thread(compute_diff, ws, policy, mask=self.masker.mask)

    async def apply(self, session_id: str, policy: Policy, *, confirm: bool) -> ApplyResult:
        ws = self.workspace(session_id)
        return await asyncio.to_thread(apply_changes, ws, policy, confirm=confirm)

    async def discard(self, session_id: str) -> None:
        ws = self.workspace(session_id)
        await discard(ws, self.runtime)
        self._workspaces.pop(session_id, None)
        with contextlib.suppress(RuntimeUnavailableError):
            await self.runtime.remove_volume(f"hydra-codex-{session_id}")

    async def live_sessions(self) -> set[str]:
        try:
            containers = await self.runtime.list_containers({LABEL_ROLE: "agent"})
        except RuntimeUnavailableError:
            return set()
        return {c.labels[LABEL_SESSION] for c in containers if c.status == "running" and LABEL_SESSION in c.labels}

    async def status(self) -> dict[str, object]:
        try:
            present = await self.runtime.image_exists(self.settings.agent_image)
        except RuntimeUnavailableError as exc:
            return {"docker": f"unavailable: {exc}", "agent_image": self.settings.agent_image}
        return {
            "docker": "ok",
            "agent_image": self.settings.agent_image,
            "agent_image_present": present,
            "codex_version": self.settings.codex_version,
        }

    async def close(self) -> None:
        return None
