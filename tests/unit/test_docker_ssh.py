"""ssh:// engines without a network: the ``ssh`` command Hydra runs (never a prompt, only known host keys,
no forwarding, the destination never read as an option), the URL and HYDRA_DOCKER_SSH_CONFIG checks, and
each failure told apart from what a stand-in ``ssh`` says (the real one: tests/integration/test_ssh_engine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.docker_hosts import EngineConfig, parse_docker_hosts, resolve_engines
from hydra_sandbox.docker_ssh import DIAL, SshHttpAdapter, diagnose, ssh_argv
from hydra_sandbox.errors import ConfigError


def test_ssh_never_prompts_accepts_only_known_host_keys_and_forwards_nothing(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  StrictHostKeyChecking no\n")
    (engine,) = resolve_engines("ssh://ops@build2.lan:2222", None, config)
    argv = ssh_argv(engine, *DIAL)
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "ForwardAgent=no", "ClearAllForwardings=yes"} <= set(options)
    assert argv.index("-o") < argv.index("-F"), "options on the command line win over the file's"
    assert argv[argv.index("-F") + 1] == str(config)
    assert argv[argv.index("-l") + 1] == "ops" and argv[argv.index("-p") + 1] == "2222"
    assert argv[-5:] == ["--", "build2.lan", "docker", "system", "dial-stdio"]


def test_a_destination_that_looks_like_an_option_is_passed_after_the_end_of_options() -> None:
    engine = EngineConfig(url="ssh://x", scheme="ssh", host="-oProxyCommand=touch planted")
    argv = ssh_argv(engine, *DIAL)
    assert argv.index("--") == argv.index("-oProxyCommand=touch planted") - 1


@pytest.mark.parametrize("url", ["ssh://-oProxyCommand=touch@build2.lan", "ssh://-oProxyCommand=touch"])
def test_a_host_or_user_that_looks_like_an_option_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="starting with '-'") as refused:
        parse_docker_hosts(url)
    assert refused.value.message.startswith("HYDRA_DOCKER_HOST:")


def test_a_user_name_that_looks_like_an_option_would_still_only_be_the_value_of_l() -> None:
    engine = EngineConfig(url="ssh://x", scheme="ssh", host="build2.lan", user="-oProxyCommand=touch")
    argv = ssh_argv(engine, *DIAL)
    assert argv[argv.index("-l") + 1] == "-oProxyCommand=touch" and argv[argv.index("--") + 1] == "build2.lan"


def test_every_request_to_an_engine_shares_one_connection_pool() -> None:
    """docker-py's adapters keep a pool per request URL; over ssh that meant a new login for nearly every call."""
    (engine,) = parse_docker_hosts("ssh://build2.lan")
    adapter = SshHttpAdapter(engine, timeout=5)
    first = adapter.get_connection("http+docker://localhost/v1.41/containers/a/json")
    assert adapter.get_connection("http+docker://localhost/v1.41/images/json?all=1") is first
    adapter.close()


def test_without_a_config_file_or_user_or_port_ssh_uses_its_own_defaults() -> None:
    (engine,) = parse_docker_hosts("ssh://build2.lan")
    argv = ssh_argv(engine, *DIAL)
    assert "-F" not in argv and "-l" not in argv and "-p" not in argv


def test_a_password_in_an_ssh_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError, match="holds a password") as refused:
        parse_docker_hosts("ssh://ops:hunter2@build2.lan")
    assert "hunter2" not in str(refused.value) and refused.value.message.startswith("HYDRA_DOCKER_HOST:")


def test_a_missing_ssh_config_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HYDRA_DOCKER_SSH_CONFIG: .* is not a file") as refused:
        resolve_engines("ssh://build2.lan", None, tmp_path / "absent")
    assert "ssh -F" in (refused.value.hint or "")


def test_the_cli_refuses_a_missing_ssh_config_file_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_DOCKER_SSH_CONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    copied = CliRunner().invoke(app, ["images", "copy", "--no-gateway", "--to", "ssh://build2.lan"])
    assert isinstance(copied.exception, ConfigError), copied.output
    assert copied.exception.message.startswith("HYDRA_DOCKER_SSH_CONFIG: ")


def fake_ssh(folder: Path, stderr: str, code: int) -> None:
    """An ``ssh`` on PATH that says ``stderr`` and exits ``code``, as the real one does for each failure."""
    folder.mkdir(exist_ok=True)
    script = folder / "ssh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("stderr", "code", "says", "hint"),
    [
        (
            "No ED25519 host key is known for [h]:2222 and you have requested strict checking. "
            "Host key verification failed.",
            255,
            "host key is not in known_hosts",
            "ssh-keyscan -p 2222 build2.lan",
        ),
        ("WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!", 255, "not the one known_hosts holds", "fingerprint"),
        ("ops@build2.lan: Permission denied (publickey).", 255, "refused every key", "authorized_keys"),
        ("bash: line 1: docker: command not found", 127, "docker CLI is not on the far side", "install the docker CLI"),
        (
            "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
            1,
            "cannot reach its Docker daemon",
            "docker group",
        ),
        ("ssh: connect to host build2.lan port 2222: Connection refused", 255, "no ssh server answers", "sshd"),
        ("something else entirely", 255, "ssh failed", "docker version"),
    ],
    ids=["unknown-host-key", "changed-host-key", "no-key", "no-docker-cli", "no-daemon-rights", "refused", "other"],
)
def test_each_ssh_failure_is_named_with_the_setting_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, code: int, says: str, hint: str
) -> None:  # fmt: skip
    fake_ssh(tmp_path / "bin", stderr, code)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (engine,) = parse_docker_hosts("ssh://ops@build2.lan:2222")
    error = diagnose(engine, "the API did not answer")
    assert error.message.startswith("HYDRA_DOCKER_HOST: cannot reach ssh://ops@build2.lan:2222: ")
    assert says in error.message and stderr.split()[-1] in error.message
    assert hint in (error.hint or "")


def test_no_ssh_client_installed_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (engine,) = parse_docker_hosts("ssh://build2.lan")
    error = diagnose(engine, "the API did not answer")
    assert "ssh client, which is not installed" in error.message and "OpenSSH" in (error.hint or "")


def test_working_ssh_with_a_silent_api_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(tmp_path / "bin", "", 0)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (engine,) = parse_docker_hosts("ssh://build2.lan")
    assert "ssh works but the Docker API did not answer: boom" in diagnose(engine, "boom").message
