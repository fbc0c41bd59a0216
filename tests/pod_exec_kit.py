"""A stand-in for ``pods/exec`` without a cluster: each exec runs its command with this machine's real
``tar`` and ``sh`` (the pod's workspace volume is a local folder standing in for ``/xfer``) and speaks
the channel protocol frame by frame, as the kubelet does behind the API server's websocket."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from hydra_sandbox.sandbox.backends.kubernetes.exec_channels import (
    CLOSE,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    STATUS,
    STDERR,
    STDIN,
    STDOUT,
    V5_PROTOCOL,
    ExecChannels,
)
from hydra_sandbox.sandbox.backends.kubernetes.manifests import TRANSFER_MOUNT


def status_frame(code: int) -> bytes:
    if code == 0:
        return bytes([STATUS]) + json.dumps({"metadata": {}, "status": "Success"}).encode()
    failure = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
    return bytes([STATUS]) + json.dumps(failure).encode()


class ProcessSocket:
    """A websocket whose far end is a local process: stdin frames feed it, its output comes back."""

    def __init__(self, argv: list[str], v5: bool) -> None:
        self.v5 = v5
        self.sent: list[bytes] = []
        self.frames: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers = [self._reader(self.proc.stdout, STDOUT), self._reader(self.proc.stderr, STDERR)]
        threading.Thread(target=self._finish, args=(readers,), daemon=True).start()

    def _reader(self, pipe: IO[bytes] | None, channel: int) -> threading.Thread:
        def read() -> None:
            assert pipe is not None
            for block in iter(lambda: pipe.read1(64 << 10), b""):  # type: ignore[attr-defined]
                self.frames.put((OPCODE_BINARY, bytes([channel]) + block))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def _finish(self, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        self.frames.put((OPCODE_BINARY, status_frame(self.proc.wait())))
        self.frames.put((OPCODE_CLOSE, b""))

    def send(self, payload: bytes, opcode: int = OPCODE_BINARY) -> None:
        self.sent.append(payload[:2])
        assert self.proc.stdin is not None
        if payload[0] == STDIN:
            self.proc.stdin.write(payload[1:])
            self.proc.stdin.flush()
        elif payload[0] == CLOSE and self.v5 and payload[1] == STDIN:
            self.proc.stdin.close()

    def recv_data_frame(self, control_frame: bool = False) -> tuple[int, Any]:
        opcode, data = self.frames.get(timeout=60)
        return opcode, SimpleNamespace(data=data)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


class LocalPod:
    """The pod's workspace volume as the folder ``volume``; ``execs`` records (pod, container, argv)."""

    def __init__(self, volume: Path, *, v5: bool = True) -> None:
        self.volume, self.v5 = volume, v5
        self.execs: list[tuple[str, str, list[str]]] = []
        self.sockets: list[ProcessSocket] = []
        volume.mkdir(parents=True, exist_ok=True)

    def open_exec(self, pod: str, container: str, argv: list[str]) -> ExecChannels:
        self.execs.append((pod, container, argv))
        local = [arg.replace(TRANSFER_MOUNT, str(self.volume)) for arg in argv]
        sock = ProcessSocket(local, self.v5)
        self.sockets.append(sock)
        return ExecChannels(sock, V5_PROTOCOL if self.v5 else "v4.channel.k8s.io", f"exec in pod {pod} ({container})")
