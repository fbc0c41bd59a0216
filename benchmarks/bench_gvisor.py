"""Start time of a container under gVisor (``runsc``) against runc, in one run, on the same OCI bundle.

Registering ``runsc`` with a Docker daemon needs a change to the daemon's configuration and a reload, so
this benchmark does not go through Docker: it exports an image's filesystem once, writes one OCI bundle
(``runc spec``: read-only root, no capabilities, uid 1000, own namespaces and no network, the command
``true``) and starts it
``--runs`` times with each runtime directly (``<runtime> run``), alternating, as root. What it measures
is what the runtime adds to a container start; Docker's own overhead (about 0.3 s here) is the same for
both. Needs root, ``docker`` (for the export), ``runc`` and ``runsc`` on PATH.

    python benchmarks/bench_gvisor.py [--image hydra-local/debian:bookworm] [--runs 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RUNTIMES = ("runc", "runsc")


def _export_rootfs(image: str, rootfs: Path) -> None:
    name = f"hydra-bench-gvisor-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "create", "--name", name, image, "true"], check=True, capture_output=True)
    try:
        export = subprocess.Popen(["docker", "export", name], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(rootfs)], stdin=export.stdout, check=True)
        export.wait()
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)


def _write_spec(bundle: Path) -> None:
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    path = bundle / "config.json"
    spec = json.loads(path.read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["process"]["user"] = {"uid": 1000, "gid": 1000}
    spec["process"]["capabilities"] = {k: [] for k in spec["process"]["capabilities"]}
    spec["root"]["readonly"] = True
    path.write_text(json.dumps(spec))


def _start_once(runtime: str, bundle: Path, state: Path) -> float:
    cid = f"bench-{uuid.uuid4().hex[:10]}"
    extra = ["--network=none"] if runtime == "runsc" else []  # runc: the spec's own empty network namespace
    argv = [runtime, "--root", str(state / runtime), *extra, "run", "--bundle", str(bundle), cid]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    subprocess.run([runtime, "--root", str(state / runtime), "delete", "-f", cid], check=False, capture_output=True)
    return elapsed


def measure(image: str, runs: int) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="hydra-bench-gvisor-"))
    try:
        bundle, state = work / "bundle", work / "state"
        (bundle / "rootfs").mkdir(parents=True)
        _export_rootfs(image, bundle / "rootfs")
        _write_spec(bundle)
        times: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for runtime in RUNTIMES:  # one warm-up each (page cache, first exec of the binary)
            _start_once(runtime, bundle, state)
        for _ in range(runs):
            for runtime in RUNTIMES:
                times[runtime].append(_start_once(runtime, bundle, state))
        return times
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="hydra-local/debian:bookworm")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    missing = [tool for tool in ("docker", *RUNTIMES) if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        print(f"needs root and {', '.join(missing) or 'nothing else'} on PATH", file=sys.stderr)
        return 2
    times = measure(args.image, 3 if args.quick else args.runs)
    medians = {r: statistics.median(t) for r, t in times.items()}
    for runtime, values in times.items():
        print(f"{runtime:6} median {medians[runtime]:.3f} s  min {min(values):.3f} s  max {max(values):.3f} s")
    print(f"runsc/runc start-time ratio (medians): {medians['runsc'] / medians['runc']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
