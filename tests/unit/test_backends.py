"""The backend is a setting, and the rest of Hydra reaches a backend only through the factory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hydra_sandbox
from hydra_sandbox.errors import ConfigError
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox import Sandbox
from hydra_sandbox.sandbox.backends import open_backend, open_runtime
from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator
from hydra_sandbox.settings import load_settings

PACKAGE = Path(hydra_sandbox.__file__).parent
BACKEND_IMPORT = re.compile(r"^\s*(from|import)\s+hydra_sandbox\.sandbox\.backends\.\w+", re.M)


def test_the_docker_backend_is_the_default_and_gives_the_one_orchestrator(tmp_path: Path) -> None:
    settings = load_settings(data_home=tmp_path)
    assert settings.backend == "docker"
    sandbox = open_backend(settings, SecretMasker())
    assert isinstance(sandbox, SandboxOrchestrator) and isinstance(sandbox, Sandbox)
    assert sandbox.backend.name == "docker" and open_runtime(settings) is not None


def test_an_unknown_backend_is_refused_naming_the_setting_and_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_BACKEND", "nomad")
    with pytest.raises(ConfigError, match="HYDRA_BACKEND"):
        load_settings(data_home=tmp_path)
    monkeypatch.delenv("HYDRA_BACKEND")
    forced = load_settings(data_home=tmp_path).model_copy(update={"backend": "nomad"})
    with pytest.raises(ConfigError, match="HYDRA_BACKEND: 'nomad'.*docker, kubernetes"):
        open_backend(forced, SecretMasker())


def test_kubernetes_backend_gives_a_runtime_for_gc_configured_by_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_sandbox.sandbox.backends.kubernetes.runtime import KubernetesRuntime

    monkeypatch.setenv("HYDRA_BACKEND", "kubernetes")
    monkeypatch.setenv("HYDRA_KUBERNETES_NAMESPACE", "agents")
    monkeypatch.setenv("HYDRA_KUBERNETES_RUNTIME_CLASS", "gvisor")
    monkeypatch.setenv("HYDRA_KUBERNETES_SECCOMP_PROFILE", "hydra/agent.json")
    runtime = open_runtime(load_settings(data_home=tmp_path))  # no cluster asked: it connects on first use
    assert isinstance(runtime, KubernetesRuntime)
    options = runtime.options
    chosen = (options.namespace, options.runtime_class, options.seccomp_localhost)
    assert chosen == ("agents", "gvisor", "hydra/agent.json")


def test_kubernetes_backend_runs_agents_as_pods_with_the_exec_transport_and_gateway_pods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_sandbox.sandbox.backends.kubernetes.egress import KubernetesEgress
    from hydra_sandbox.sandbox.backends.kubernetes.exec_transport import PodExecTransport
    from hydra_sandbox.sandbox.orchestrator import SandboxOrchestrator

    monkeypatch.setenv("HYDRA_BACKEND", "kubernetes")
    monkeypatch.setenv("HYDRA_KUBERNETES_NAMESPACE", "agents")
    sandbox = open_backend(load_settings(data_home=tmp_path), SecretMasker())  # no cluster asked yet
    assert isinstance(sandbox, SandboxOrchestrator)
    backend = sandbox.backend
    assert backend.name == "kubernetes" and backend.host == "kubernetes:agents"
    assert isinstance(backend.workspace, PodExecTransport) and isinstance(backend.egress, KubernetesEgress)
    assert backend.egress.reaches_hydra is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HYDRA_KUBERNETES_NAMESPACE", "Not_A_Label"),
        ("HYDRA_KUBERNETES_RUNTIME_CLASS", "-x"),
        ("HYDRA_KUBERNETES_SECCOMP_PROFILE", "../../etc/x.json"),
    ],
)
def test_kubernetes_names_that_are_not_dns_labels_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings(data_home=tmp_path)


def test_nothing_outside_the_sandbox_package_imports_a_backend_directly() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "sandbox" not in path.relative_to(PACKAGE).parts[:1] and BACKEND_IMPORT.search(path.read_text())
    ]
    assert offenders == [], "use hydra_sandbox.sandbox.backends.open_backend / open_runtime instead"
