"""The second engine (tests/remote_engine.py) reached over ``ssh://``, for the ssh tests (marked ``docker``):
an OpenSSH server of the test's own on 127.0.0.1 (a free port, its own host key, configuration and pid file,
key-only logins) whose sessions have ``DOCKER_HOST`` set to the second engine's socket, so
``docker system dial-stdio`` there reaches that engine, which sees none of Hydra's files.

Keys are made by the test in its own folder: ``hydra`` (authorised), ``nodocker`` (authorised, its sessions
get a PATH without the docker CLI, as on a machine that lacks it) and ``stranger`` (not authorised). Each
client configuration (``HYDRA_DOCKER_SSH_CONFIG``) names one key and one known_hosts file: the one holding
the server's host key, or an empty one. Nothing of the machine's own ssh set-up is read or written.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from hydra_sandbox.docker_hosts import EngineConfig, resolve_engines
from tests.remote_engine import RemoteEngine

START_DEADLINE_S = 20.0
SSHD = "/usr/sbin/sshd"


class SshEngine(BaseModel):
    """The second engine behind a test sshd: its URL and the folder of keys and client configurations."""

    model_config = ConfigDict(frozen=True)

    url: str
    root: Path

    def config(self, key: str = "hydra", *, known: bool = True, multiplex: bool = False) -> Path:
        """A client configuration offering ``key`` only, trusting the server's host key when ``known``;
        ``multiplex``: connections share one ssh connection (OpenSSH's ControlMaster, kept 30 s)."""
        path = self.root / f"config-{key}-{'known' if known else 'unknown'}{'-mux' if multiplex else ''}"
        hosts = self.root / ("known_hosts" if known else "empty_known_hosts")
        shared = f"  ControlMaster auto\n  ControlPath {self.root}/cm-%C\n  ControlPersist 30\n" if multiplex else ""
        path.write_text(
            "Host *\n"
            f"  IdentityFile {self.root / key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n" + shared
        )
        return path

    def engine(self, key: str = "hydra", *, known: bool = True, multiplex: bool = False) -> EngineConfig:
        return resolve_engines(self.url, None, self.config(key, known=known, multiplex=multiplex))[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def _sshd_config(root: Path, port: int, docker_socket: str) -> str:
    return "\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "AllowUsers root",
        "StrictModes no",  # its files are under /tmp, which is world-writable
        "UsePAM no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        f"SetEnv DOCKER_HOST={docker_socket}",
        "",
    ])  # fmt: skip


def _wait_for_banner(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the test sshd exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            if sock.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the test sshd did not answer in {START_DEADLINE_S:.0f} s:\n{log.read_text()[-2000:]}")


@contextlib.contextmanager
def ssh_front(engine: RemoteEngine) -> Iterator[SshEngine]:
    """An sshd in front of ``engine``; stopped and its folder removed when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="hssh-", dir="/tmp"))
    port = _free_port()
    host_key = _keygen(root / "host_key")
    hydra, nodocker = _keygen(root / "hydra"), _keygen(root / "nodocker")
    _keygen(root / "stranger")
    no_docker = root / "no-docker"
    no_docker.write_text('#!/bin/sh\nPATH=/nonexistent exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
    no_docker.chmod(0o755)
    (root / "authorized_keys").write_text(f'{hydra}\ncommand="{no_docker}" {nodocker}\n')
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key.split()[:2])}\n")
    (root / "empty_known_hosts").write_text("")
    (root / "sshd_config").write_text(_sshd_config(root, port, engine.socket_url))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = root / "sshd.log"
    with log.open("wb") as out:
        argv = [SSHD, "-D", "-e", "-f", str(root / "sshd_config")]
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_banner(process, port, log)
        yield SshEngine(url=f"ssh://root@127.0.0.1:{port}", root=root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_engine(remote_engine: RemoteEngine) -> Iterator[SshEngine]:
    """The second engine behind a test sshd, one per test session; skipped, with the reason, without sshd."""
    if not Path(SSHD).is_file() or shutil.which("ssh") is None:
        pytest.skip("ssh-engine tests need OpenSSH's server (sshd) and client (ssh): apt-get install openssh-server")
    with ssh_front(remote_engine) as front:
        yield front
