"""The byte framing of ``pods/exec`` (backends/kubernetes/exec_channels.py) against a scripted socket:
stdin frames, the v5 close, stdout/stderr/status demultiplexed, and the exec's final status read as an
exit code or refused."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from websocket import WebSocketConnectionClosedException

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.backends.kubernetes.exec_channels import (
    FRAME_BYTES,
    MAX_STATUS_BYTES,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_TEXT,
    V5_PROTOCOL,
    ExecChannels,
    exit_code,
    stdin_frames,
)
from tests.pod_exec_kit import status_frame


class ScriptedSocket:
    """Replies with ``frames`` in order (then a close), records what is sent."""

    def __init__(self, frames: list[tuple[int, bytes] | Exception]) -> None:
        self.frames = list(frames)
        self.sent: list[tuple[bytes, int]] = []

    def send(self, payload: bytes, opcode: int = OPCODE_TEXT) -> None:
        self.sent.append((payload, opcode))

    def recv_data_frame(self, control_frame: bool = False) -> tuple[int, Any]:
        if not self.frames:
            return OPCODE_CLOSE, SimpleNamespace(data=b"")
        frame = self.frames.pop(0)
        if isinstance(frame, Exception):
            raise frame
        return frame[0], SimpleNamespace(data=frame[1])

    def close(self) -> None:
        pass


def test_stdin_is_split_into_binary_frames_on_channel_zero() -> None:
    data = b"x" * (2 * FRAME_BYTES + 5)
    frames = list(stdin_frames(data))
    assert [len(f) for f in frames] == [FRAME_BYTES + 1, FRAME_BYTES + 1, 6]
    assert all(f[0] == 0 for f in frames) and b"".join(f[1:] for f in frames) == data
    sock = ScriptedSocket([])
    ExecChannels(sock, V5_PROTOCOL, "t").write_stdin(b"abc")
    assert sock.sent == [(b"\x00abc", OPCODE_BINARY)]


@pytest.mark.parametrize(
    ("protocol", "sent"), [(V5_PROTOCOL, [(b"\xff\x00", OPCODE_BINARY)]), ("v4.channel.k8s.io", [])]
)
def test_stdin_close_is_sent_only_where_the_protocol_has_it(protocol: str, sent: list[tuple[bytes, int]]) -> None:
    sock = ScriptedSocket([])
    ExecChannels(sock, protocol, "t").close_stdin()
    assert sock.sent == sent


def test_stdout_stderr_and_status_are_demultiplexed() -> None:
    frames: list[tuple[int, bytes] | Exception] = [
        (OPCODE_BINARY, b"\x01out-1"),
        (OPCODE_BINARY, b"\x02warn"),
        (OPCODE_BINARY, b""),  # empty: ignored
        (0x9, b"\x01ping"),  # a control frame: ignored
        (OPCODE_TEXT, b"\x01out-2"),
        (OPCODE_BINARY, status_frame(0)),
    ]
    channels = ExecChannels(ScriptedSocket(frames), V5_PROTOCOL, "t")
    assert list(channels.stdout()) == [b"out-1", b"out-2"]
    assert channels.stderr == b"warn" and exit_code(channels.status, "t") == 0


def test_a_non_zero_exit_is_read_from_the_status() -> None:
    channels = ExecChannels(ScriptedSocket([(OPCODE_BINARY, status_frame(2))]), V5_PROTOCOL, "t")
    assert channels.finish() == 2


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (json.dumps({"status": "Failure", "message": 'container "x" not found'}).encode(), 'container "x" not found'),
        (b"not json", "not JSON"),
        (b"[1]", "not an object"),
        (b"", "no status"),
    ],
)
def test_a_status_that_is_no_exit_code_is_an_error_naming_the_exec(status: bytes, said: str) -> None:
    with pytest.raises(RuntimeUnavailableError, match=f"exec in pod p: .*{said}"):
        exit_code(status, "exec in pod p")


def test_output_where_none_is_expected_is_refused() -> None:
    channels = ExecChannels(ScriptedSocket([(OPCODE_BINARY, b"\x01surprise")]), V5_PROTOCOL, "t")
    with pytest.raises(RuntimeUnavailableError, match="unexpected output"):
        channels.finish()


def test_stderr_is_kept_only_up_to_its_bound() -> None:
    channels = ExecChannels(ScriptedSocket([(OPCODE_BINARY, b"\x02" + b"e" * 100)]), V5_PROTOCOL, "t")
    assert list(channels.stdout(max_stderr=10)) == [] and channels.stderr == b"e" * 10


def test_an_endless_status_is_refused() -> None:
    frames: list[tuple[int, bytes] | Exception] = [(OPCODE_BINARY, b"\x03" + b"{" * (MAX_STATUS_BYTES + 1))]
    with pytest.raises(RuntimeUnavailableError, match="status is over"):
        ExecChannels(ScriptedSocket(frames), V5_PROTOCOL, "t").finish()


def test_a_connection_that_drops_before_the_status_is_an_error_not_a_success() -> None:
    frames: list[tuple[int, bytes] | Exception] = [(OPCODE_BINARY, b"\x01part"), WebSocketConnectionClosedException()]
    channels = ExecChannels(ScriptedSocket(frames), V5_PROTOCOL, "exec in pod p")
    with pytest.raises(RuntimeUnavailableError, match="exec in pod p: the exec's connection ended before its status"):
        list(channels.stdout())
