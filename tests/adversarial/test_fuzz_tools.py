"""Property-based fuzzing of every MCP tool, resource template and prompt, through the in-memory client.

The property for every call: the server answers with a valid result, or with an error whose message
is one or a few lines, names the offending argument (or the value it refused) and carries no Python
traceback text; and afterwards the server still answers ``list_agents``. A spawn that succeeds must
also have a policy no wider than the one it started from.

Hypothesis is synchronous, the client is not: each test runs the server on an event loop
(``asyncio.run``) and the hypothesis loop in a worker thread that submits calls to that loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from fastmcp import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.policy import Policy
from hydra_sandbox.services import Services
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.adversarial.conftest import count_example
from tests.hydra_server import TOOL_NAMES
from tests.hydra_server import serve as serve_hydra

T = TypeVar("T")

EXAMPLES_PER_TOOL = 70
EXAMPLES = {"spawn_agent": 150}  # the richest surface: paths, profiles, flags and policies
CALL_TIMEOUT_S = 30.0
MAX_LINES = 8
MAX_CHARS = 2000
TRACEBACK = re.compile(r"Traceback|File \"|line \d+, in ")
FUZZ = settings(
    max_examples=EXAMPLES_PER_TOOL,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# -- a server on an event loop, driven from a hypothesis thread ---------------------------------------


class Remote:
    """Runs coroutines on the server's loop from the hypothesis thread, with a deadline."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop, services: Services, workdir: Path) -> None:
        self.client = client
        self.services = services
        self.workdir = workdir
        self.known_sessions: list[str] = []
        self._loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=CALL_TIMEOUT_S)

    def still_answers(self) -> None:
        listed = self.run(self.client.call_tool("list_agents", {}))
        assert listed.structured_content and listed.structured_content["profiles"], "list_agents stopped answering"


@pytest.fixture
def hydra_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_ENV_FILE", str(tmp_path / "no.env"))
    return load_settings()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    return path


def serve(settings_: HydraSettings, workdir: Path, body: Callable[[Remote], None]) -> None:
    """One server and client for the whole test; ``body`` runs in a worker thread."""

    async def main() -> None:
        async with serve_hydra(settings_) as hydra:
            client = hydra.client
            remote = Remote(client, asyncio.get_running_loop(), hydra.services, workdir)
            first = await client.call_tool("spawn_agent", {"working_dir": str(workdir), "custom_prompt": "seed"})
            session_id = first.structured_content["session_id"]  # type: ignore[index]
            await client.call_tool("wait_session", {"session_id": session_id, "timeout_s": 10})
            remote.known_sessions += [session_id, "host"]
            await asyncio.to_thread(body, remote)

    asyncio.run(main())


# -- the property -------------------------------------------------------------------------------------


def mentions(args: dict[str, Any], required: list[str]) -> set[str]:
    """What a refusal may name to point at the culprit: an argument or field name, or a value given."""
    found: set[str] = set(required)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                found.add(str(key)[:40])
                found.add(repr(str(key))[:12])
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)
        elif isinstance(value, str):
            found.add(repr(value)[:12])
            if len(value) >= 3:
                found.add(value[:12])

    walk(args)
    return {m for m in found if m}


def check_refusal(text: str, names: set[str], what: str) -> None:
    assert text.strip(), f"{what}: empty error message"
    assert not TRACEBACK.search(text), f"{what}: traceback text leaked to the client:\n{text[:2000]}"
    lines = text.splitlines()
    assert len(lines) <= MAX_LINES, f"{what}: {len(lines)}-line error message:\n{text[:2000]}"
    assert len(text) <= MAX_CHARS, f"{what}: {len(text)}-character error message:\n{text[:600]}..."
    assert any(n in text for n in names), f"{what}: error names no argument or value given:\n{text}"


def _order(mode: str) -> int:
    return {"none": 0, "model-only": 1, "allowlist": 2}[mode]


