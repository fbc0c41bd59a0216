"""Sandbox start (hardened container + staged copy-on-write workspace) against a plain `docker run --rm`
of the same image; workspace staging against `git worktree add` and `cp -a` on synthetic repositories;
diff time against the number of changed files. Usage: python benchmarks/bench_sandbox.py [--quick]"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.backends.docker.workspace import OverlayVolumeTransport
from hydra_sandbox.sandbox.spec import ContainerSpec, Mount
from hydra_sandbox.sandbox.workspace import StagedWorkspace, prepare_layer, remove_layer
from hydra_sandbox.settings import load_settings

POLICY = Policy(name="bench")


# safe.directory: the repository belongs to another uid (1234, as a developer's would), which git refuses
# by default; gc.auto=0: a commit of thousands of loose objects starts a background gc that repacks them
# while a later step copies the tree.
GIT = ["git", "-c", "safe.directory=*", "-c", "gc.auto=0", "-c", "user.email=b@b", "-c", "user.name=b"]


async def stage(
    session_id: str, repo: Path, policy: Policy, sessions: Path, runtime: DockerRuntime, labels: dict[str, str]
) -> StagedWorkspace:
    """What a run's staging costs: the session's layer, then its overlay volume."""
    ws = prepare_layer(session_id, repo, policy, sessions, labels)
    await OverlayVolumeTransport(runtime).attach(ws)
    return ws


async def discard(ws: StagedWorkspace, runtime: DockerRuntime) -> None:
    await OverlayVolumeTransport(runtime).discard(ws)
    remove_layer(ws)


def make_repo(root: Path, files: int) -> Path:
    """A committed repository of ``files`` small files owned by uid 1234; built once per size and run."""
    repo = root / f"repo{files}"
    if (repo / ".git").is_dir():
        return repo
    for i in range(files):
        d = repo / f"pkg{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"m{i}.py").write_text(f"x = {i}\n")
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "x"], check=True)
    subprocess.run(["chown", "-R", "1234:1234", str(repo)], check=True)
    return repo


def timed_run(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed: {result.stderr.strip()[-500:]}")
    return time.perf_counter() - start


async def bench_start(image: str, tmp: Path, runs: int) -> None:
    runtime = DockerRuntime()
    repo = make_repo(tmp, 100)
    plain, hydra = [], []
    for i in range(runs):
        plain.append(timed_run(["docker", "run", "--rm", image, "true"]))
        start = time.perf_counter()
        labels = {"hydra.session": f"bench-{i}", "hydra.role": "workspace", "hydra.test": "1"}
        ws = await stage(f"bench-{i}", repo, POLICY, tmp / "sessions", runtime, labels)
        spec = ContainerSpec(
            image=image,
            argv=["true"],
            user=f"{ws.agent_uid}:{ws.agent_gid}",
            labels=labels,
            mounts=[Mount(type="volume", source=ws.volume_name, target="/workspace")],
        )
        cid = await runtime.create(spec)
        await runtime.start(cid)
        await runtime.wait(cid)
        await runtime.remove(cid)
        hydra.append(time.perf_counter() - start)
        await discard(ws, runtime)
    p, h = statistics.median(plain), statistics.median(hydra)
    print(f"| sandbox start (median of {runs}) | seconds | ratio |\n|---|---|---|")
    print(f"| docker run --rm IMAGE true | {p:.3f} | 1.00 |")
    print(f"| Hydra: stage workspace + hardened create/start/wait/remove | {h:.3f} | {h / p:.2f} |")


async def bench_staging(tmp: Path, sizes: list[int]) -> None:
    runtime = DockerRuntime()
    print("\n| files | hydra stage (s) | git worktree add (s) | cp -a (s) | worktree / hydra | cp / hydra |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        repo = make_repo(tmp, n)
        start = time.perf_counter()
        labels = {"hydra.session": f"stage-{n}", "hydra.role": "workspace", "hydra.test": "1"}
        ws = await stage(f"stage-{n}", repo, POLICY, tmp / "sessions", runtime, labels)
        hydra = time.perf_counter() - start
        await discard(ws, runtime)
        worktree = timed_run([*GIT, "-C", str(repo), "worktree", "add", "-q", str(tmp / f"wt{n}")])
        copy = timed_run(["cp", "-a", str(repo), str(tmp / f"cp{n}")])
        print(f"| {n} | {hydra:.3f} | {worktree:.3f} | {copy:.3f} | {worktree / hydra:.1f}x | {copy / hydra:.1f}x |")
        shutil.rmtree(tmp / f"cp{n}")


async def bench_diff(tmp: Path, counts: list[int]) -> None:
    runtime = DockerRuntime()
    repo = make_repo(tmp, max(counts))
    print("\n| changed files | diff (s) | per file (ms) |\n|---|---|---|")
    for n in counts:
        labels = {"hydra.session": f"diff-{n}", "hydra.role": "workspace", "hydra.test": "1"}
        ws = await stage(f"diff-{n}", repo, POLICY, tmp / "sessions", runtime, labels)
        for i in range(n):
            target = ws.upper / f"pkg{i // 100}" / f"m{i}.py"
            target.parent.mkdir(exist_ok=True)
            target.write_text(f"x = {i + 1}\n")
        start = time.perf_counter()
        compute_diff(ws, POLICY)
        took = time.perf_counter() - start
        print(f"| {n} | {took:.3f} | {took / n * 1000:.2f} |")
        await discard(ws, runtime)


async def main() -> None:
    quick = "--quick" in sys.argv
    image = load_settings().agent_image
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        await bench_start(image, Path(tmp), 3 if quick else 10)
        await bench_staging(Path(tmp), [1000, 10000] if quick else [1000, 10000, 100000])
        await bench_diff(Path(tmp), [10, 100] if quick else [10, 100, 1000, 10000])


if __name__ == "__main__":
    asyncio.run(main())
