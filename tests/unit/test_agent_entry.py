"""The agent image's entry script (``hydra-agent-entry``), run here with a stand-in ``socat`` that records
its arguments and listens where the real one would: a TCP target (the Kubernetes gateway pod's IP) is
relayed as such, and a value that is not exactly ``IPv4:PORT`` (which could smuggle socat address
options) stops the container before any relay or the agent's command starts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ENTRY = Path(__file__).resolve().parents[2] / "hydra_sandbox" / "builtin" / "images" / "agent" / "hydra-agent-entry"

FAKE_SOCAT = f"""#!/bin/sh
printf '%s\\n' "$@" >> "$SOCAT_RECORD"
port=$(printf '%s' "$1" | sed -e 's/^TCP-LISTEN://' -e 's/,.*//')
exec {sys.executable} -c 'import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
time.sleep(30)' "$port" >/dev/null 2>&1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_entry(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The entry script with ``env`` running ``echo agent-started``; what it printed and socat's argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    socat = bin_dir / "socat"
    socat.write_text(FAKE_SOCAT)
    socat.chmod(0o755)
    record = tmp_path / "socat-argv"
    full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SOCAT_RECORD": str(record), **env}
    proc = subprocess.Popen(
        ["bash", str(ENTRY), "echo", "agent-started"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the stand-in relay it left behind
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, record.read_text().splitlines() if record.exists() else []


def test_a_tcp_target_is_relayed_from_the_loopback_port_before_the_agent_starts(tmp_path: Path) -> None:
    port = free_port()
    done, argv = run_entry(tmp_path, {"HYDRA_EGRESS_TARGET": "10.244.1.17:18080", "HYDRA_EGRESS_PORT": str(port)})
    assert done.returncode == 0 and done.stdout.strip() == "agent-started", done.stderr
    assert argv == [f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", "TCP:10.244.1.17:18080"]
    assert "did not listen" not in done.stderr


@pytest.mark.parametrize(
    "target",
    [
        "10.0.0.7:18080,bind=0.0.0.0",  # a socat address option
        "10.0.0.7:18080!!EXEC:sh",  # a second socat address
        "gateway.hydra.svc:18080",  # a name: resolved by whoever answers DNS
        "10.0.0.256:18080",
        "10.0.0.7:0",
        "10.0.0.7:65536",
        "010.0.0.7:18080",  # a leading zero: octal to some parsers
        "10.0.0.7",
        "[fd00::1]:18080",
        "10.0.0.7:18080\nEXEC:sh",
    ],
)
def test_a_target_that_is_not_exactly_ipv4_and_port_stops_the_container_before_anything_runs(
    tmp_path: Path, target: str
) -> None:
    done, argv = run_entry(tmp_path, {"HYDRA_EGRESS_TARGET": target, "HYDRA_EGRESS_PORT": str(free_port())})
    assert done.returncode == 64 and "HYDRA_EGRESS_TARGET must be IPv4:PORT" in done.stderr
    assert argv == [] and "agent-started" not in done.stdout


def test_a_target_and_a_socket_together_are_refused(tmp_path: Path) -> None:
    env = {"HYDRA_EGRESS_TARGET": "10.0.0.7:18080", "HYDRA_EGRESS_SOCKET": "/run/hydra/egress.sock"}
    done, argv = run_entry(tmp_path, {**env, "HYDRA_EGRESS_PORT": str(free_port())})
    assert done.returncode == 64 and "both set" in done.stderr and argv == []


def test_without_a_target_or_socket_the_command_runs_with_no_relay(tmp_path: Path) -> None:
    done, argv = run_entry(tmp_path, {})
    assert done.returncode == 0 and done.stdout.strip() == "agent-started" and argv == []


def run_entry_for(tmp_path: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    """The entry script with ``env`` running ``command`` (the stand-in socat as in :func:`run_entry`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "socat").write_text(FAKE_SOCAT)
    (bin_dir / "socat").chmod(0o755)
    full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SOCAT_RECORD": str(tmp_path / "socat-argv"), **env}
    proc = subprocess.Popen(
        ["bash", str(ENTRY), *command], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_beside_a_gateway_each_relayed_connection_retries_the_socket_for_the_wait(tmp_path: Path) -> None:
    port, sock = free_port(), tmp_path / "egress.sock"
    env = {"HYDRA_EGRESS_SOCKET": str(sock), "HYDRA_EGRESS_PORT": str(port), "HYDRA_EGRESS_WAIT_S": "3"}
    with socket.socket(socket.AF_UNIX) as served:
        served.bind(str(sock))
        done, argv = run_entry(tmp_path, env)
    assert done.returncode == 0 and done.stdout.strip() == "agent-started", done.stderr
    assert argv == [f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock},retry=300,interval=0.01"]


def test_without_a_wait_the_socket_is_connected_once_as_on_hydras_own_machine(tmp_path: Path) -> None:
    port, sock = free_port(), tmp_path / "egress.sock"
    done, argv = run_entry(tmp_path, {"HYDRA_EGRESS_SOCKET": str(sock), "HYDRA_EGRESS_PORT": str(port)})
    assert done.returncode == 0 and argv[1] == f"UNIX-CONNECT:{sock}"


def test_a_gateway_whose_socket_never_appears_stops_the_agent_with_a_message_naming_it(tmp_path: Path) -> None:
    sock = tmp_path / "egress.sock"
    env = {"HYDRA_EGRESS_SOCKET": str(sock), "HYDRA_EGRESS_PORT": str(free_port()), "HYDRA_EGRESS_WAIT_S": "1"}
    done = run_entry_for(tmp_path, env, "sleep", "50")  # the agent: ends only when stopped
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert f"the egress gateway did not serve {sock} within 1 s; stopping the agent" in done.stderr


def test_an_agent_whose_gateway_serves_after_it_started_is_left_running(tmp_path: Path) -> None:
    sock = tmp_path / "egress.sock"
    env = {"HYDRA_EGRESS_SOCKET": str(sock), "HYDRA_EGRESS_PORT": str(free_port()), "HYDRA_EGRESS_WAIT_S": "2"}
    serve_then_work = (  # the gateway's socket appears once the agent runs; the agent outlives the wait
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); time.sleep(3); print('done')"
    )
    done = run_entry_for(tmp_path, env, sys.executable, "-c", serve_then_work, str(sock))
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "did not serve" not in done.stderr


@pytest.mark.parametrize("wait", ["0", "601", "5,fork", "1.5", "-1", "05", "1e2", "3\n"])
def test_a_wait_that_is_not_whole_seconds_from_1_to_600_stops_the_container_before_anything_runs(
    tmp_path: Path, wait: str
) -> None:
    env = {"HYDRA_EGRESS_SOCKET": "/run/hydra/egress.sock", "HYDRA_EGRESS_PORT": str(free_port())}
    done, argv = run_entry(tmp_path, {**env, "HYDRA_EGRESS_WAIT_S": wait})
    assert done.returncode == 64 and "HYDRA_EGRESS_WAIT_S must be a whole number of seconds" in done.stderr
    assert argv == [] and "agent-started" not in done.stdout