def assert_not_wider(child: Policy, base: Policy) -> None:
    """A spawned session's policy only narrows the policy it started from."""
    for field, limit in base.resources.model_dump().items():
        value = getattr(child.resources, field)
        if limit is not None:  # None: no limit (max_model_tokens, disk_mb), which any value narrows
            assert value is not None and value <= limit, f"resources.{field} widened"
    for field in ("max_depth", "max_children"):
        assert getattr(child.delegation, field) <= getattr(base.delegation, field), f"delegation.{field} widened"
    assert _order(child.network.mode) <= _order(base.network.mode), "network.mode widened"
    assert set(child.network.allow_domains) <= set(base.network.allow_domains), "allow_domains widened"
    assert set(base.directory.deny) <= set(child.directory.deny), "directory.deny dropped"
    assert set(base.directory.read_only) <= set(child.directory.read_only), "directory.read_only dropped"
    layers = [*child.directory.inherited_allow, child.directory.allow]
    assert base.directory.allow in layers, "the base allow list is no longer a layer"


def base_policy_of(remote: Remote, args: dict[str, Any], session: dict[str, Any]) -> Policy:
    services = remote.services
    if session.get("parent_session_id"):
        return services.manager.get(session["parent_session_id"], OPERATOR).policy
    wanted = (args.get("policy") or {}).get("base")
    return services.policies.get(wanted or services.profiles.get(session["profile_id"]).policy)


# -- argument strategies ------------------------------------------------------------------------------

WILD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),  # lone surrogates cannot cross JSON
    max_size=40,
)
CONTROL_TEXT = st.text(alphabet=st.characters(max_codepoint=0x1F) | st.sampled_from("\u2028\u202e\ufeff\x7f"))
HUGE_TEXT = st.integers(min_value=1_000, max_value=200_000).map(lambda n: "A" * n)
TEXT = st.one_of(st.text(max_size=20), WILD_TEXT, CONTROL_TEXT, HUGE_TEXT)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
)
JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)
UNKNOWN_SESSION = st.one_of(
    st.sampled_from(["s-000000000000", "", "host", "../../etc/passwd", "s-%00", "*", "SELECT 1;--"]),
    st.text(max_size=30),
    HUGE_TEXT,
)
PROFILE_IDS = st.one_of(
    st.sampled_from(["default", "code_reviewer", "data_migration", "../default", "DEFAULT", "", "nope"]), TEXT
)
POLICY_NAMES = st.one_of(
    st.sampled_from(["default", "read_only", "offline", "package_install", "../policies/default", "nope", ""]),
    TEXT,
)
GLOBS = st.one_of(
    st.sampled_from(
        ["**", "src/**", "*.py", "/etc/**", "../**", "a/../../b", "", " ", "[", "[z-a]", "\\", "!", "!**", "C:/x"]
    ),
    st.text(max_size=12),
)
GLOB_LISTS = st.lists(GLOBS, max_size=5)
RESOURCE_KEYS = st.sampled_from(
    ["cpus", "memory_mb", "pids", "timeout_s", "max_output_bytes", "disk_mb", "gpus", "privileged"]
)
WIDENING_POLICY = st.fixed_dictionaries(
    {},
    optional={
        "base": POLICY_NAMES,
        "directory": st.fixed_dictionaries(
            {},
            optional={
                "allow": GLOB_LISTS,
                "deny": GLOB_LISTS,
                "read_only": GLOB_LISTS,
                "inherited_allow": st.lists(GLOB_LISTS, max_size=2),
                "unknown": JUNK,
            },
        ),
        "network": st.fixed_dictionaries(
            {},
            optional={
                "mode": st.sampled_from(["none", "model-only", "allowlist", "open", "host", ""]) | TEXT,
                "allow_domains": st.lists(
                    st.sampled_from(["pypi.org", "evil.example", "*", "http://x", "a b", "", "."]) | TEXT, max_size=4
                ),
            },
        ),
        "resources": st.dictionaries(RESOURCE_KEYS | TEXT, NUMBERS | JUNK, max_size=4),
        "delegation": st.dictionaries(
            st.sampled_from(["max_depth", "max_children", "allow_widening", "sudo"]) | TEXT, NUMBERS | JUNK, max_size=3
        ),
        "sandbox": JUNK,
    },
)
FLAGS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "model": TEXT,
            "timeout_s": NUMBERS,
            "max_output_bytes": NUMBERS,
            "gpu": JUNK,
            "privileged": st.booleans(),
            "network": st.just("host"),
        },
    ),
    JUNK,
)
LIMITS = st.one_of(st.integers(min_value=1, max_value=100), NUMBERS)
SHORT_TIMEOUTS = st.one_of(st.floats(min_value=0, max_value=0.2), NUMBERS.filter(lambda n: not 0 <= n <= 3600))
DATES = st.one_of(
    st.sampled_from(["2026-11-18T00:00:00Z", "2026-13-45", "last tuesday", "", "0", "9999-12-31T23:59:59+14:00"]),
    st.datetimes().map(lambda d: d.isoformat()),
    TEXT,
)


