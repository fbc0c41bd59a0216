"""The kernel surface of a real agent container: Hydra's seccomp profile refuses the calls an agent never
needs, core dumps cannot be turned on, and the mounts are what docs/security.md says."""

from __future__ import annotations

import pytest

from tests.integration.test_agent_image import run_in_sandbox

pytestmark = pytest.mark.docker

PROBE = r"""
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(128)
calls = {
    "io_uring_setup": (425, 8, buf), "ptrace": (101, 16, 1, 0, 0), "unshare_user": (272, 0x10000000),
    "clone_newuser": (56, 0x10000000 | 17, 0, 0, 0, 0), "keyctl": (250, 0, 0), "bpf": (321, 0, 0, 0),
    "userfaultfd": (323, 0), "personality_norandom": (135, 0x0040000),
}
for name, args in calls.items():
    result = libc.syscall(*args)
    print(name, result, errno.errorcode.get(ctypes.get_errno(), "none") if result == -1 else "allowed")
try:
    socket.socket(40, socket.SOCK_STREAM)
    print("vsock 0 allowed")
except OSError as exc:
    print("vsock -1", errno.errorcode.get(exc.errno))
"""


async def test_io_uring_and_other_refused_calls_fail_inside_an_agent_container(agent_image: str) -> None:
    outcome, out = await run_in_sandbox(agent_image, f"python3 - <<'EOF'\n{PROBE}\nEOF\necho fork-$(echo ok)")
    results = {line.split()[0]: line.split()[1:] for line in out.splitlines() if len(line.split()) == 3}
    assert set(results) == {
        "io_uring_setup", "ptrace", "unshare_user", "clone_newuser", "keyctl", "bpf", "userfaultfd",
        "personality_norandom", "vsock",
    }, out  # fmt: skip
    for name, (result, err) in results.items():
        assert result == "-1" and err in {"EPERM", "ENOSYS"}, f"{name}: {result} {err}"
    assert outcome.status == "completed" and "fork-ok" in out  # ordinary processes still start


async def test_core_dumps_cannot_be_enabled_and_none_is_written(agent_image: str) -> None:
    script = (
        "cd /tmp; echo soft=$(ulimit -c) hard=$(ulimit -Hc); "
        "(ulimit -c unlimited) 2>/dev/null && echo raised || echo refused; "
        "(ulimit -c unlimited 2>/dev/null; python3 -c 'import os; os.abort()') 2>/dev/null; "
        "echo cores=$(ls /tmp | grep -c core)"
    )
    _, out = await run_in_sandbox(agent_image, script)
    assert "soft=0 hard=0" in out and "refused" in out and "raised" not in out, out
    assert "cores=0" in out, out


async def test_mounts_are_what_the_docs_say(agent_image: str) -> None:
    script = (
        "awk '$2==\"/tmp\"||$2==\"/home/agent\"||$2==\"/\" {print $2, $4}' /proc/mounts; "
        "printf '#!/bin/sh\\necho ran\\n' > /tmp/x.sh; chmod +x /tmp/x.sh; /tmp/x.sh 2>&1 | grep -c denied; "
        "sh /tmp/x.sh"
    )
    _, out = await run_in_sandbox(agent_image, script)
    options = {line.split()[0]: set(line.split()[1].split(",")) for line in out.splitlines() if line.startswith("/")}
    assert "ro" in options["/"], out
    for target in ("/tmp", "/home/agent"):
        assert {"rw", "nosuid", "nodev", "noexec"} <= options[target], (target, out)
    assert out.split()[-2:] == ["1", "ran"], out  # not executable directly, still readable by a shell
