"""Docker's API over ``ssh://`` engines: each HTTP connection is one ``ssh`` process running
``docker system dial-stdio`` on the engine's machine, joined to Hydra by a socket pair, so docker-py sees an
ordinary socket (as for ``unix://``) and every stream (logs, attach, archives) works unchanged.

Hydra starts ``ssh`` itself instead of docker-py's ssh transport, which needs paramiko, and, shelling out,
lets the user's configuration decide: an unknown host key would be accepted by ``StrictHostKeyChecking=no``
or ``accept-new`` there, and a password or passphrase prompt would hang a server. Here:

* ``BatchMode=yes`` (never a prompt) and ``StrictHostKeyChecking=yes``: only a host key already in
  ``known_hosts`` is accepted; command-line options win over any configuration file;
* no agent, X11 or port forwarding and no local command, whatever the configuration says;
* ``HYDRA_DOCKER_SSH_CONFIG``, when set, is the only configuration file read (``ssh -F``): keys, known hosts,
  jump hosts for Hydra's engines alone.

When an engine does not answer, :func:`diagnose` runs one ``ssh`` with ``docker version`` and turns what
ssh and the far side said into an error naming ``HYDRA_DOCKER_HOST`` and what to do (the host key, the key,
the docker CLI or its socket on the far side, the address).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from typing import Any

import docker
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
from docker.transport.basehttpadapter import BaseHTTPAdapter

from hydra_sandbox.docker_hosts import HOST_VARIABLE, SSH_CONFIG_VARIABLE, EngineConfig
from hydra_sandbox.errors import RuntimeUnavailableError

CONNECT_TIMEOUT_S = 20
PROBE_TIMEOUT_S = 60.0
FIXED_OPTIONS = (
    "BatchMode=yes",
    "StrictHostKeyChecking=yes",
    "ForwardAgent=no",
    "ForwardX11=no",
    "ClearAllForwardings=yes",
    "PermitLocalCommand=no",
    f"ConnectTimeout={CONNECT_TIMEOUT_S}",
)
DIAL = ("docker", "system", "dial-stdio")
POOL_SIZE = 16
"""Connections kept open to one engine: as many as the Docker runtime's threads (``max_threads``)."""


def ssh_argv(engine: EngineConfig, *remote: str) -> list[str]:
    """The ``ssh`` command that runs ``remote`` on ``engine``'s machine, with Hydra's fixed options."""
    argv = ["ssh", "-T"]
    for option in FIXED_OPTIONS:
        argv += ["-o", option]
    if engine.ssh_config is not None:
        argv += ["-F", str(engine.ssh_config)]
    if engine.user:
        argv += ["-l", engine.user]
    if engine.port:
        argv += ["-p", str(engine.port)]
    return [*argv, "--", engine.host, *remote]


class _SshConnection(urllib3.connection.HTTPConnection):
    def __init__(self, argv: list[str], timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._argv = argv
        self._socket_timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                self._argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for Hydra does not cut a request mid-way
            )  # fmt: skip
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(self._socket_timeout)
        self.sock = ours

    def close(self) -> None:
        super().close()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()
                process.wait()


class _SshConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, argv: list[str], timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self._argv = argv
        self._socket_timeout = timeout

    def _new_conn(self) -> _SshConnection:
        return _SshConnection(self._argv, self._socket_timeout)


class SshHttpAdapter(BaseHTTPAdapter):  # type: ignore[misc]
    """requests' adapter for one ssh engine: one pool of ``docker system dial-stdio`` connections for every
    request. (docker-py's adapters keep a pool per request URL, path included: cheap on a Unix socket, an
    ssh handshake for nearly every call here.)"""

    def __init__(self, engine: EngineConfig, timeout: float, max_pool_size: int = POOL_SIZE) -> None:
        self.pool = _SshConnectionPool(ssh_argv(engine, *DIAL), timeout, max_pool_size)
        super().__init__()

    def get_connection(self, url: str, proxies: Any = None) -> _SshConnectionPool:
        return self.pool

    def close(self) -> None:
        super().close()
        self.pool.close()

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        return request.path_url