def path_tricks(workdir: Path) -> list[str]:
    return [
        str(workdir),
        str(workdir) + "/",
        str(workdir / ".." / "repo"),
        str(workdir / "app.py"),
        str(workdir / "missing"),
        "..",
        "../..",
        "repo",
        ".",
        "",
        " ",
        "/",
        "/etc",
        "/etc/passwd",
        "/proc/self/root",
        "/dev/null",
        "/tmp/x\x00y",
        "\x00",
        "~",
        "~/",
        "~hydra_no_such_user_zz/x",
        "/" + "a" * 5000,
        "/" + "/".join(["d" * 200] * 30),
        "file:///etc",
        "C:\\Windows",
    ]


def working_dirs(workdir: Path) -> st.SearchStrategy[str]:
    trick = st.sampled_from(path_tricks(workdir))
    return st.one_of(trick, trick, trick, TEXT, st.text(max_size=30).map(lambda s: "/" + s))  # tricks weigh 3:2


def param_strategies(remote: Remote) -> dict[str, dict[str, st.SearchStrategy[Any]]]:
    """Valid-shaped but hostile values for each parameter of each tool; a new tool must be added here."""
    session = st.one_of(st.sampled_from(remote.known_sessions), UNKNOWN_SESSION)
    maybe_session = st.none() | session
    return {
        "spawn_agent": {
            "working_dir": working_dirs(remote.workdir),
            "profile_id": PROFILE_IDS,
            "custom_prompt": st.none() | TEXT,
            "goalset": st.none() | st.lists(TEXT, max_size=5),
            "inputs": st.none() | st.dictionaries(TEXT, JUNK, max_size=4),
            "flags": st.none() | FLAGS,
            "policy": st.none() | WIDENING_POLICY,
            "parent_session_id": maybe_session,
            "relationship": st.none() | TEXT,
            "idempotency_key": st.none() | TEXT,
        },
        "list_agents": {},
        "list_sessions": {
            "status": st.none() | st.sampled_from(["queued", "completed", "dancing", "COMPLETED"]) | TEXT,
            "profile_id": st.none() | PROFILE_IDS,
            "parent_session_id": maybe_session,
            "limit": LIMITS,
        },
        "wait_session": {"session_id": session, "timeout_s": SHORT_TIMEOUTS},
        "tail_logs": {"session_id": session, "since": LIMITS, "limit": LIMITS},
        "summarize_session": {"session_id": session},
        "terminate_session": {"session_id": session, "reason": TEXT},
        "resume_session": {"session_id": session, "prompt": TEXT},
        "log_context": {
            "note": TEXT | st.just("n" * 100_001),
            "session_id": maybe_session,
            "tags": st.none() | st.lists(TEXT, max_size=5) | st.just([f"t{i}" for i in range(10_000)]),
        },
        "search_context": {
            "query": TEXT | st.just("q" * 10_001),
            "session_id": maybe_session,
            "profile_id": st.none() | PROFILE_IDS,
            "event_type": st.none() | st.sampled_from(["command", "note", "gossip"]) | TEXT,
            "since": st.none() | DATES,
            "until": st.none() | DATES,
            "parent_session_id": maybe_session,
            "root_session_id": maybe_session,
            "subtree_of": maybe_session,
            "session_status": st.none() | st.sampled_from(["failed", "completed", "dancing"]) | TEXT,
            "depth": st.none() | LIMITS,
            "limit": LIMITS,
            "tags": st.none() | st.lists(TEXT, max_size=5) | st.just(["t"] * 33),
        },
        "get_diff": {"session_id": session},
        "apply_diff": {
            "session_id": session,
            "confirm": st.booleans() | JUNK,
            "digest": st.none() | TEXT | st.just("sha256:" + "0" * 64),
            "acknowledge_masked": st.booleans() | JUNK,
        },
        "discard_diff": {"session_id": session},
    }


