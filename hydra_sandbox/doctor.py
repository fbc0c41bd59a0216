"""``hydra doctor``: each dependency checked on its own, with what to do when it fails."""

from __future__ import annotations

import subprocess

from pydantic import BaseModel

from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.errors import HydraError
from hydra_sandbox.model_credentials import describe_model_key
from hydra_sandbox.settings import HydraSettings


class Check(BaseModel):
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def _docker() -> tuple[Check, object | None]:
    try:
        import docker

        client = docker.from_env(timeout=10)
        version = client.version()
        return Check(
            name="docker", ok=True, detail=f"daemon {version.get('Version')} (API {version.get('ApiVersion')})"
        ), client
    except Exception as exc:
        return Check(
            name="docker",
            ok=False,
            detail=f"daemon not reachable: {exc}",
            fix="install docker.io and start dockerd (scripts/setup does both), or set DOCKER_HOST",
        ), None


def _image(client: object | None, settings: HydraSettings) -> Check:
    if client is None:
        return Check(name="agent image", ok=False, detail="skipped: no Docker daemon", fix="fix docker first")
    try:
        image = client.images.get(settings.agent_image)  # type: ignore[attr-defined]
        return Check(
            name="agent image", ok=True, detail=f"{settings.agent_image} ({image.attrs.get('Size', 0) / 1e6:.0f} MB)"
        )
    except Exception:
        return Check(
            name="agent image", ok=False, detail=f"{settings.agent_image} is missing", fix="run `hydra images build`"
        )


def _codex(client: object | None, settings: HydraSettings) -> Check:
    if client is None:
        return Check(name="codex", ok=False, detail="skipped: no Docker daemon", fix="fix docker first")
    try:
        out = client.containers.run(  # type: ignore[attr-defined]
            settings.agent_image,
            ["codex", "--version"],
            remove=True,
            read_only=True,
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            user="1000:1000",
            tmpfs={"/tmp": "", "/home/agent": "uid=1000"},
            labels={"hydra.role": "doctor"},
        )
        text = out.decode().strip().splitlines()[-1]
        ok = settings.codex_version in text
        return Check(name="codex", ok=ok, detail=text, fix=None if ok else "run `hydra images build --force`")
    except Exception as exc:
        return Check(
            name="codex",
            ok=False,
            detail=f"codex --version failed in the agent image: {exc}",
            fix="run `hydra images build`",
        )


def _store(settings: HydraSettings) -> Check:
    if settings.chroma_url:
        try:
            import urllib.request

            with urllib.request.urlopen(settings.chroma_url.rstrip("/") + "/api/v2/heartbeat", timeout=5) as r:
                return Check(name="chroma", ok=r.status == 200, detail=f"server {settings.chroma_url} answers")
        except Exception as exc:
            return Check(
                name="chroma",
                ok=False,
                detail=f"server {settings.chroma_url}: {exc}",
                fix="start the Chroma server or unset HYDRA_CHROMA_URL for the embedded store",
            )
    path = settings.effective_chroma_path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".hydra-doctor"
        probe.write_text("ok")
        probe.unlink()
        return Check(name="chroma", ok=True, detail=f"embedded store at {path} is writable")
    except OSError as exc:
        return Check(
            name="chroma",
            ok=False,
            detail=f"embedded store at {path}: {exc.strerror}",
            fix="set HYDRA_DATA_HOME or HYDRA_CHROMA_PATH to a writable directory",
        )


def _model(settings: HydraSettings) -> Check:
    try:
        MiniLMEmbedding(settings.embedding_model_dir).check()
        return Check(name="embedding model", ok=True, detail=f"all-MiniLM-L6-v2 in {settings.embedding_model_dir}")
    except HydraError as exc:
        return Check(name="embedding model", ok=False, detail=exc.message, fix=exc.hint)


def _npm() -> Check:
    try:
        version = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True).stdout.strip()
        return Check(name="npm", ok=True, detail=f"npm {version} (used once to stage the Codex CLI)")
    except (OSError, subprocess.CalledProcessError):
        return Check(
            name="npm", ok=False, detail="npm not found", fix="apt-get install npm (needed by `hydra images build`)"
        )


def _model_key(settings: HydraSettings) -> Check:
    report = describe_model_key(settings)
    return Check(name="model key", ok=report.ok, detail=report.detail, fix=report.fix)


def run_checks(settings: HydraSettings) -> list[Check]:
    docker_check, client = _docker()
    return [
        docker_check,
        _image(client, settings),
        _codex(client, settings),
        _store(settings),
        _model(settings),
        _model_key(settings),
        _npm(),
    ]
