"""A delegation chain driven by the agents themselves: at every level, each field is widened once.

The operator spawns a root session under the ``deep`` policy (max_depth 3). Each level's session then
spawns the next as ``Agent(session_id=<itself>)``, the way its MCP token would, through
the AgentManager over the FakeSandbox (sessions are held running by a gate). Before its allowed,
narrower spawn, each level tries to widen every field of its policy: directory.allow, network.mode,
network.allow_domains, each resource, delegation.max_depth and max_children, working_dir, a parent
outside its subtree (a sibling, an ancestor), an unknown policy base, and profiles whose policy or
limits are wider. Every attempt must be refused with a message naming the field; the great-grandchild
(max_depth 0) must not be able to spawn at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hydra_sandbox.authority import OPERATOR, Agent, Principal
from hydra_sandbox.errors import ConfigError, HydraError, PolicyViolation
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.spawning import SpawnFlags, SpawnPolicy, SpawnRequest
from hydra_sandbox.policy import DirectoryPolicy, NetworkPolicy
from tests.fake_sandbox import FakeSandbox
from tests.manager_kit import manager_over

pytestmark = pytest.mark.adversarial

RESULTS = Path(__file__).parent / ".results" / "test_escape_delegation_chain.json"

DEEP_POLICY = """
name: deep
description: Root of the adversarial chain.
directory: {allow: ["src/**", "docs/**"], deny: ["**/*.pem"]}
network: {mode: model-only, allow_domains: [pypi.org, files.pythonhosted.org, example.org]}
resources: {cpus: 4.0, memory_mb: 8192, pids: 1024, timeout_s: 7200, max_output_bytes: 104857600,
  max_apply_file_mb: 400}
delegation: {max_depth: 3, max_children: 6}
"""
WIDE_POLICY = """
name: wide
description: Wider than the chain in every field.
directory: {allow: ["**"]}
network: {mode: allowlist, allow_domains: [evil.example]}
resources: {cpus: 64.0, memory_mb: 262144, pids: 65536, timeout_s: 86400, max_output_bytes: 1073741824,
  max_apply_file_mb: 1048576}
