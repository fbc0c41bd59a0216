"""What makes a preview the change set that apply writes: its digest, the parent changes a child's files
carry, the spans masking hides from the reviewer, sizes, and the links and sizes apply refuses.

The preview of a session is computed against the host's files (the base layer), never against its
parents' layers: a child staged on its parent's layer writes whole files, so a file it touched carries
the parent's unapplied edits to the host, and the reviewer must see them (``includes_parent_changes``).

The digest covers every byte apply would write and every host file it would replace, so ``apply_diff``
with the digest of the preview the operator read refuses any other change set.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import PurePosixPath

from hydra_sandbox.beneath import Tree
from hydra_sandbox.policy import PathMatcher, Policy

MIB = 1024 * 1024
_MAX_LINK_HOPS = 40
_MASKED = re.compile(r"\[MASKED:([^\]\n]{1,64})\]")


def change_set_digest(entries: Iterable[tuple[str, ...]]) -> str:
    """The digest of a change set: per change (status, path, old path, the entry written, the host entry
    replaced, each described by content), in path order. Raw paths and bytes: masking never changes it."""
    digest = hashlib.sha256(b"hydra-change-set-v1\0")
    for record in sorted(entries, key=lambda e: (e[1], e[0])):
        digest.update(os.fsencode("\0".join(record)) + b"\n")
    return "sha256:" + digest.hexdigest()


def size_refusal(size: int, policy: Policy) -> str | None:
    """Why apply refuses a file of ``size`` bytes under ``policy``, or ``None``."""
    limit = policy.resources.max_apply_file_mb
    if size > limit * MIB:
        return (
            f"{size} bytes is over resources.max_apply_file_mb ({limit} MiB); "
            "apply never writes it (copy it yourself from the session's layer if you want it)"
        )
    return None


def describe_size(size: int | None, disk_bytes: int | None) -> str:
    if size is None:
        return "none"
    sparse = disk_bytes is not None and disk_bytes < size
    return f"{size} bytes" + (f" ({disk_bytes} allocated: sparse)" if sparse else "")


def hidden_by_mask(raw: str, masked: str) -> tuple[int, list[str]]:
    """Lines of ``raw`` that masking changed or swallowed, and the rules that did it."""
    if raw == masked:
        return 0, []
    kept = set(masked.splitlines())
    hidden = sum(1 for line in raw.splitlines() if line not in kept)
    rules = sorted({m.group(1) for m in _MASKED.finditer(masked)} - {m.group(1) for m in _MASKED.finditer(raw)})
    return max(hidden, 1), rules or ["masking"]


def _protected_reason(rel: str, matcher: PathMatcher) -> str | None:
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if matcher.is_protected(prefix) or matcher.is_protected(prefix + "/"):
            return f"points to the protected path {prefix}"
        if matcher.is_denied(prefix) or matcher.is_denied(prefix + "/"):
            return f"points to {prefix}, which the policy hides"
    return None


def link_refusal(rel: str, target: str, host: Tree | None, matcher: PathMatcher) -> str | None:
    """Why a link the agent made at ``rel`` may not be applied: it reaches a protected or hidden path,
    directly or through links already on the host (read through ``host``, never followed). ``None``
    when it may."""
    current = PurePosixPath(rel).parent / target
    for _ in range(_MAX_LINK_HOPS):
        resolved = os.path.normpath(str(current))
        if resolved in {".", ""} or resolved.startswith(".."):
            return None  # the workspace root itself, or outside it: judged by link_inside
        reason = _protected_reason(resolved, matcher)
        if reason is not None:
            return reason
        hop = _first_host_link(host, resolved) if host is not None else None
        if hop is None:
            return None
        link_rel, link_target, rest = hop
        if link_target.startswith("/"):
            return None  # a host link out of the workspace: apply never writes through it
        current = PurePosixPath(link_rel).parent / link_target / rest
    return f"more than {_MAX_LINK_HOPS} links to follow"


def _first_host_link(host: Tree, rel: str) -> tuple[str, str, str] | None:
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        try:
            st = host.lstat(prefix)
            if st is None:
                return None
            if stat.S_ISLNK(st.st_mode):
                return prefix, host.readlink(prefix), "/".join(parts[i:])
        except OSError:
            return None
    return None
