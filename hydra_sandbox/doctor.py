"""``hydra doctor``: each dependency checked on its own, with what to do when it fails.

Every check is a probe (a function that answers with a detail, or raises) run by :func:`_check`,
which turns the answer or the exception into a :class:`Check`. Checks that need Docker are skipped,
and say so, when the daemon does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hydra_sandbox.docker_hosts import EngineConfig, resolve_engines
from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.errors import HydraError
from hydra_sandbox.model_credentials import describe_model_key
from hydra_sandbox.private_data import exposed
from hydra_sandbox.sandbox.codex_version import CodexVersionFinder
from hydra_sandbox.sandbox.spec import home_label
from hydra_sandbox.settings import HydraSettings

Probe = Callable[[], "str | tuple[bool, str]"]


class Check(BaseModel):
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def _check(name: str, probe: Probe, *, fix: str, failed: Callable[[Exception], str] = str) -> Check:
    """Run one probe: ok with its detail, or not ok with what failed and how to fix it. A probe may
    answer ``(False, detail)`` for a dependency that answers wrongly; a HydraError brings its own fix."""
    try:
        answer = probe()
    except HydraError as exc:
        return Check(name=name, ok=False, detail=exc.message, fix=exc.hint or fix)
    except Exception as exc:  # a probe's dependency fails in its own library's ways
        return Check(name=name, ok=False, detail=failed(exc), fix=fix)
    ok, detail = answer if isinstance(answer, tuple) else (True, answer)
    return Check(name=name, ok=ok, detail=detail, fix=None if ok else fix)


def _docker_version(found: list[Any]) -> str:
    """Connect to the daemon (the client goes into ``found`` for the checks that need it)."""
    import docker

    client = docker.from_env(timeout=10)
    version = client.version()
    found.append(client)
    return f"daemon {version.get('Version')} (API {version.get('ApiVersion')})"


def _agent_image(client: Any, tag: str) -> str:
    return f"{tag} ({client.images.get(tag).attrs.get('Size', 0) / 1e6:.0f} MB)"


def _codex_version(settings: HydraSettings) -> tuple[bool, str]:
    """The Codex version found in the agent image (its build label, else ``codex --version`` in a
    throwaway hardened container), compared with the version the settings ask for."""
    from hydra_sandbox.sandbox.backends import open_runtime

    builder = settings.model_copy(update={"backend": "docker"})  # the image is built (and read) in Docker
    finder = CodexVersionFinder(open_runtime(builder), home_label=home_label(settings.data_home))
    found = asyncio.run(finder.find(settings.agent_image))
    if found is None:
        return False, f"{settings.agent_image} is missing"
    how = "its build label" if found.source == "label" else "`codex --version` in the image"
    detail = f"Codex {found.version} in {settings.agent_image} (from {how})"
    if found.version != settings.codex_version:
        return False, f"{detail}, but HYDRA_CODEX_VERSION is {settings.codex_version}"
    return True, detail


def _docker_checks(settings: HydraSettings) -> list[Check]:
    found: list[Any] = []
    daemon = _check(
        "docker",
        lambda: _docker_version(found),
        fix="install docker.io and start dockerd (scripts/setup does both), or set DOCKER_HOST",
        failed=lambda exc: f"daemon not reachable: {exc}",
    )
    client = found[0] if found else None
    needs_docker: list[tuple[str, Probe, str, Callable[[Exception], str]]] = [
        (
            "agent image",
            lambda: _agent_image(client, settings.agent_image),
            "run `hydra images build`",
            lambda _exc: f"{settings.agent_image} is missing",
        ),
        (
            "codex",
            lambda: _codex_version(settings),
            "run `hydra images build` (it builds the image of HYDRA_CODEX_VERSION), or set HYDRA_CODEX_VERSION "
            "to the version found",
            lambda exc: f"cannot tell the Codex version of {settings.agent_image}: {exc}",
        ),
    ]
    engines = _engine_checks(settings, client) if settings.docker_host else []
    if not daemon.ok:
        return (
            [daemon]
            + [
                Check(name=name, ok=False, detail="skipped: no Docker daemon", fix="fix docker first")
                for name, *_ in needs_docker
            ]
            + engines
        )
    checked = [_check(name, probe, fix=fix, failed=failed) for name, probe, fix, failed in needs_docker]
    return [daemon, *checked, *engines]


def _engine_version(engine: EngineConfig, found: list[Any]) -> str:
    from hydra_sandbox.docker_engines import engine_client

    try:
        client = engine_client(engine)
    except HydraError as exc:  # its hint is about the local daemon; the check's fix is about this engine
        raise RuntimeError(("TLS refused: " if "SSL" in exc.message else "") + exc.message) from None
    version = client.version()
    found.append(client)
    how = {"tcp": "over mutual TLS", "ssh": "over ssh", "unix": "on its socket"}[engine.scheme]
    return f"daemon {version.get('Version')} (API {version.get('ApiVersion')}) {how}"


def _engine_image(client: Any, tag: str, local_id: str | None) -> tuple[bool, str]:
    image = client.images.get(tag)
    if local_id is not None and image.id != local_id:
        return False, f"{tag} is there, but it is not the local build ({image.id[:19]} against {local_id[:19]})"
    return True, f"{tag} ({image.id[:19]})"


def _engine_checks(settings: HydraSettings, local_client: Any) -> list[Check]:
    """For each engine of HYDRA_DOCKER_HOST: it answers (TLS accepted), and holds the agent image (and, when it
    may be remote, the gateway image)."""
    try:
        engines = resolve_engines(settings.docker_host, settings.docker_tls_dir, settings.docker_ssh_config)
    except HydraError as exc:
        return [Check(name="docker engines", ok=False, detail=exc.message, fix=exc.hint)]
    local_id = _local_id(local_client, settings.agent_image)
    gateway_id = _local_id(local_client, settings.gateway_image)
    checks: list[Check] = []
    copy = f"run `hydra images copy` (or `hydra images build --docker-host URL`) to put {settings.agent_image} there"
    for engine in engines:
        found: list[Any] = []
        checks.append(
            _check(
                f"docker {engine.url}",
                functools.partial(_engine_version, engine, found),
                fix="start the engine; for tcp:// check that HYDRA_DOCKER_TLS_DIR holds the CA that signed its "
                "certificate and a client certificate its --tlscacert trusts",
            )
        )
        if not found:
            skipped = Check(name=f"agent image {engine.url}", ok=False, detail="skipped: engine not reachable")
            checks.append(skipped.model_copy(update={"fix": "fix the engine first"}))
            continue
        checks.append(
            _check(
                f"agent image {engine.url}",
                functools.partial(_engine_image, found[0], settings.agent_image, local_id),
                fix=copy,
                failed=lambda _exc: f"{settings.agent_image} is missing there",
            )
        )
        if engine.remote:  # its agents' egress runs in a gateway container there
            checks.append(
                _check(
                    f"gateway image {engine.url}",
                    functools.partial(_engine_image, found[0], settings.gateway_image, gateway_id),
                    fix=f"run `hydra images build --gateway`, then `hydra images copy` to put {settings.gateway_image} "
                    "there (agents on this engine need it for their egress)",
                    failed=lambda _exc: f"{settings.gateway_image} is missing there",
                )
            )
    return checks


def _local_id(local_client: Any, tag: str) -> str | None:
    """The id of ``tag`` on the local engine, or ``None`` (no local engine, or no such image)."""
    if local_client is None:
        return None
    with contextlib.suppress(Exception):
        return str(local_client.images.get(tag).id)
    return None


def _heartbeat(url: str) -> tuple[bool, str]:
    with urllib.request.urlopen(url.rstrip("/") + "/api/v2/heartbeat", timeout=5) as response:
        return response.status == 200, f"server {url} answers"


def _writable(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".hydra-doctor"
    probe.write_text("ok")
    probe.unlink()
    return f"embedded store at {path} is writable"


def _store(settings: HydraSettings) -> Check:
    if settings.chroma_url:
        url = settings.chroma_url
        return _check(
            "chroma",
            lambda: _heartbeat(url),
            fix="start the Chroma server or unset HYDRA_CHROMA_URL for the embedded store",
            failed=lambda exc: f"server {url}: {exc}",
        )
    path = settings.effective_chroma_path
    return _check(
        "chroma",
        lambda: _writable(path),
        fix="set HYDRA_DATA_HOME or HYDRA_CHROMA_PATH to a writable directory",
        failed=lambda exc: f"embedded store at {path}: {getattr(exc, 'strerror', None) or exc}",
    )


def _model(model_dir: Path) -> str:
    MiniLMEmbedding(model_dir).check()
    return f"all-MiniLM-L6-v2 in {model_dir}"


def _npm() -> str:
    version = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return f"npm {version} (used once to stage the Codex CLI)"


def _model_key(settings: HydraSettings) -> Check:
    report = describe_model_key(settings)  # answers with a report, never raises: no probe needed
    return Check(name="model key", ok=report.ok, detail=report.detail, fix=report.fix)


def _masking(settings: HydraSettings) -> Check:
    from hydra_sandbox.masking import SecretMasker, hyperscan_available
    from hydra_sandbox.services import masking_rules

    try:
        rules = masking_rules(settings)
    except HydraError as exc:
        return Check(name="masking", ok=False, detail=exc.message, fix=exc.hint)
    if hyperscan_available():
        SecretMasker(rules=rules).mask("doctor")  # compiles the rules now, so a bad pattern shows here
        return Check(name="masking", ok=True, detail=f"{len(rules)} rules on the hyperscan (Vectorscan) engine")
    return Check(
        name="masking",
        ok=True,
        detail=f"{len(rules)} rules on the Aho-Corasick fallback: the hyperscan package does not load here, "
        "so masking is several times slower",
        fix="pip install hyperscan",
    )


def _private_data(settings: HydraSettings) -> Check:
    home = settings.data_home
    loose = exposed([home, settings.sessions_dir, settings.journal_path, settings.effective_chroma_path])
    if not loose:
        detail = f"{home} is private (0700, journal 0600)" if home.exists() else f"{home} is created 0700 at start"
        return Check(name="data home", ok=True, detail=detail)
    return Check(
        name="data home",
        ok=False,
        detail="open to other users: " + ", ".join(loose),
        fix=f"chmod 700 {home} (Hydra also tightens it when it starts), and chmod 600 {settings.journal_path}",
    )


def _kubernetes(settings: HydraSettings, apis: list[list[str]]) -> tuple[bool, str]:
    """The Kubernetes backend's cluster: reachable, the namespace's pods listable by Hydra's account, and
    every right the backend uses granted there (the cluster is asked; each missing one is named). In the
    same event loop, the APIs its settings rely on that the cluster does not serve go into ``apis``."""
    from hydra_sandbox.sandbox.backends import missing_apis, missing_rights, open_runtime

    async def ask() -> tuple[int, list[str]]:
        runtime = open_runtime(settings)
        pods = await runtime.list_containers({})
        apis.append(await missing_apis(settings, runtime))
        return len(pods), await missing_rights(settings, runtime)

    pods, missing = asyncio.run(ask())
    where = f"namespace {settings.kubernetes_namespace}"
    if missing:
        return False, f"{where}: reachable, but Hydra's account may not " + ", ".join(missing)
    return True, f"{where}: reachable, {pods} pod(s) of Hydra's, every right of the Role granted"


def _warm_pool(settings: HydraSettings, apis: list[list[str]]) -> tuple[bool, str]:
    """With HYDRA_KUBERNETES_WARM_POOL set: whether the cluster serves the agent-sandbox CRDs, as the
    cluster check found them (API discovery)."""
    pool = f"pool {settings.kubernetes_warm_pool}"
    if not apis:
        return False, f"{pool}: not checked, the cluster did not answer (see the kubernetes check)"
    if apis[0]:
        return False, f"{pool}: the cluster does not serve " + ", ".join(apis[0])
    return (
        True,
        f"{pool}: the cluster serves the agent-sandbox CRDs (sandboxtemplates, sandboxwarmpools, sandboxclaims)",
    )


def _backend_checks(settings: HydraSettings) -> list[Check]:
    if settings.backend != "kubernetes":
        return []
    fix = "check the kubeconfig (HYDRA_KUBERNETES_KUBECONFIG, KUBECONFIG) and the Role of docs/kubernetes.md"
    apis: list[list[str]] = []
    checks = [_check("kubernetes", lambda: _kubernetes(settings, apis), fix=fix)]
    if settings.kubernetes_warm_pool is not None:
        pool_fix = (
            "install agent-sandbox (v0.5.6 or later) with its extensions (docs/kubernetes.md, 'Warm pools'), then "
            "`hydra kubernetes warm-pool-manifest | kubectl apply -f -`; or unset HYDRA_KUBERNETES_WARM_POOL"
        )
        checks.append(_check("kubernetes warm pool", lambda: _warm_pool(settings, apis), fix=pool_fix))
    return checks


def run_checks(settings: HydraSettings) -> list[Check]:
    return [
        *_docker_checks(settings),
        *_backend_checks(settings),
        _store(settings),
        _private_data(settings),
        _check("embedding model", lambda: _model(settings.embedding_model_dir), fix="run `hydra embeddings install`"),
        _model_key(settings),
        _masking(settings),
        _check(
            "npm",
            _npm,
            fix="apt-get install npm (needed by `hydra images build`)",
            failed=lambda _exc: "npm not found",
        ),
    ]