delegation: {max_depth: 16, max_children: 256}
"""
PROFILE = """
id: {id}
title: t
description: d
persona: p
system_prompt: s
policy: {policy}
limits: {limits}
"""

# What each level asks for: strictly inside its parent's policy.
LEVELS: list[dict[str, Any]] = [
    {
        "allow": ["src/**"],
        "network": ("model-only", ["pypi.org", "files.pythonhosted.org"]),
        "resources": {
            "cpus": 3.0,
            "memory_mb": 4096,
            "pids": 512,
            "timeout_s": 3600,
            "max_output_bytes": 41943040,
            "max_apply_file_mb": 300,
        },
        "delegation": {"max_depth": 2, "max_children": 4},
    },
    {
        "allow": ["src/pkg/**"],
        "network": ("model-only", ["pypi.org"]),
        "resources": {
            "cpus": 2.0,
            "memory_mb": 2048,
            "pids": 256,
            "timeout_s": 1800,
            "max_output_bytes": 20971520,
            "max_apply_file_mb": 200,
        },
        "delegation": {"max_depth": 1, "max_children": 2},
    },
    {
        "allow": ["src/pkg/core/**"],
        "network": ("none", []),
        "resources": {
            "cpus": 1.0,
            "memory_mb": 1024,
            "pids": 128,
            "timeout_s": 900,
            "max_output_bytes": 10485760,
            "max_apply_file_mb": 100,
        },
        "delegation": {"max_depth": 0, "max_children": 1},
    },
]
# A path the parent may not see at each level, and a domain the parent may not use (the first one
# is nobody's; the next ones belonged to an ancestor but not to the parent).
FOREIGN_GLOB = ["lib/**", "docs/**", "src/other/**"]
FOREIGN_DOMAIN = ["evil.example", "example.org", "files.pythonhosted.org"]
_NETWORK_ORDER = ["none", "model-only", "allowlist"]


@dataclass
class Attempt:
    level: int
    field: str
    tried: str
    request: SpawnRequest
    expect: str  # a regular expression the refusal must contain (it names the field)


def build(tmp_path: Path) -> AgentManager:
    policies, profiles = tmp_path / "policies", tmp_path / "profiles"
    policies.mkdir()
    profiles.mkdir()
    (policies / "deep.yaml").write_text(DEEP_POLICY)
    (policies / "wide.yaml").write_text(WIDE_POLICY)
    for pid, policy, limits in [
        ("deep_coder", "deep", "{}"),
        ("wide_coder", "wide", "{}"),
        ("greedy_coder", "deep", "{cpus: 64.0, memory_mb: 262144}"),
    ]:
        (profiles / f"{pid}.yaml").write_text(PROFILE.format(id=pid, policy=policy, limits=limits))
    return manager_over(tmp_path, FakeSandbox(), profile_dirs=[profiles], policy_dirs=[policies], max_concurrent=16)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[AgentManager]:
    mgr = build(tmp_path)
    assert isinstance(mgr.sandbox, FakeSandbox)
    mgr.sandbox.gate = asyncio.Event()  # sessions stay running: they spawn while they work
    await mgr.start()
    yield mgr
    mgr.sandbox.gate.set()
    await mgr.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    (path / "src" / "pkg" / "core").mkdir(parents=True)
    (path / "docs").mkdir()
    (path / "lib").mkdir()
    (path / "src" / "pkg" / "core" / "a.py").write_text("a = 1\n")
    return path


def allowed_request(level: int, **update: Any) -> SpawnRequest:
    spec = LEVELS[level - 1]
    mode, domains = spec["network"]
    request = SpawnRequest(
        profile_id="deep_coder",
        working_dir="/workspace",
        custom_prompt=f"level {level}",
        policy=SpawnPolicy(
            directory=DirectoryPolicy(allow=spec["allow"]),
            network=NetworkPolicy(mode=mode, allow_domains=domains),
            resources=dict(spec["resources"]),
            delegation=dict(spec["delegation"]),
        ),
    )
    return request.model_copy(update=update)


def _with_policy(level: int, **changes: Any) -> SpawnRequest:
    request = allowed_request(level)
    assert request.policy is not None
    return request.model_copy(update={"policy": request.policy.model_copy(update=changes)})


def attempts_at(level: int, parent: Any, others: dict[str, str], outside_dir: Path, workdir: Path) -> list[Attempt]:
    """Every widening a session at ``level - 1`` can try when it spawns ``level``."""
    pol = parent.policy
    out: list[Attempt] = []

    def add(field: str, tried: str, request: SpawnRequest, expect: str | None = None) -> None:
        out.append(Attempt(level, field, tried, request, expect or field.replace(".", r"\.")))

    spec = LEVELS[level - 1]
    for glob in ["**", "*", FOREIGN_GLOB[level - 1], "*.py"]:
        add(
            "directory.allow",
            f"allow {glob!r} under {pol.directory.allow}",
            _with_policy(level, directory=DirectoryPolicy(allow=[glob])),
        )
    add(
        "directory.allow",
        "a second glob outside the parent next to an allowed one",
        _with_policy(level, directory=DirectoryPolicy(allow=[*spec["allow"], FOREIGN_GLOB[level - 1]])),
    )
    for mode in _NETWORK_ORDER[_NETWORK_ORDER.index(pol.network.mode) + 1 :]:
        add(
            "network.mode",
            f"{mode} above {pol.network.mode}",
            _with_policy(level, network=NetworkPolicy(mode=mode, allow_domains=list(pol.network.allow_domains))),
        )
    # A wildcard ("*.pypi.org") is not even a valid policy any more: NetworkPolicy refuses any name that
    # is not plain LDH (test_egress_rules::test_policy_domains_refuse_anything_but_an_ldh_name).
    for domain in [FOREIGN_DOMAIN[level - 1], "sub.pypi.org"]:
        domains = [*pol.network.allow_domains, domain]
        add(
            "network.allow_domains",
            f"{domain} not in {pol.network.allow_domains}",
            _with_policy(level, network=NetworkPolicy(mode=pol.network.mode, allow_domains=domains)),
        )
    for key, value in pol.resources.model_dump().items():
        if value is None:  # no limit (max_model_tokens, disk_mb): nothing is wider; its narrowing is in test_policy
            continue
        bigger = value + (0.5 if isinstance(value, float) else 1)
        add(
            f"resources.{key}",
            f"{bigger} above {value}",
            _with_policy(level, resources={**spec["resources"], key: bigger}),
        )
    # the run flags narrow the policy's numbers too (without an explicit policy.resources, which wins)
    no_numbers = _with_policy(level, resources=None)
    for key in ["timeout_s", "max_output_bytes"]:
        flags = SpawnFlags.model_validate({key: getattr(pol.resources, key) + 1})
        add(f"resources.{key}", f"flags.{key} above the parent's", no_numbers.model_copy(update={"flags": flags}))
    for key in ["max_depth", "max_children"]:
        current = getattr(pol.delegation, key)
        # a child starts one level down; asking for the parent's own depth is already wider
        wanted = current if key == "max_depth" else current + 1
        add(
            f"delegation.{key}",
            f"{wanted} (parent has {current})",
            _with_policy(level, delegation={**spec["delegation"], key: wanted}),
        )
    add("delegation.allow_widening", "allow_widening=1", _with_policy(level, delegation={"allow_widening": 1}))
    for path in [outside_dir, workdir / "src", Path("/workspace/..")]:
        add("working_dir", f"working_dir {path}", allowed_request(level, working_dir=str(path)))
    for name, sid in others.items():
        add("parent_session_id", f"parent is the caller's {name} {sid}", allowed_request(level, parent_session_id=sid))
    add(
        "policy.base",
        "base 'no_such_policy'",
        _with_policy(level, base="no_such_policy"),
        r"policy 'no_such_policy' not found",
    )
    add(
        "policy.base",
        "base 'wide' (wider in every field)",
        _with_policy(level, base="wide"),
        r"directory\.allow|network\.",
    )
    add(
        "profile.policy",
        "profile wide_coder (policy wide)",
        allowed_request(level, profile_id="wide_coder", policy=None),
        r"directory\.allow|network\.",
    )
    add(
        "profile.limits",
        "profile greedy_coder (limits above the parent's)",
        allowed_request(level, profile_id="greedy_coder", policy=None),
        r"resources\.(cpus|memory_mb)",
    )
    return out


OUTCOMES: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    RESULTS.parent.mkdir(exist_ok=True)
    gave_way = [o for o in OUTCOMES if o["result"] != "refused" and o["field"] != "allowed"]
    RESULTS.write_text(
        json.dumps(
            {
                "scenario": "agent-driven delegation chain root -> child -> grandchild -> great-grandchild, "
                "every policy field widened at every level",
                "tried": sorted({f"{o['field']}: {o['tried']}" for o in OUTCOMES}),
                "cases": len([o for o in OUTCOMES if o["field"] != "allowed"]),
                "per_level": {
                    str(level): len([o for o in OUTCOMES if o["level"] == level and o["field"] != "allowed"])
                    for level in sorted({o["level"] for o in OUTCOMES})
                },
                "allowed_spawns": len([o for o in OUTCOMES if o["field"] == "allowed" and o["result"] == "spawned"]),
                "result": "held" if not gave_way and OUTCOMES else f"{len(gave_way)} attempt(s) gave way",
                "failures": gave_way,
            },
            indent=2,
        )
    )


async def _try(manager: AgentManager, caller: Principal, attempt: Attempt) -> dict[str, Any]:
    outcome: dict[str, Any] = {"level": attempt.level, "field": attempt.field, "tried": attempt.tried}
    try:
        result = await manager.spawn(attempt.request, caller)
    except (PolicyViolation, ConfigError) as exc:
        outcome.update(result="refused", message=str(exc))
    except HydraError as exc:  # refused, but not as a policy or config error
        outcome.update(result="refused-other", message=str(exc))
    else:
        outcome.update(result="spawned", session=result.session["session_id"])
    OUTCOMES.append(outcome)
    return outcome


async def test_every_widening_is_refused_at_every_level_of_an_agent_driven_chain(
    manager: AgentManager, workdir: Path, tmp_path: Path
) -> None:
    import re

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    stranger = (
        await manager.spawn(SpawnRequest(profile_id="deep_coder", working_dir=str(workdir)), principal=OPERATOR)
    ).session
    root = (
        await manager.spawn(SpawnRequest(profile_id="deep_coder", working_dir=str(workdir)), principal=OPERATOR)
    ).session
    chain = [root["session_id"]]
    siblings: list[str] = []
    failures: list[str] = []
    for level in range(1, len(LEVELS) + 1):
        caller = Agent(session_id=chain[-1])
        parent = manager.get(chain[-1], principal=OPERATOR)
        others = {"unrelated root": stranger["session_id"]}
        if siblings:
            others["sibling"] = siblings[-1]
        if len(chain) >= 2:
            others["own parent"] = chain[-2]
            others["root"] = chain[0]
        for attempt in attempts_at(level, parent, others, outside, workdir):
            outcome = await _try(manager, caller, attempt)
            if outcome["result"] != "refused" or not re.search(attempt.expect, outcome["message"]):
                failures.append(f"level {level} {attempt.field} ({attempt.tried}): {outcome}")
        allowed = allowed_request(level)
        spawned = await manager.spawn(allowed, caller)
        OUTCOMES.append({"level": level, "field": "allowed", "tried": "the narrower request", "result": "spawned"})
        child = manager.get(spawned.session["session_id"], principal=OPERATOR)
        spec = LEVELS[level - 1]
        assert child.depth == level and child.parent_session_id == chain[-1]
        assert child.policy.directory.allow == spec["allow"]
        assert (child.policy.network.mode, child.policy.network.allow_domains) == spec["network"]
        assert child.policy.resources.model_dump(exclude_none=True) == spec["resources"]
        assert child.policy.delegation.max_depth == spec["delegation"]["max_depth"]
        assert child.policy.matcher.is_visible(spec["allow"][0].replace("**", "x.py"))
        assert not child.policy.matcher.is_visible(FOREIGN_GLOB[level - 1].replace("**", "x.py"))
        if level < len(LEVELS):  # a sibling of the next caller, for the next level's attempts
            siblings.append((await manager.spawn(allowed_request(level), caller)).session["session_id"])
        chain.append(child.session_id)
    deepest = chain[-1]
    assert manager.get(deepest, principal=OPERATOR).policy.delegation.max_depth == 0
    for who, caller in [("agent", Agent(session_id=deepest)), ("operator", OPERATOR)]:
        request = SpawnRequest(profile_id="deep_coder", working_dir="/workspace" if who == "agent" else str(workdir))
        if who == "operator":
            request = request.model_copy(update={"parent_session_id": deepest})
        attempt = Attempt(
            len(LEVELS) + 1,
            "delegation.max_depth",
            f"{who} spawns below max_depth 0",
            request,
            r"delegation\.max_depth",
        )
        outcome = await _try(manager, caller, attempt)
        if outcome["result"] != "refused" or not re.search(attempt.expect, outcome["message"]):
            failures.append(f"below the deepest level ({who}): {outcome}")
    refused = [o for o in OUTCOMES if o["field"] != "allowed"]
    assert len(refused) >= 3 * 25, f"only {len(refused)} attempts were made"
    assert not failures, "\n".join(failures)