def mount_ssh(api: docker.APIClient, engine: EngineConfig, timeout: float) -> None:
    """Point ``api`` (made for a ``unix://`` URL with a fixed version, so it has not connected) at
    ``engine`` over ssh, then ask the engine for its API version as docker-py's ``auto`` does."""
    adapter = SshHttpAdapter(engine, timeout)
    api.mount("http+docker://", adapter)
    api._custom_adapter = adapter
    api.base_url = "http+docker://localhost"
    api._version = api._retrieve_server_version()


def _cause(engine: EngineConfig, said: str, code: int) -> tuple[str, str]:
    """What went wrong, and what to do, from ssh's and the far side's words."""
    where = f"{engine.host}" + (f" port {engine.port}" if engine.port else "")
    known_hosts = f"known_hosts (or the UserKnownHostsFile of {SSH_CONFIG_VARIABLE})"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in said:
        return (
            "its ssh host key is not the one known_hosts holds for it",
            "if the machine's key really changed, check the new fingerprint out of band and replace its line in "
            + known_hosts,
        )
    if "Host key verification failed" in said or "host key is known" in said:
        return (
            "its ssh host key is not in known_hosts, and Hydra accepts no unknown host key",
            f"check the engine's host key fingerprint out of band, then add it to {known_hosts}: "
            f"`ssh-keyscan{' -p ' + str(engine.port) if engine.port else ''} {engine.host}` prints the line",
        )
    if "Permission denied" in said and "docker" not in said.lower():
        return (
            "the ssh server refused every key offered (Hydra never types a password)",
            f"put a key of this machine (ssh-agent, ~/.ssh, or IdentityFile in {SSH_CONFIG_VARIABLE}) in the "
            "remote user's authorized_keys, and name that user in the URL (ssh://USER@HOST)",
        )
    if code == 127 or "command not found" in said or "docker: not found" in said:
        return (
            "the docker CLI is not on the far side (`docker system dial-stdio` carries the API over ssh)",
            "install the docker CLI on the engine's machine, on the PATH of a non-interactive ssh session",
        )
    if "Cannot connect to the Docker daemon" in said or "docker.sock" in said:
        return (
            "the remote user cannot reach its Docker daemon",
            "start dockerd there and let the remote user use its socket (the docker group), or set DOCKER_HOST "
            "for that user's ssh sessions",
        )
    if any(text in said for text in ("Connection refused", "Could not resolve", "timed out", "No route")):
        return (f"no ssh server answers at {where}", "check the host and port in the URL, and that sshd runs there")
    return ("ssh failed", f"run `{' '.join(ssh_argv(engine, 'docker', 'version'))}` to see why")


def diagnose(engine: EngineConfig, failure: object) -> RuntimeUnavailableError:
    """Why ``engine`` does not answer over ssh: one ``ssh … docker version`` run, its words classified."""
    try:
        probe = subprocess.run(
            ssh_argv(engine, "docker", "version", "--format", "{{.Server.Version}}"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
        )  # fmt: skip
    except FileNotFoundError:
        return RuntimeUnavailableError(
            f"{HOST_VARIABLE}: {engine.url} is reached through the ssh client, which is not installed",
            hint="install OpenSSH's client (the `ssh` command) on this machine",
        )
    except subprocess.TimeoutExpired:
        return RuntimeUnavailableError(
            f"{HOST_VARIABLE}: {engine.url} did not answer over ssh in {PROBE_TIMEOUT_S:.0f} s",
            hint="check the host and port in the URL, and that sshd runs there",
        )
    said = " ".join((probe.stderr + probe.stdout).split())
    if probe.returncode == 0:
        what, hint = f"ssh works but the Docker API did not answer: {failure}", "`hydra doctor` checks each engine"
    else:
        what, hint = _cause(engine, said, probe.returncode)
    tail = said[-400:] or f"exit code {probe.returncode}"
    return RuntimeUnavailableError(f"{HOST_VARIABLE}: cannot reach {engine.url}: {what} (ssh said: {tail})", hint=hint)
