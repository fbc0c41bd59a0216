"""HYDRA_DOCKER_HOST and HYDRA_DOCKER_TLS_DIR: which URLs are accepted, where TLS files are looked for,
and the refusal of runs on an engine that cannot see this machine's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydra_sandbox.docker_hosts import parse_docker_hosts, resolve_engines
from hydra_sandbox.errors import ConfigError, UnsafeSpecError
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox.backends import open_backend
from hydra_sandbox.sandbox.backends.docker.engines import engine_runtime, runs_engine
from hydra_sandbox.sandbox.backends.docker.sidecar_egress import SidecarEgress
from hydra_sandbox.sandbox.spec import ContainerSpec, Mount
from hydra_sandbox.settings import HydraSettings, load_settings


def tls_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (folder / name).write_text(f"{folder.name}/{name}")
    return folder


def test_each_scheme_is_read_into_an_engine_and_tcp_gets_dockers_tls_port() -> None:
    engines = parse_docker_hosts(
        " unix:///run/docker.sock, tcp://build1.lan, ssh://ops@build2.lan:2222 ,tcp://[::1]:2400"
    )
    assert [(e.scheme, e.url, e.port) for e in engines] == [
        ("unix", "unix:///run/docker.sock", None),
        ("tcp", "tcp://build1.lan:2376", 2376),
        ("ssh", "ssh://ops@build2.lan:2222", 2222),
        ("tcp", "tcp://[::1]:2400", 2400),
    ]
    assert [e.remote for e in engines] == [False, True, True, True]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("http://build1.lan:2376", "no scheme Hydra accepts"),
        ("build1.lan:2376", "no scheme Hydra accepts"),
        ("unix://run/docker.sock", "absolute socket path"),
        ("tcp://build1.lan:99999", "not a number from 1 to 65535"),
        ("tcp://build1.lan:2376/v1.41", "no path"),
        ("tcp://", "must name a host"),
        ("tcp://root@build1.lan:2376", "only ssh:// takes"),
        ("tcp://a:2376,,tcp://b:2376", "empty entry"),
        ("tcp://a:2376,tcp://a", "listed twice"),
    ],
)
def test_a_url_hydra_does_not_take_is_refused_naming_the_setting_and_what_is_valid(value: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as caught:
        parse_docker_hosts(value)
    assert caught.value.message.startswith("HYDRA_DOCKER_HOST:")
    assert "tcp://HOST:PORT" in (caught.value.hint or "")


def test_the_settings_refuse_a_bad_docker_host_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_DOCKER_HOST", "http://build1.lan")
    with pytest.raises(ConfigError, match="HYDRA_DOCKER_HOST.*no scheme Hydra accepts"):
        load_settings()
    monkeypatch.setenv("HYDRA_DOCKER_HOST", "  ")
    assert load_settings().docker_host is None


def test_tcp_without_a_tls_dir_is_refused_even_on_loopback() -> None:
    with pytest.raises(ConfigError, match="only with mutual TLS, and HYDRA_DOCKER_TLS_DIR is not set"):
        resolve_engines("tcp://127.0.0.1:2376", None)
    assert resolve_engines("unix:///run/docker.sock,ssh://build2.lan", None)[0].tls is None


def test_tls_files_come_from_the_engines_own_subdirectory_else_the_top_of_the_dir(tmp_path: Path) -> None:
    tls_files(tmp_path)
    tls_files(tmp_path / "build2.lan_2376")
    first, second = resolve_engines("tcp://build1.lan:2376,tcp://build2.lan", tmp_path)
    assert first.tls is not None and first.tls.cert == tmp_path / "cert.pem"
    assert second.tls is not None and second.tls.ca == tmp_path / "build2.lan_2376" / "ca.pem"


def test_a_missing_tls_file_is_named_with_the_folder_it_was_looked_for_in(tmp_path: Path) -> None:
    tls_files(tmp_path)
    (tmp_path / "key.pem").unlink()
    with pytest.raises(ConfigError, match="HYDRA_DOCKER_TLS_DIR: .* lacks key.pem for tcp://build1.lan:2376") as caught:
        resolve_engines("tcp://build1.lan", tmp_path)
    assert "build1.lan_2376/" in (caught.value.hint or "")


def test_a_remote_engine_runs_agents_behind_a_gateway_also_among_several_engines(tmp_path: Path) -> None:
    tls_files(tmp_path)
    remote = HydraSettings(docker_host="tcp://build1.lan:2376", docker_tls_dir=tmp_path, data_home=tmp_path)
    sandbox = open_backend(remote, SecretMasker())  # built without connecting: the engine is asked at first use
    assert isinstance(sandbox.backend.egress, SidecarEgress)  # type: ignore[attr-defined]
    mixed = HydraSettings(
        docker_host="unix:///run/other-docker.sock,tcp://build1.lan:2376", docker_tls_dir=tmp_path, data_home=tmp_path
    )
    engines = open_backend(mixed, SecretMasker()).engines  # type: ignore[attr-defined]
    egress = {host: type(orchestrator.backend.egress).__name__ for host, orchestrator in engines.items()}
    assert egress == {"unix:///run/other-docker.sock": "HostSocketEgress", "tcp://build1.lan:2376": "SidecarEgress"}
    local = HydraSettings(docker_host="unix:///run/other-docker.sock", data_home=tmp_path)
    engine = runs_engine(local)
    assert engine is not None and engine.url == "unix:///run/other-docker.sock"
    assert runs_engine(HydraSettings(data_home=tmp_path)) is None


async def test_an_engine_that_may_be_remote_refuses_host_paths_before_it_is_asked(tmp_path: Path) -> None:
    tls_files(tmp_path)
    (engine,) = resolve_engines("tcp://build1.lan:2376", tmp_path)
    runtime = engine_runtime(engine)  # never connected: the refusals come first
    bind = Mount(type="bind", source="/srv/hydra-run/relay", target="/run/hydra", read_only=True)
    spec = ContainerSpec(image="hydra-agent:x", argv=["true"], user="1000:1000", mounts=[bind])
    with pytest.raises(
        UnsafeSpecError, match="/srv/hydra-run/relay would be bound from the machine of tcp://build1.lan:2376"
    ):
        await runtime.create(spec)
    overlay = {"type": "overlay", "device": "overlay", "o": "lowerdir=/srv/repo"}
    with pytest.raises(UnsafeSpecError, match="driver options .* would mount paths"):
        await runtime.create_volume("hydra-x", {}, overlay)
    local = engine_runtime(parse_docker_hosts("unix:///run/docker.sock")[0])
    assert type(local).__name__ == "DockerRuntime", "an engine of this machine keeps today's volumes"
