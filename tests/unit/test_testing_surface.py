"""hydra_sandbox.testing's public surface: small, explicit, cheap to import (the pytest plugin loads it
in every test run of an environment where Hydra is installed), and honest about what it needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hydra_sandbox.testing as testing
from hydra_sandbox.errors import RuntimeUnavailableError


def test_every_public_name_resolves_and_nothing_else_is_public() -> None:
    assert set(testing.__all__) == set(testing._WHERE)
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = testing.Nope


def test_loading_the_pytest_plugin_imports_no_mcp_client_docker_or_testcontainers() -> None:
    code = (
        "import sys, hydra_sandbox.testing.plugin, hydra_sandbox.testing as t\n"
        "heavy = [m for m in ('fastmcp', 'docker', 'testcontainers', 'chromadb') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hydra_container_refuses_a_docker_socket_that_is_not_a_unix_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testcontainers.core.config import testcontainers_config

    from hydra_sandbox.testing.containers import docker_socket

    not_a_socket = tmp_path / "docker.sock"
    not_a_socket.write_text("")
    monkeypatch.setattr(testcontainers_config, "_ryuk_docker_socket", str(not_a_socket))
    with pytest.raises(RuntimeUnavailableError) as caught:
        docker_socket()
    assert f"{not_a_socket} is not one" in str(caught.value)
    assert "TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE" in str(caught.value)


def test_the_one_seam_into_hydras_internals_resolves_and_builds_the_operator_server(tmp_path: Path) -> None:
    from fastmcp import FastMCP

    from hydra_sandbox.settings import load_settings
    from hydra_sandbox.testing import _hydra

    server = _hydra.build_server(load_settings(data_home=tmp_path / "data"))
    assert isinstance(server, FastMCP)
