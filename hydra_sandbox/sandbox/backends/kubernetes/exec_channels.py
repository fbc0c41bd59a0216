"""The byte framing of ``pods/exec`` (Kubernetes' channel protocol over a websocket), read and written
one frame at a time so Hydra bounds what it takes.

Every websocket message is one frame: its first byte names the channel (0 stdin, 1 stdout, 2 stderr,
3 the exec's final :class:`Status` as JSON, 4 resize), the rest is data. ``v5.channel.k8s.io`` (Kubernetes
1.30 serves it by default) adds a close message, ``255`` then the channel, which ends the process's stdin
(``v4`` has none: there, a tar stream ends at its own end-of-archive blocks, which ``tar -x`` stops at).

The socket is the official client's (``kubernetes.stream``), used only through :class:`ExecSocket`'s
three calls, so the framing is tested with a fake socket and no cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from websocket import WebSocketException

from hydra_sandbox.errors import RuntimeUnavailableError

STDIN, STDOUT, STDERR, STATUS = 0, 1, 2, 3
CLOSE = 255
V5_PROTOCOL = "v5.channel.k8s.io"
OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE = 0x1, 0x2, 0x8
FRAME_BYTES = 1 << 20
"""Largest stdin frame Hydra sends."""
MAX_STATUS_BYTES = 64 << 10
"""A status (channel 3) longer than this is not a status."""


class ExecSocket(Protocol):
    """What Hydra uses of a websocket (``websocket.WebSocket`` has these)."""

    def send(self, payload: bytes, opcode: int = OPCODE_TEXT) -> Any: ...

    def recv_data_frame(self, control_frame: bool = False) -> tuple[int, Any]: ...

    def close(self) -> None: ...


def stdin_frames(data: bytes) -> Iterator[bytes]:
    """``data`` as stdin frames of at most :data:`FRAME_BYTES` (one frame for an empty ``data``: none)."""
    for start in range(0, len(data), FRAME_BYTES):
        yield bytes([STDIN]) + data[start : start + FRAME_BYTES]


def close_frame(channel: int) -> bytes:
    return bytes([CLOSE, channel])


def parse_frame(payload: bytes) -> tuple[int, bytes]:
    """``(channel, data)`` of one message; an empty message is channel -1 (ignored)."""
    if not payload:
        return -1, b""
    return payload[0], payload[1:]


def exit_code(status: bytes, what: str) -> int:
    """The process's exit code from the exec's final status (channel 3); a
    :class:`~hydra_sandbox.errors.RuntimeUnavailableError` naming ``what`` when it is not one."""
    try:
        found = json.loads(status or b"{}")
    except ValueError:
        raise RuntimeUnavailableError(f"{what}: the exec's status is not JSON: {status[:200]!r}") from None
    if not isinstance(found, dict):
        raise RuntimeUnavailableError(f"{what}: the exec's status is not an object: {status[:200]!r}")
    if found.get("status") == "Success":
        return 0
    if found.get("reason") == "NonZeroExitCode":
        causes = (found.get("details") or {}).get("causes") or []
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    break
    raise RuntimeUnavailableError(
        f"{what}: the exec failed: {found.get('message') or found.get('reason') or 'no status'}",
        hint="the pod or its container may be gone, or the account lacks pods/exec in the namespace",
    )


class ExecChannels:
    """One exec's channels over ``sock``: write stdin, then read stdout frame by frame."""

    def __init__(self, sock: ExecSocket, subprotocol: str | None, what: str) -> None:
        self.sock, self.subprotocol, self.what = sock, subprotocol, what
        self.status = b""
        self.stderr = b""
        self.closed = False

    def write_stdin(self, data: bytes) -> None:
        for frame in stdin_frames(data):
            self.sock.send(frame, OPCODE_BINARY)

    def close_stdin(self) -> None:
        """End the process's stdin where the protocol can (``v5``); a no-op on ``v4``."""
        if self.subprotocol == V5_PROTOCOL:
            self.sock.send(close_frame(STDIN), OPCODE_BINARY)

    def stdout(self, max_stderr: int = 64 << 10) -> Iterator[bytes]:
        """Stdout's data frame by frame until the socket closes; stderr (up to ``max_stderr``, the rest
        dropped) and the status are kept on the object."""
        while not self.closed:
            try:
                opcode, frame = self.sock.recv_data_frame(True)
            except (OSError, WebSocketException) as exc:
                self.closed = True
                raise RuntimeUnavailableError(
                    f"{self.what}: the exec's connection ended before its status ({exc or type(exc).__name__})",
                    hint="the pod, its node or the API server went away, or a read took over the socket's timeout",
                ) from None
            if opcode == OPCODE_CLOSE:
                self.closed = True
                break
            if opcode not in (OPCODE_TEXT, OPCODE_BINARY):
                continue
            data = frame.data if hasattr(frame, "data") else frame
            channel, chunk = parse_frame(bytes(data))
            if channel == STDOUT and chunk:
                yield chunk
            elif channel == STDERR:
                self.stderr = (self.stderr + chunk)[:max_stderr]
            elif channel == STATUS:
                self.status += chunk
                if len(self.status) > MAX_STATUS_BYTES:
                    raise RuntimeUnavailableError(f"{self.what}: the exec's status is over {MAX_STATUS_BYTES} bytes")

    def finish(self) -> int:
        """Drain to the end (stdout must be empty by then) and return the exit code."""
        for chunk in self.stdout():
            raise RuntimeUnavailableError(f"{self.what}: unexpected output ({len(chunk)} bytes)")
        return exit_code(self.status, self.what)
