"""One server per data home. The server writes ``server.json`` (pid, transport, URL, token; mode 0600)
and holds an exclusive ``flock`` on ``server.lock``; CLI commands use it to find the running server
and never open its embedded Chroma store behind its back."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel

from hydra_sandbox.errors import HydraError
from hydra_sandbox.private_data import private_dir


class ServerInfo(BaseModel):
    pid: int
    transport: str
    url: str | None = None
    token: str | None = None


def _local_address(host: str) -> str:
    """The address a CLI on this machine calls: a server bound to every interface (0.0.0.0, as in the
    server image) answers on loopback, and its Host check refuses ``Host: 0.0.0.0`` with 421."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ServerLock:
    def __init__(self, data_home: Path, transport: str, host: str, port: int, token: str) -> None:
        self.data_home = data_home
        self.info = ServerInfo(
            pid=os.getpid(),
            transport=transport,
            url=f"http://{_local_address(host)}:{port}/mcp" if transport == "http" else None,
            token=token if transport == "http" else None,
        )
        self._fd: int | None = None

    def __enter__(self) -> ServerLock:
        private_dir(self.data_home)
        fd = os.open(self.data_home / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = running_server(self.data_home)
            pid = f" (pid {other.pid}, {other.transport})" if other else ""
            raise HydraError(
                f"another Hydra server{pid} already uses {self.data_home}",
                hint="stop it, or give this one its own HYDRA_DATA_HOME",
            ) from None
        self._fd = fd
        info_path = self.data_home / "server.json"
        tmp = info_path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(self.info.model_dump_json())
        os.replace(tmp, info_path)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        (self.data_home / "server.json").unlink(missing_ok=True)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def running_server(data_home: Path) -> ServerInfo | None:
    """The server that holds the lock on ``data_home``, or ``None`` when none runs."""
    lock_path = data_home / "server.lock"
    if not lock_path.exists():
        return None
    fd = os.open(lock_path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return ServerInfo.model_validate(json.loads((data_home / "server.json").read_text()))
            except (OSError, ValueError):
                return ServerInfo(pid=0, transport="unknown")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
