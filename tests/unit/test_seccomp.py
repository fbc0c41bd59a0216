"""Hydra's seccomp profile, checked without a kernel: what it refuses, how, and that every refusal is
documented with its reason (the Docker test in test_agent_image proves the kernel applies it)."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest

from hydra_sandbox.sandbox.seccomp import (
    ALLOWED,
    CLONE_NAMESPACE_FLAGS,
    DENIED,
    denied_calls,
    seccomp_profile,
    seccomp_profile_json,
)
from hydra_sandbox.settings import REPO_ROOT


def rules_for(name: str) -> list[dict[str, Any]]:
    return [rule for rule in seccomp_profile()["syscalls"] if name in rule["names"]]


def test_unlisted_calls_fail_and_only_native_64_bit_calls_are_allowed() -> None:
    profile = seccomp_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert all(arch["subArchitectures"] == [] for arch in profile["archMap"])  # no int 0x80 / compat entry


REFUSED = ["io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "unshare", "mount", "bpf", "keyctl",
           "userfaultfd", "perf_event_open", "open_by_handle_at"]  # fmt: skip


@pytest.mark.parametrize("name", REFUSED)
def test_a_call_an_agent_never_needs_is_refused_with_eperm(name: str) -> None:
    (rule,) = rules_for(name)
    assert rule["action"] == "SCMP_ACT_ERRNO" and rule["errnoRet"] == errno.EPERM


def test_no_call_is_both_allowed_and_denied() -> None:
    assert not set(ALLOWED) & denied_calls()
    assert {"clone", "clone3", "socket", "personality"}.isdisjoint(ALLOWED)  # only under their argument rules


def test_clone_is_allowed_only_without_namespace_flags_and_clone3_looks_unimplemented() -> None:
    (clone,) = rules_for("clone")
    (arg,) = clone["args"]
    assert arg["op"] == "SCMP_CMP_MASKED_EQ" and arg["valueTwo"] == 0
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert arg["value"] & flag == flag == CLONE_NAMESPACE_FLAGS & flag
    (clone3,) = rules_for("clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == errno.ENOSYS


def test_sockets_are_allowed_in_every_family_but_vsock() -> None:
    (rule,) = rules_for("socket")
    assert rule["args"] == [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]


def test_personality_cannot_turn_off_address_randomisation() -> None:
    values = {rule["args"][0]["value"] for rule in rules_for("personality")}
    assert 0x0040000 not in values and 0x0400000 not in values  # ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC
    assert 0xFFFFFFFF in values and 0 in values


def test_the_profile_text_is_the_profile() -> None:
    assert json.loads(seccomp_profile_json()) == seccomp_profile()


def test_every_denied_call_is_named_with_its_reason_in_the_security_doc() -> None:
    doc = (REPO_ROOT / "docs" / "security.md").read_text()
    missing = sorted(name for name in denied_calls() if f"`{name}`" not in doc)
    assert not missing, f"docs/security.md does not list {missing}"
    assert all(reason for _names, reason in DENIED.values())
