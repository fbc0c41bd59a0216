"""``hydra doctor`` reports each dependency on its own and never crashes on a missing one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hydra_sandbox.doctor import _check, run_checks
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.settings import HydraSettings


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_docker_or_model_every_check_still_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    (tmp_path / "model").mkdir()
    settings = HydraSettings(data_home=tmp_path / "data", embedding_model_dir=tmp_path / "model")
    checks = {c.name: c for c in run_checks(settings)}
    expected = [
        "docker",
        "agent image",
        "codex",
        "chroma",
        "data home",
        "embedding model",
        "model key",
        "masking",
        "npm",
    ]
    assert list(checks) == expected
    assert checks["masking"].ok and "hyperscan" in checks["masking"].detail
    assert not checks["docker"].ok and checks["docker"].detail.startswith("daemon not reachable")
    for name in ("agent image", "codex"):
        assert checks[name].detail == "skipped: no Docker daemon" and checks[name].fix == "fix docker first"
    assert checks["chroma"].ok and "is writable" in checks["chroma"].detail
    model = checks["embedding model"]
    assert not model.ok and str(tmp_path / "model") in model.detail
    assert model.fix is not None and "hydra embeddings install" in model.fix


def test_an_unreachable_chroma_server_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_loopback_port()}"
    settings = HydraSettings(data_home=tmp_path, chroma_url=url)
    chroma = next(c for c in run_checks(settings) if c.name == "chroma")
    assert not chroma.ok and chroma.detail.startswith(f"server {url}:")
    assert chroma.fix is not None and "HYDRA_CHROMA_URL" in chroma.fix


def test_a_probe_answers_ok_wrong_or_failed() -> None:
    assert _check("x", lambda: "fine", fix="f").model_dump() == {"name": "x", "ok": True, "detail": "fine", "fix": None}
    wrong = _check("x", lambda: (False, "codex 0.1"), fix="rebuild")
    assert (wrong.ok, wrong.detail, wrong.fix) == (False, "codex 0.1", "rebuild")

    def broken() -> str:
        raise OSError("no such file")

    failed = _check("x", broken, fix="install it", failed=lambda exc: f"missing: {exc}")
    assert (failed.ok, failed.detail, failed.fix) == (False, "missing: no such file", "install it")

    def refused() -> str:
        raise ConfigError("bad value", hint="set HYDRA_X")

    hydra = _check("x", refused, fix="generic")
    assert (hydra.detail, hydra.fix) == ("bad value", "set HYDRA_X")


def test_doctor_names_a_data_home_and_journal_open_to_other_users(tmp_path: Path) -> None:
    from hydra_sandbox.doctor import _private_data
    from hydra_sandbox.journal import Journal

    settings = HydraSettings(data_home=tmp_path / "data")
    Journal(settings.journal_path).close()
    assert _private_data(settings).ok
    os.chmod(settings.data_home, 0o755)
    os.chmod(settings.journal_path, 0o644)
    check = _private_data(settings)
    assert not check.ok and "0o755" in check.detail and "journal.sqlite3 (0o644)" in check.detail
    assert check.fix is not None and "chmod 700" in check.fix


def test_each_configured_engine_gets_its_own_checks_and_an_unreachable_one_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    gone = f"unix://{tmp_path}/gone.sock"
    settings = HydraSettings(data_home=tmp_path / "data", docker_host=gone)
    checks = {c.name: c for c in run_checks(settings)}
    engine, image = checks[f"docker {gone}"], checks[f"agent image {gone}"]
    assert not engine.ok and engine.detail.startswith(f"cannot reach {gone}")
    assert engine.fix is not None and "HYDRA_DOCKER_TLS_DIR" in engine.fix
    assert (image.ok, image.detail, image.fix) == (False, "skipped: engine not reachable", "fix the engine first")


def test_a_tcp_engine_without_tls_files_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings = HydraSettings(data_home=tmp_path, docker_host="tcp://build1.lan:2376")
    engines = next(c for c in run_checks(settings) if c.name == "docker engines")
    assert not engines.ok and "HYDRA_DOCKER_TLS_DIR is not set" in engines.detail and engines.fix