MUTATIONS = ["none", "none", "wrong_type", "missing_required", "extra_unknown", "huge", "control"]


@st.composite
def tool_arguments(
    draw: st.DrawFn, params: dict[str, st.SearchStrategy[Any]], required: list[str]
) -> tuple[dict[str, Any], str]:
    args = {name: draw(strategy) for name, strategy in params.items() if name in required or draw(st.booleans())}
    mutation = draw(st.sampled_from(MUTATIONS))
    names = sorted(params)
    if mutation == "wrong_type" and names:
        args[draw(st.sampled_from(names))] = draw(JUNK)
    elif mutation == "missing_required" and required:
        args.pop(draw(st.sampled_from(required)), None)
    elif mutation == "extra_unknown":
        key = draw(st.sampled_from(["sudo", "privileged", "working_directory", "__proto__", "ctx"]) | TEXT)
        if key not in params:
            args[key] = draw(JUNK)
    elif mutation in {"huge", "control"} and names:
        args[draw(st.sampled_from(names))] = draw(HUGE_TEXT if mutation == "huge" else CONTROL_TEXT)
    return args, mutation


# -- the tests ----------------------------------------------------------------------------------------



def test_every_registered_tool_and_parameter_has_a_strategy(
    hydra_settings: HydraSettings, workdir: Path, scenario: str
) -> None:
    def body(remote: Remote) -> None:
        with count_example(scenario):
            tools = {t.name: t for t in remote.run(remote.client.list_tools())}
            strategies = param_strategies(remote)
            assert set(tools) == set(strategies) == set(TOOL_NAMES), "a tool has no fuzz strategy (or a stale one)"
            for name, tool in tools.items():
                schema_params = set(tool.input_schema.get("properties", {}))
                assert schema_params == set(strategies[name]), f"{name}: parameters without a strategy"

    serve(hydra_settings, workdir, body)


@pytest.mark.parametrize("tool", TOOL_NAMES)
def test_fuzz_tool(tool: str, hydra_settings: HydraSettings, workdir: Path, scenario: str) -> None:
    def body(remote: Remote) -> None:
        tools = {t.name: t for t in remote.run(remote.client.list_tools())}
        required = list(tools[tool].input_schema.get("required", []))
        params = param_strategies(remote)[tool]

        @settings(FUZZ, max_examples=EXAMPLES.get(tool, EXAMPLES_PER_TOOL))
        @given(drawn=tool_arguments(params, required))
        def prop(drawn: tuple[dict[str, Any], str]) -> None:
            args, _mutation = drawn
            with count_example(scenario):
                result = remote.run(remote.client.call_tool(tool, args, raise_on_error=False))
                if result.is_error:
                    text = "\n".join(getattr(block, "text", "") for block in result.content)
                    check_refusal(text, mentions(args, required), f"{tool}({_short(args)})")
                else:
                    assert isinstance(result.structured_content, dict), f"{tool}: result is not an object"
                    json.dumps(result.structured_content)
                    if tool == "spawn_agent":
                        session = result.structured_content["session"]
                        record = remote.services.manager.get(session["session_id"], OPERATOR)
                        assert_not_wider(record.policy, base_policy_of(remote, args, session))
                        remote.known_sessions.append(session["session_id"])
                remote.still_answers()

        for args in explicit_examples(tool, remote):  # the known-hostile cases run every time
            prop = example(drawn=(args, "explicit"))(prop)
        prop()

    serve(hydra_settings, workdir, body)


