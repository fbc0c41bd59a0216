"""The :class:`~hydra_sandbox.sandbox.protocol.Sandbox`, written once for every backend.

One run: stage (or find) the session's workspace layer → serve its egress → bring the layer into a
fresh agent container with a per-session ``CODEX_HOME`` volume → supervise it (timeout, cancellation,
OOM, output limit) while its output is masked, split into lines and parsed into events → remove the
container and bring the change set home. A re-attach after a restart (:meth:`follow`) takes the same
path from "serve its egress" on, with the container it found instead of a new one. A cancelled run
(server shutdown) detaches: the container keeps running, its workspace and egress stay in place, and
the next server follows it.

What differs between backends is in :class:`Backend`: the container runtime, how the workspace gets
into the container and back (:class:`~hydra_sandbox.sandbox.workspace.WorkspaceTransport`), and where
egress is enforced (:class:`~hydra_sandbox.sandbox.egress.EgressPlacement`). Workspace state is kept on
disk (``sessions/<id>/workspace.json``) so diff, apply and re-attach work after a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from hydra_sandbox.agent_endpoint import AgentEndpoint
from hydra_sandbox.applying import ApplyResult, apply_changes
from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.diffing import DiffPreview, compute_diff
from hydra_sandbox.errors import ConfigError, RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.model_credentials import describe_model_key, find_model_key
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox import quota
from hydra_sandbox.sandbox.agent import AgentContainer, agent_spec, codex_home_volume, session_labels
from hydra_sandbox.sandbox.budget import ModelBudget
from hydra_sandbox.sandbox.codex_version import CodexVersionFinder
from hydra_sandbox.sandbox.egress import ActiveEgress, EgressPlacement, GatewaySecrets, plan_egress
from hydra_sandbox.sandbox.pipeline import OutputPipeline
from hydra_sandbox.sandbox.protocol import ContainerObserver, EventSink, PlacementListener, RunRequest, RunResult
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, Mount, home_label
from hydra_sandbox.sandbox.supervisor import FailureCause, RunOutcome, supervise
from hydra_sandbox.sandbox.workspace import (
    ContainerWorkspace,
    LayerStore,
    StagedWorkspace,
    WorkspaceTransport,
    prepare_layer,
    remove_layer,
)
from hydra_sandbox.settings import HydraSettings

log = logging.getLogger(__name__)

LOCAL_HOST = "local"
"""The ``host`` of sessions whose engine is the one Hydra finds by default (``DOCKER_HOST`` or the local socket)."""

NO_DELEGATION = (
    "delegation is off for this run: its policy allows children, but the agent runs on an engine whose "
    "gateway cannot reach Hydra's agent MCP endpoint (a socket on Hydra's machine); set HYDRA_AGENT_MCP=false "
    "or use a policy with delegation.max_depth: 0 to say so up front"
)


@dataclass(frozen=True)
class Backend:
    """What a backend contributes; everything else about a run is the orchestrator's. ``host`` is
    what sessions run here show as their ``host`` (an engine's URL without credentials)."""

    name: str
    runtime: ContainerRuntime
    workspace: WorkspaceTransport
    egress: EgressPlacement
    host: str = LOCAL_HOST


@dataclass
class _Run:
    """One run (or re-attach) in progress."""

    request: RunRequest
    ws: StagedWorkspace
    parser: CodexEventParser
    pipeline: OutputPipeline
    container_id: str | None = None
    taken: bool = False
    """Whether the change set was already brought out of the container (:class:`ContainerWorkspace`)."""
    stopped: bool = False
    """Whether the supervisor stopped the agent (timeout, cancel, output limit): a runtime whose stop
    removes the container (a pod's delete) leaves no change set to read back, and that is not an error."""
    lost: str | None = None
    """Why the change set of a stopped run could not be read back, for its result's reason."""


class SandboxOrchestrator:
    def __init__(
        self,
        settings: HydraSettings,
        masker: SecretMasker,
        backend: Backend,
        agent_endpoint: AgentEndpoint | None = None,
        *,
        layers: LayerStore | None = None,
        model_tokens: dict[str, int] | None = None,
    ) -> None:
        """``layers`` (the staged workspaces) and ``model_tokens`` (model tokens used per session, as the
        gateways reported, against ``max_model_tokens``) are shared by the orchestrators of several
        engines: the layers are on this machine whichever engine runs the agent, and a session resumed
        on another engine must not start its budget again."""
        self.settings = settings
        self.masker = masker
        self.backend = backend
        self.runtime = backend.runtime
        self.agent_endpoint = agent_endpoint
        self.layers = layers if layers is not None else LayerStore(settings.sessions_dir)
        self._home = home_label(settings.data_home)
        self._codex = CodexVersionFinder(self.runtime, home_label=self._home)
        self._observers: list[ContainerObserver] = []
        self._placement_listeners: list[PlacementListener] = []
        self.model_tokens = model_tokens if model_tokens is not None else {}

    def add_observer(self, observer: ContainerObserver) -> None:
        """Report container starts and failed runs to ``observer`` from now on."""
        self._observers.append(observer)

    def add_placement_listener(self, listener: PlacementListener) -> None:
        """Tell ``listener`` this backend's ``host`` for each session whose agent starts or is re-attached here."""
        self._placement_listeners.append(listener)

    async def unanswered_hosts(self) -> set[str]:
        """None: with one engine, one that does not answer fails its sessions at a restart, as before."""
        return set()

    def _placed(self, session_id: str) -> None:
        for listener in self._placement_listeners:
            listener(session_id, self.backend.host)

    def _started(self) -> None:
        for observer in self._observers:
            observer.container_started()

    def _failed(self, cause: FailureCause | None) -> None:
        if cause is None:
            return
        for observer in self._observers:
            observer.container_failed(cause)

    def workspace(self, session_id: str) -> StagedWorkspace:
        """The session's staged workspace (its change set); a :class:`WorkspaceError` when it has none."""
        return self.layers.get(session_id)

    async def _layer(self, session_id: str) -> StagedWorkspace:
        """:meth:`workspace`, with its quota filesystem mounted (it is unmounted when the session ends)."""
        ws = self.workspace(session_id)
        if ws.quota_mb:
            await asyncio.to_thread(quota.ensure_mounted, ws.session_dir)
        return ws

    # -- running -----------------------------------------------------------------------------

    async def run(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event) -> RunResult:
        if not await self.runtime.image_exists(self.settings.agent_image):
            raise RuntimeUnavailableError(
                f"agent image {self.settings.agent_image} is missing", hint="run `hydra images build`"
            )
        self._check_model_key(request)
        return await self._drive(request, await self._stage(request), sink, cancel, container_id=None)

    def _check_model_key(self, request: RunRequest) -> None:
        """Refuse a run bound for the default model API with no key (e.g. only a ChatGPT sign-in, which
        Hydra does not use) before anything starts, instead of as an agent failing on a 401."""
        if request.policy.network.mode == "none" or self.settings.model_base_url is not None:
            return
        if find_model_key(self.settings) is None:
            report = describe_model_key(self.settings)
            raise ConfigError(f"session {request.session_id}: no model API key: {report.detail}", hint=report.fix)

    async def follow(self, request: RunRequest, sink: EventSink, cancel: asyncio.Event, skip: int) -> RunResult:
        """Re-attach after a restart: replay the container's log (the recorder drops what it has) and
        serve its egress again, where the container expects it."""
        containers = await self.runtime.list_containers({LABEL_SESSION: request.session_id, LABEL_ROLE: "agent"})
        running = [c for c in containers if c.status == "running"]
        if not running:
            return RunResult(status="failed", reason="its container vanished while the server was down")
        ws = await self._layer(request.session_id)
        self._placed(request.session_id)
        return await self._drive(request, ws, sink, cancel, container_id=running[0].id)

    async def _stage(self, request: RunRequest) -> StagedWorkspace:
        if self.layers.exists(request.session_id):
            return await self._layer(request.session_id)  # a resumed run: the same layer
        lowers = [(await self._layer(s)).upper for s in request.layer_sessions]
        ws = await asyncio.to_thread(
            prepare_layer,
            request.session_id,
            request.working_dir,
            request.policy,
            self.settings.sessions_dir,
            session_labels(request, "workspace", self._home),
            extra_lowers=lowers,
            agent_uid=self.settings.agent_uid,
        )
        self.layers.save(ws)
        return ws

    async def _drive(
        self, request: RunRequest, ws: StagedWorkspace, sink: EventSink, cancel: asyncio.Event, container_id: str | None
    ) -> RunResult:
        """The one path of a run: a new container when ``container_id`` is None, else the one found."""
        for value in request.secrets:
            self.masker.add_secret(value)
        parser = CodexEventParser(request.test_runners, self.masker.mask)
        run = _Run(request, ws, parser, OutputPipeline(self.masker, parser, sink), container_id)
        plan = plan_egress(request.policy.network, self.settings.model_base_url, request.session_id)
        mcp_target = self._mcp_target(request)
        if mcp_target is not None and not self.backend.egress.reaches_hydra:
            mcp_target = None
            if container_id is None:  # said once, when the run starts (a re-attach replays it from the journal)
                draft = EventDraft(type="status", text=NO_DELEGATION, data={"delegation": "off"}, tags=["delegation"])
                await sink(draft)
        budget = ModelBudget(
            request.session_id,
            request.policy.resources.max_model_tokens,
            sink,
            self.model_tokens.get(request.session_id, 0),
        )
        detached = failed = False
        # A new run's Codex home and workspace are made while its egress starts (a gateway container on a
        # remote engine takes as long as the workspace's archive): neither needs the other.
        preparing = asyncio.ensure_future(self._prepare(run)) if run.container_id is None else None
        try:
            secrets = self._secrets(request, delegate=mcp_target is not None)
            serving = self.backend.egress.serve(plan, mcp_target, secrets=secrets, on_usage=budget)
            async with serving as active, self._container_removed_first(run):
                if preparing is not None:
                    await self._launch(run, active, await preparing, delegate=mcp_target is not None)
                outcome = await self._supervise_served(run, cancel, active.ready)
        except asyncio.CancelledError:
            detached = run.container_id is not None  # server shutdown: the agent keeps running for re-attach
            raise
        except Exception:
            self._failed("error")  # counted, then the manager fails the session with the reason
            failed = True
            await self._salvage_output(run)
            raise
        finally:
            if preparing is not None:  # done before the workspace is released (egress failed first: cancelled)
                preparing.cancel()
                await asyncio.wait([preparing])
                if not preparing.cancelled():
                    preparing.exception()  # egress's error is the run's; this one is retrieved, not raised
            run.pipeline.discard()  # its group timer must not record after the run (closed or detached)
            self.model_tokens[request.session_id] = budget.used
            if not detached:
                await asyncio.shield(self._teardown(run))
            if failed:  # the session fails: its Codex transcripts go with the container
                await asyncio.shield(self._session_ended(request.session_id))
        if run.lost is not None:
            outcome = outcome.model_copy(
                update={"reason": f"{outcome.reason}; {run.lost}" if outcome.reason else run.lost}
            )
        if budget.spent is not None:  # Codex fails on the refusal; the reason is the budget, whatever it exits with
            outcome = outcome.model_copy(update={"status": "failed", "reason": budget.spent, "failure": "budget"})
        result = await self._result(request, outcome, parser)
        if not (result.status == "completed" and result.has_changes and not request.read_only):
            await self._session_ended(request.session_id)  # nothing left to review
        return result

    @contextlib.asynccontextmanager
    async def _container_removed_first(self, run: _Run) -> AsyncIterator[None]:
        """Remove the agent's container before its egress placement tears down what it mounted (a volume in
        use cannot be removed); kept on a server shutdown, for the next server to follow."""
        try:
            yield
        except asyncio.CancelledError:
            raise
        except BaseException:
            await asyncio.shield(self._remove_container(run, failed=True))
            raise
        await asyncio.shield(self._remove_container(run))

    async def _remove_container(self, run: _Run, *, failed: bool = False) -> None:
        """Remove the agent's container; a transport that keeps the workspace in it first brings the
        change set home (its error fails the run, unless the run already failed with its own)."""
        if run.container_id is None:
            return
        try:
            await self._take_workspace(run, failed=failed)
        finally:
            with contextlib.suppress(RuntimeUnavailableError):
                await self.runtime.remove(run.container_id)
                run.container_id = None  # removed: the teardown after the egress need not ask again

    def _container_workspace(self) -> ContainerWorkspace | None:
        transport = self.backend.workspace
        return transport if isinstance(transport, ContainerWorkspace) else None

    async def _take_workspace(self, run: _Run, *, failed: bool) -> None:
        hooks = self._container_workspace()
        if hooks is None or run.taken or run.container_id is None:
            return
        run.taken = True
        try:
            await hooks.before_remove(run.ws, run.container_id)
        except Exception as exc:
            if not (failed or run.stopped):
                raise
            run.lost = f"its changes could not be read back from the stopped agent's container ({exc})"
            log.warning("session %s: the change set of the run was not read back: %s", run.ws.session_id, exc)

    async def _salvage_output(self, run: _Run) -> None:
        """A failed run's output lines still grouped are recorded before the session fails with the reason
        (the sink itself may be what failed: then they are lost, and the log says how the run ended)."""
        try:
            await asyncio.shield(run.pipeline.flush_pending())
        except Exception as exc:  # the run's own error is what gets raised and recorded
            log.warning("session %s: output lines of the failed run not recorded: %s", run.request.session_id, exc)

    async def _prepare(self, run: _Run) -> tuple[bool, Mount]:
        """The run's Codex home (whether it existed) and its workspace in the engine's form."""
        existed = await self._ensure_codex_home(run.request)
        return existed, await self.backend.workspace.attach(run.ws)

    async def _launch(self, run: _Run, active: ActiveEgress, prepared: tuple[bool, Mount], *, delegate: bool) -> None:
        home_existed, workspace = prepared
        if not home_existed and run.request.resume_thread_id:
            log.warning(
                "session %s: its Codex home was removed when the session ended; the resume starts a new "
                "Codex thread on the same workspace",
                run.request.session_id,
            )
            run.request = run.request.model_copy(update={"resume_thread_id": None})
        request = run.request
        agent = AgentContainer(
            image=self.settings.agent_image,
            workspace=workspace,
            agent_uid=run.ws.agent_uid,
            agent_gid=run.ws.agent_gid,
            labels=session_labels(request, "agent", self._home),
            egress=active,
            delegate=delegate,
            runtime=self.settings.agent_runtime,
        )
        run.container_id = await self.runtime.create(agent_spec(request, agent))
        hooks = self._container_workspace()
        if hooks is not None:  # its agent waits for the workspace; the container exists, so it is removed on failure
            run.taken = True  # nothing of this run to read back until the workspace is in
            await hooks.after_create(run.ws, run.container_id)
            run.taken = False
        await self.runtime.start(run.container_id)
        self._placed(request.session_id)
        self._started()

    async def _ensure_codex_home(self, request: RunRequest) -> bool:
        """Create the session's Codex home unless it exists; whether it existed (a thread to resume)."""
        name = codex_home_volume(request.session_id)
        existing = {v.name for v in await self.runtime.list_volumes({LABEL_SESSION: request.session_id})}
        if name not in existing:
            await self.runtime.create_volume(name, session_labels(request, "codex-home", self._home))
        return name in existing

    async def _session_ended(self, session_id: str) -> None:
        """Release what only a live or reviewable session needs: its Codex home and its quota mount."""
        await self._drop_codex_home(session_id)
        with contextlib.suppress(WorkspaceError):
            ws = self.workspace(session_id)
            if ws.quota_mb:
                await asyncio.to_thread(quota.release_quota_layer, ws.session_dir)

    async def _drop_codex_home(self, session_id: str) -> None:
        """Remove the session's Codex home: its raw transcripts (``rollout-*.jsonl``, history) are unmasked
        and must not outlive the session. Kept only while a diff awaits review (a resume continues the
        thread); apply, discard, the end of a run with nothing to review, and ``hydra gc`` remove it."""
        with contextlib.suppress(RuntimeUnavailableError):
            await self.runtime.remove_volume(codex_home_volume(session_id))

    def _mcp_target(self, request: RunRequest) -> Path | None:
        """The agent MCP endpoint's socket when this run may delegate and the endpoint is up."""
        endpoint = self.agent_endpoint
        if endpoint is None or not endpoint.serving or request.policy.delegation.max_depth == 0:
            return None
        return endpoint.socket_path

    def _secrets(self, request: RunRequest, *, delegate: bool) -> GatewaySecrets:
        """What the gateways add on the host side: the model key (first source found, read per run so a
        rotated key is picked up) and, for a run that may delegate, a fresh agent token (also on a
        re-attach: the container never held the old one). The token is masked by the built-in rule
        ``hydra-agent-token``, not added to the masker: each added value recompiles the known-value
        database, so one per run made every spawn slower than the last (0.8 s after 40 runs)."""
        found = find_model_key(self.settings)
        token = None
        if delegate:
            assert self.agent_endpoint is not None
            token = self.agent_endpoint.tokens.issue(request.session_id)
        if found is not None:
            self.masker.add_secret(found.key.get_secret_value())
        return GatewaySecrets(
            model_key=found.key if found is not None else None,
            mcp_token=SecretStr(token) if token is not None else None,
        )

    async def _supervise_served(
        self, run: _Run, cancel: asyncio.Event, ready: Callable[[], Awaitable[None]] | None
    ) -> RunOutcome:
        """Supervise the agent; when its gateways were still starting as it started (``ready``), a
        gateway that does not serve stops the agent and fails the run with the gateway's reason."""
        if ready is None:
            return await self._supervise(run, cancel)
        supervising = asyncio.ensure_future(self._supervise(run, cancel))
        served = asyncio.ensure_future(ready())
        try:
            await asyncio.wait([supervising, served], return_when=asyncio.FIRST_COMPLETED)
            error = served.exception() if served.done() else None
            if error is not None:
                raise error
            return await supervising  # the agent's end (also when it ended before its gateway served)
        finally:
            for task in (served, supervising):
                task.cancel()
            await asyncio.wait([served, supervising])
            if not served.cancelled():
                served.exception()  # retrieved: what the run raises or returns was decided above

    async def _supervise(self, run: _Run, cancel: asyncio.Event) -> RunOutcome:
        assert run.container_id is not None
        resources = run.request.policy.resources
        outcome = await supervise(
            self.runtime,
            run.container_id,
            timeout_s=resources.timeout_s,
            max_output_bytes=resources.max_output_bytes,
            on_output=run.pipeline.feed,
            cancel=cancel,
        )
        run.stopped = outcome.status in {"timed_out", "cancelled"} or outcome.truncated
        if run.ws.quota_mb and await asyncio.to_thread(quota.layer_full, run.ws.session_dir):
            said = f"disk quota of {run.ws.quota_mb} MB reached: the agent's writes failed with ENOSPC"
            await run.pipeline.feed("stderr", f"\n[hydra: {said}]\n".encode())
            outcome = outcome.model_copy(update={"reason": f"{outcome.reason}; {said}" if outcome.reason else said})
        await run.pipeline.close()
        return outcome

    async def _teardown(self, run: _Run) -> None:
        """Remove the container, then bring the change set home and release the workspace."""
        if self.agent_endpoint is not None:
            self.agent_endpoint.tokens.revoke(run.ws.session_id)
        await self._remove_container(run)
        with contextlib.suppress(RuntimeUnavailableError):
            await self.backend.workspace.release(run.ws)

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

    # -- reviewing ---------------------------------------------------------------------------

    async def diff(self, session_id: str, policy: Policy) -> DiffPreview:
        ws = await self._layer(session_id)
        return await asyncio.to_thread(compute_diff, ws, policy, mask=self.masker.mask)

    async def apply(
        self,
        session_id: str,
        policy: Policy,
        *,
        confirm: bool,
        digest: str | None = None,
        acknowledge_masked: bool = False,
    ) -> ApplyResult:
        ws = await self._layer(session_id)
        result = await asyncio.to_thread(
            functools.partial(
                apply_changes,
                ws,
                policy,
                confirm=confirm,
                digest=digest,
                acknowledge_masked=acknowledge_masked,
                detect=self.masker.mask,
            )
        )
        if confirm:
            await self._session_ended(session_id)
        return result

    async def discard(self, session_id: str) -> None:
        ws = self.workspace(session_id)
        await self.backend.workspace.discard(ws)
        await asyncio.to_thread(remove_layer, ws)
        self.layers.forget(session_id)
        await self._drop_codex_home(session_id)

    # -- health ------------------------------------------------------------------------------

    async def live_sessions(self) -> set[str]:
        try:
            containers = await self.runtime.list_containers({LABEL_ROLE: "agent"})
        except RuntimeUnavailableError:
            return set()
        return {c.labels[LABEL_SESSION] for c in containers if c.status == "running" and LABEL_SESSION in c.labels}

    async def status(self) -> dict[str, object]:
        """The backend's health and the Codex version found in the agent image (not the setting)."""
        name, image = self.backend.name, self.settings.agent_image
        try:
            present = await self.runtime.image_exists(image)
        except RuntimeUnavailableError as exc:
            return {"backend": name, name: f"unavailable: {exc}", "agent_image": image}
        status: dict[str, object] = {"backend": name, name: "ok", "agent_image": image, "agent_image_present": present}
        try:
            found = await self._codex.find(image) if present else None
        except RuntimeUnavailableError as exc:
            return status | {"codex_version": f"unknown: {exc}"}
        if found is None:
            return status | {"codex_version": "unknown: the agent image is missing (run `hydra images build`)"}
        return status | {
            "agent_image_id": found.image_id,
            "codex_version": found.version,
            "codex_version_source": found.source,
        }

    async def close(self) -> None:
        return None
