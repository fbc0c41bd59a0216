"""A built wheel is not the checkout: installed into a fresh virtualenv outside the repository, it
lists the built-in profiles and policies and ``hydra doctor`` runs (Docker problems are reported,
never a crash)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hydra_sandbox.settings import REPO_ROOT

pytestmark = pytest.mark.slow

BUILTIN_FILES = [
    "profiles/default.yaml",
    "profiles/coder.yaml",
    "profiles/code_reviewer.yaml",
    "profiles/data_migration.yaml",
    "policies/default.yaml",
    "policies/offline.yaml",
    "policies/read_only.yaml",
    "policies/package_install.yaml",
    "images/agent/Dockerfile",
    "images/agent/hydra-agent-entry",
    "images/chroma/Dockerfile",
]
SKIP_IN_COPY = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "tests", ".*cache")
QUIET_PIP = ["-m", "pip", "-qq", "--disable-pip-version-check"]


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (links kept as links) so the checkout stays clean."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=SKIP_IN_COPY)
    built = run([sys.executable, *QUIET_PIP, "wheel", "--no-deps", "-w", str(root / "dist"), str(source)], cwd=root)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = (root / "dist").glob("hydra_sandbox-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(the fresh virtualenv's bin directory, a clean environment, a working directory outside the checkout)."""
    root = tmp_path_factory.mktemp("fresh")
    made = run([sys.executable, "-m", "venv", str(root / "venv")], cwd=root)
    assert made.returncode == 0, made.stderr
    bin_dir = root / "venv" / "bin"
    done = run([str(bin_dir / "python"), *QUIET_PIP, "install", str(wheel)], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {"HYDRA_DATA_HOME": str(root / "data"), "NO_COLOR": "1", "COLUMNS": "200"}
    work = root / "elsewhere"
    work.mkdir()
    return bin_dir, env, work


def test_the_wheel_carries_the_builtins_as_real_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: info for info in archive.infolist()}
    for name in BUILTIN_FILES:
        info = entries.get(f"hydra_sandbox/builtin/{name}")
        assert info is not None, f"{name} is not in the wheel"
        assert not stat.S_ISLNK(info.external_attr >> 16), f"{name} is a link in the wheel, not the file"
        assert info.file_size > 0
    assert not [n for n in entries if n.startswith(("profiles/", "policies/", "images/"))]


def test_a_fresh_install_lists_the_builtin_profiles_and_policies(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    where = run([str(bin_dir / "python"), "-c", "import hydra_sandbox; print(hydra_sandbox.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), "the checkout, not the wheel, was imported"
    profiles = run([str(bin_dir / "hydra"), "profiles", "list", "--json"], work, env, timeout=120)
    assert profiles.returncode == 0, profiles.stderr
    listed = json.loads(profiles.stdout)
    assert {p["id"] for p in listed["profiles"]} >= {"default", "coder", "code_reviewer", "data_migration"}
    assert listed["errors"] == {}
    policies = run([str(bin_dir / "hydra"), "policies", "list", "--json"], work, env, timeout=120)
    assert policies.returncode == 0, policies.stderr
    assert {p["name"] for p in json.loads(policies.stdout)["policies"]} >= {"default", "offline", "read_only"}
    shown = json.loads(run([str(bin_dir / "hydra"), "config", "show", "--json"], work, env, timeout=120).stdout)
    assert Path(shown["builtin_profiles_dir"]).is_relative_to(bin_dir.parent)


def test_doctor_runs_from_a_fresh_install(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    doctor = run([str(bin_dir / "hydra"), "doctor", "--json"], work, env, timeout=300)
    assert doctor.returncode in (0, 1), doctor.stderr  # 1: a dependency is missing, which it reports
    assert "Traceback" not in doctor.stderr
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert set(checks) == {
        "docker", "agent image", "codex", "chroma", "data home", "embedding model", "model key", "npm", "masking"
    }
    assert all(c["ok"] or c["fix"] for c in checks.values()), "a failed check without a fix"