def explicit_examples(tool: str, remote: Remote) -> list[dict[str, Any]]:
    if tool == "spawn_agent":
        return [{"working_dir": path} for path in path_tricks(remote.workdir)]
    if tool in {"get_diff", "apply_diff", "discard_diff", "summarize_session", "wait_session", "tail_logs"}:
        return [{"session_id": s} for s in ["", "../../etc/passwd", "x" * 5000, "a\nb\x00c"]]
    return []


SESSION_IDS = st.one_of(UNKNOWN_SESSION, WILD_TEXT, CONTROL_TEXT)


@pytest.mark.parametrize("template", ["sessions", "checklists"])
def test_fuzz_resource(template: str, hydra_settings: HydraSettings, workdir: Path, scenario: str) -> None:
    def body(remote: Remote) -> None:
        @FUZZ
        @given(session_id=st.sampled_from(remote.known_sessions) | SESSION_IDS, encode=st.booleans())
        def prop(session_id: str, encode: bool) -> None:
            with count_example(scenario):
                raw_ok = re.fullmatch(r"[A-Za-z0-9._~-]+", session_id) is not None
                part = session_id if raw_ok and not encode else quote(session_id, safe="")
                uri = f"hydra://{template}/{part}"
                try:
                    contents = remote.run(remote.client.read_resource(uri))
                except Exception as exc:  # the client raises the server's refusal
                    # the session id, or the URI when the client normalised it away ("." or "..")
                    names = {repr(session_id)[:12], session_id[:12], part[:12], f"'hydra://{template}/"}
                    check_refusal(str(exc), names, f"read {uri[:80]}")
                else:
                    data = json.loads(contents[0].text)  # type: ignore[union-attr]
                    assert isinstance(data, dict)
                    if template == "sessions":
                        assert data["session"]["session_id"] == session_id
                remote.still_answers()

        prop()

    serve(hydra_settings, workdir, body)


def test_fuzz_prompts(hydra_settings: HydraSettings, workdir: Path, scenario: str) -> None:
    def body(remote: Remote) -> None:
        prompts = {p.name: p for p in remote.run(remote.client.list_prompts())}
        assert {"default", "additional_agent"} <= set(prompts)
        names = st.sampled_from(sorted(prompts)) | st.sampled_from(["nope", "../default", ""])
        arg_names = st.sampled_from(["task", "extra_goals", "needs_network", "modifies_files", "bogus"]) | TEXT

        @settings(FUZZ, max_examples=EXAMPLES_PER_TOOL * 2)
        @given(name=names, arguments=st.dictionaries(arg_names, TEXT, max_size=4))
        def prop(name: str, arguments: dict[str, str]) -> None:
            with count_example(scenario):
                try:
                    result = remote.run(remote.client.get_prompt(name, arguments))
                except Exception as exc:
                    required = [a.name for a in prompts[name].arguments or [] if a.required] if name in prompts else []
                    check_refusal(str(exc), {repr(name)[:12], *mentions(arguments, required)}, f"prompt {name!r}")
                else:
                    text = result.messages[0].content.text  # type: ignore[union-attr]
                    assert text.strip()
                    task = arguments.get("task", "").strip()
                    if task and name in prompts:
                        assert task[:50] in text, "the task is not in the rendered prompt"
                remote.still_answers()

        prop()

    serve(hydra_settings, workdir, body)


def _short(args: dict[str, Any]) -> str:
    text = repr({k: (v[:40] + "..." if isinstance(v, str) and len(v) > 40 else v) for k, v in args.items()})
    return text[:300]
