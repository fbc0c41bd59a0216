"""``hydra kubernetes warm-pool-manifest``: the agent-sandbox SandboxTemplate and SandboxWarmPool of
Hydra's warm pool, as YAML for ``kubectl apply -f -`` (docs/kubernetes.md, "Warm pools")."""

from __future__ import annotations

import typer
import yaml
from pydantic import ValidationError

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.settings import load_settings

app = typer.Typer(help="What the Kubernetes backend needs installed in the cluster.", no_args_is_help=True)


@app.command("warm-pool-manifest")
def warm_pool_manifest(
    name: str | None = typer.Option(None, help="The pool's and template's name; default: HYDRA_KUBERNETES_WARM_POOL."),
    replicas: int = typer.Option(2, min=0, max=1000, help="Agent pods kept waiting for a session."),
    cpus: float = typer.Option(1.0, help="CPU cores of every pooled agent pod."),
    memory_mb: int = typer.Option(2048, help="Memory (MiB) of every pooled agent pod."),
    disk_mb: int | None = typer.Option(None, help="Size limit (MiB) of the workspace volume; default: none."),
    uid: int | None = typer.Option(None, help="The agent's uid; default: HYDRA_AGENT_UID, else 1000."),
    gid: int | None = typer.Option(None, help="The agent's gid; default: the uid."),
) -> None:
    """Print the SandboxTemplate (Hydra's hardened agent pod, waiting for a session) and the SandboxWarmPool,
    in HYDRA_KUBERNETES_NAMESPACE, with the agent image and the RuntimeClass and seccomp settings."""
    from hydra_sandbox.sandbox.backends import warm_pool_manifests

    settings = load_settings()
    pool_name = name or settings.kubernetes_warm_pool
    if pool_name is None:
        raise ConfigError(
            "warm-pool-manifest: no pool name", hint="pass --name or set HYDRA_KUBERNETES_WARM_POOL to the pool's name"
        )
    agent_uid = uid if uid is not None else settings.agent_uid or 1000
    try:
        limits = ResourceLimits(cpus=cpus, memory_mb=memory_mb, disk_mb=disk_mb)
        manifests = warm_pool_manifests(
            settings,
            pool_name,
            replicas=replicas,
            limits=limits,
            uid=agent_uid,
            gid=gid if gid is not None else agent_uid,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"warm-pool-manifest: {problems}",
            hint="--name: a DNS label of at most 50 characters; --cpus: 0 to 64; --memory-mb: 64 to 262144; "
            "--disk-mb: at least 16; --uid, --gid: not 0",
        ) from None
    typer.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)
