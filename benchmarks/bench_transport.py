"""Workspace transport time: Hydra's archive transport against ``tar c | docker cp -`` of the same tree.

For trees of 1k, 10k and 100k small files (200 bytes, 100 per directory) it measures, one run each, on
the local engine:

- in: ``ArchiveVolumeTransport.attach`` (pack the agent's view with its manifest, put it into a fresh
  volume through a transfer container) against ``tar c -C tree . | docker cp - C:/workspace`` into a
  created container over a fresh volume;
- out: ``ArchiveVolumeTransport.release`` (get the tree back, check it as hostile, compare every file
  with the manifest, write the change set into the layer, remove the volume) against
  ``docker cp C:/workspace/. - | tar x`` into an empty folder.

The tree comes back unchanged, so "out" is the whole check of every file with nothing to write. Prints
a markdown table with the ratios. Needs root (the layer's whiteouts) and the agent image.

    python benchmarks/bench_transport.py [--sizes 1000,10000,100000] [--image TAG] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.archive import pack_workspace
from hydra_sandbox.sandbox.archive_transport import ArchiveVolumeTransport
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION
from hydra_sandbox.sandbox.workspace import prepare_layer, remove_layer
from hydra_sandbox.settings import load_settings

UID = 1234
PER_DIR = 100


def make_tree(root: Path, files: int) -> None:
    body = b"x" * 199 + b"\n"
    for n in range(files):
        directory = root / f"d{n // PER_DIR:05d}"
        if n % PER_DIR == 0:
            directory.mkdir(parents=True)
        (directory / f"f{n:06d}.txt").write_bytes(body)
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(root)], check=True)


def docker(*args: str, stdin: int | None = None, stdout: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["docker", *args], stdin=stdin, stdout=stdout)


def baseline(tree: Path, image: str, scratch: Path) -> tuple[float, float]:
    """``tar c | docker cp -`` in, ``docker cp - | tar x`` out, through a created container."""
    name = f"hydra-bench-transport-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-v"
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    subprocess.run(
        ["docker", "create", "--name", name, "--network", "none", "--read-only", "--user", f"{UID}:{UID}",
         "-v", f"{volume}:/workspace", image, "true"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        start = time.perf_counter()
        tar = subprocess.Popen(["tar", "c", "-C", str(tree), "."], stdout=subprocess.PIPE)
        cp = docker("cp", "-", f"{name}:/workspace", stdin=tar.stdout)
        assert tar.stdout is not None
        tar.stdout.close()
        assert cp.wait() == 0 and tar.wait() == 0
        put = time.perf_counter() - start
        out = scratch / "out"
        out.mkdir()
        start = time.perf_counter()
        cp = docker("cp", f"{name}:/workspace/.", "-", stdout=subprocess.PIPE)
        untar = subprocess.Popen(["tar", "x", "-C", str(out)], stdin=cp.stdout)
        assert cp.stdout is not None
        cp.stdout.close()
        assert untar.wait() == 0 and cp.wait() == 0
        return put, time.perf_counter() - start
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, check=False)


async def hydra(tree: Path, image: str, scratch: Path) -> tuple[float, float, float]:
    """(attach, release, pack alone) in seconds."""
    session = f"s-{uuid.uuid4().hex[:12]}"
    labels = {LABEL_SESSION: session, LABEL_ROLE: "workspace", "hydra.bench": "transport"}
    ws = prepare_layer(session, tree, Policy(name="bench"), scratch / "sessions", labels)
    transport = ArchiveVolumeTransport(DockerRuntime(), image)
    try:
        with (scratch / "pack-only.tar").open("wb") as out:
            start = time.perf_counter()
            pack_workspace(ws, out)
            pack = time.perf_counter() - start
        (scratch / "pack-only.tar").unlink()
        start = time.perf_counter()
        await transport.attach(ws)
        put = time.perf_counter() - start
        start = time.perf_counter()
        await transport.release(ws)
        return put, time.perf_counter() - start, pack
    finally:
        await transport.discard(ws)
        remove_layer(ws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--image", default=None, help="the agent image (default: the configured one)")
    parser.add_argument("--quick", action="store_true", help="1k files only")
    args = parser.parse_args()
    image = args.image or load_settings().agent_image
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| files | hydra in (pack+put; pack alone) | tar + docker cp in | ratio | hydra out (get+unpack) | docker cp + tar x | ratio |")  # noqa: E501
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        scratch = Path(tempfile.mkdtemp(prefix="hydra-bench-transport-"))
        os.chmod(scratch, 0o755)
        try:
            tree = scratch / "tree"
            make_tree(tree, size)
            base_in, base_out = baseline(tree, image, scratch)
            ours_in, ours_out, pack = asyncio.run(hydra(tree, image, scratch))
            print(
                f"| {size} | {ours_in:.2f} s (pack {pack:.2f} s) | {base_in:.2f} s | {ours_in / base_in:.2f} "
                f"| {ours_out:.2f} s | {base_out:.2f} s | {ours_out / base_out:.2f} |",
                flush=True,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
