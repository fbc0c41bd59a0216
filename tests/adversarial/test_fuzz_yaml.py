"""Property-based fuzzing of profile and policy files loaded through the real catalogs.

Each example writes one generated document (right and wrong field names and types, wrong nesting,
bad globs, huge numbers, non-UTF-8 bytes, small YAML bombs, duplicated keys, tabs, deep nesting)
next to a valid sibling file. The property: the document loads as a valid model (whose path matcher
then works), or the catalog raises a :class:`HydraError` whose message names the file and the field
or line; never another exception type; and the valid sibling still loads.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hydra_sandbox.checklists import Checklist
from hydra_sandbox.errors import HydraError
from hydra_sandbox.events import Event
from hydra_sandbox.policy import Policy, PolicyCatalog
from hydra_sandbox.profiles import Profile, ProfileCatalog
from tests.adversarial.conftest import count_example

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
STEM = "fuzzed"
SIBLING = "valid_sibling"
VALID_POLICY = f"name: {SIBLING}\ndirectory: {{allow: ['src/**'], deny: ['**/*.pem']}}\nnetwork: {{mode: none}}\n"
VALID_PROFILE = f"id: {SIBLING}\ntitle: T\ndescription: D\npersona: P\nsystem_prompt: S\npolicy: default\n"

# -- documents ----------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["fuzzed", "default", "none", "allowlist", "**", "1e400", "yes", "~", "0x10"]),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)
SOME_GLOBS = st.sampled_from(["**", "src/**", "/etc/**", "../x", "", "[", "[z-a]", "\\", "!", "!!x", "a/**/b", "C:/x"])
GLOBS = st.one_of(SOME_GLOBS, SOME_GLOBS, st.text(max_size=10))
NUMBER = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 64, 65, 262145, 2**63]),
)

REGEXES = st.sampled_from(["(", "[a-", "pytest", ".*", "(?P<x", "*", "a{2,1}", "(?i)fixed"]) | st.text(max_size=6)


def mapping(fields: dict[str, st.SearchStrategy[Any]], wrong: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the right fields with plausible or wrong values, and sometimes fields that do not exist."""
    right = st.fixed_dictionaries({}, optional={k: st.one_of(v, v, v, ANY) for k, v in fields.items()})
    extra = st.dictionaries(st.sampled_from(wrong) | st.text(max_size=8), ANY, max_size=2)
    return st.tuples(right, extra).map(lambda pair: {**pair[1], **pair[0]})


POLICY_DOC = mapping(
    {
        "name": st.sampled_from([STEM, SIBLING, "Fuzzed", "other", ""]),
        "description": st.text(max_size=30),
        "directory": mapping(
            {"allow": st.lists(GLOBS, max_size=4), "deny": st.lists(GLOBS, max_size=4), "read_only": GLOBS},
            ["allowed", "inherited_allow"],
        ),
        "network": mapping(
            {
                "mode": st.sampled_from(["none", "model-only", "allowlist", "open", "host"]),
                "allow_domains": st.lists(st.sampled_from(["pypi.org", "a b", "http://x", "", "."]), max_size=3),
            },
            ["domains"],
        ),
        "resources": mapping(
            {k: NUMBER for k in ["cpus", "memory_mb", "pids", "timeout_s", "max_output_bytes"]}, ["gpus", "memory"]
        ),
        "delegation": mapping(
            {"max_depth": NUMBER, "max_children": NUMBER, "allow_widening": st.booleans()}, ["depth"]
        ),
    },
    ["policy", "resource", "Directory", "network_mode"],
)
RULE = mapping(
    {
        "kind": st.sampled_from(
            ["test_passed", "command_succeeded", "file_changed", "decision_stated", "message_matches", "magic"]
        ),
        "pattern": REGEXES,
        "glob": GLOBS,
        "runner": st.text(max_size=6),
    },
    ["type"],
)
CHECKLIST_ITEM = mapping(
    {
        "id": st.sampled_from(["tests_passed", "Bad Id", "", "x" * 70]),
        "description": st.text(max_size=10),
        "rule": RULE,
    },
    ["name"],
)
PROFILE_DOC = mapping(
    {
        "id": st.sampled_from([STEM, "Fuzzed", "", "x" * 70, "../x"]),
        "title": st.text(max_size=10),
        "description": st.text(max_size=10),
        "persona": st.text(max_size=10),
        "system_prompt": st.text(max_size=10),
        "goalset": st.lists(st.text(max_size=10), max_size=3),
        "checklist_template": st.lists(CHECKLIST_ITEM, max_size=3),
        "policy": st.sampled_from(["default", "nope", ""]),
        "model": st.text(max_size=10),
        "limits": st.dictionaries(st.sampled_from(["cpus", "timeout_s", "gpus"]), NUMBER, max_size=2),
        "read_only": st.booleans(),
        "test_runners": st.lists(st.text(max_size=6), max_size=2),
        "apply_requires": st.lists(
            mapping({"name": st.text(max_size=6), "profile_id": st.text(max_size=6)}, ["rule"]), max_size=2
        ),
    },
    ["name", "prompt", "goals", "checklist"],
)


NEAR_VALID_POLICY = st.fixed_dictionaries(
    {
        "name": st.just(STEM),
        "directory": st.fixed_dictionaries(
            {}, optional={"allow": st.lists(GLOBS, min_size=1, max_size=3), "deny": st.lists(GLOBS, max_size=3)}
        ),
    },
    optional={
        "network": st.fixed_dictionaries({"mode": st.sampled_from(["none", "model-only"])}),
        "resources": st.fixed_dictionaries({}, optional={"cpus": st.floats(0.1, 64), "pids": st.integers(16, 65536)}),
        "delegation": st.fixed_dictionaries({}, optional={"max_depth": st.integers(0, 16)}),
    },
)
NEAR_VALID_PROFILE: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"id": st.just(STEM), "title": st.just("T"), "description": st.just("D"), "persona": st.just("P")},
    optional={
        "system_prompt": st.text(max_size=10),
        "checklist_template": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.sampled_from(["a", "b", "c"]),
                    "description": st.just("d"),
                    "rule": st.one_of(
                        st.fixed_dictionaries({"kind": st.just("command_succeeded"), "pattern": REGEXES}),
                        st.fixed_dictionaries({"kind": st.just("message_matches"), "pattern": REGEXES}),
                        st.fixed_dictionaries({"kind": st.just("decision_stated"), "pattern": REGEXES}),
                        st.fixed_dictionaries({"kind": st.just("file_changed"), "glob": GLOBS}),
                        st.fixed_dictionaries({"kind": st.just("test_passed")}),
                    ),
                }
            ),
            max_size=3,
            unique_by=lambda item: str(item["id"]),
        ),
        "limits": st.fixed_dictionaries({}, optional={"timeout_s": st.integers(1, 100)}),
    },
)
PROFILE_BASE = {"id": STEM, "title": "T", "description": "D", "persona": "P", "system_prompt": "S"}


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _bomb(depth: int, width: int, field: str) -> str:
    """A billion-laughs document kept small: ``width ** depth`` leaves at most a few hundred thousand."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, depth):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"{field}: *l{depth - 1}")
    return "\n".join(lines) + "\n"


@st.composite
def documents(
    draw: st.DrawFn, doc: st.SearchStrategy[dict[str, Any]], fields: list[str], base: dict[str, Any]
) -> tuple[bytes, str]:
    """Raw file bytes and the mutation that made them. Half the documents start from ``base`` (the
    required fields, valid) so that bad values deeper down are reached, not just missing fields."""
    drawn = draw(doc)
    text = _dump({**base, **drawn} if draw(st.booleans()) else drawn)
    mutations = ["tabs", "duplicate", "huge_int", "non_utf8", "bomb", "deep", "truncate", "bytes", "top"]
    mutation = draw(st.sampled_from(mutations)) if draw(st.booleans()) else "none"
    field = draw(st.sampled_from(fields))
    if mutation == "tabs":
        text = text.replace("  ", "\t", 1) if "  " in text else "\t" + text
    elif mutation == "duplicate":
        text += f"{field}: {draw(st.sampled_from(['x', '1', '[a]', '{}', 'null']))}\n" * 2
    elif mutation == "huge_int":
        text += f"{field}: {'9' * draw(st.integers(min_value=4000, max_value=20000))}\n"
    elif mutation == "non_utf8":
        junk = draw(st.sampled_from([b"\xff\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"caf\xe9"]))
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:cut].encode() + junk + text[cut:].encode(), mutation
    elif mutation == "bomb":
        text = _bomb(draw(st.integers(min_value=2, max_value=6)), draw(st.integers(min_value=2, max_value=8)), field)
    elif mutation == "deep":
        depth = draw(st.integers(min_value=50, max_value=1500))
        text = f"{field}: " + "[" * depth + "]" * depth + "\n"
    elif mutation == "truncate":
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    elif mutation == "bytes":
        return draw(st.binary(max_size=200)), mutation
    elif mutation == "top":
        text = draw(
            st.sampled_from(["", "- a\n- b\n", "just a string\n", "42\n", "null\n", "---\n---\n", "!!binary x"])
        )
    return text.encode("utf-8", "surrogatepass"), mutation


# -- the property -------------------------------------------------------------------------------------

LINE = re.compile(r"line \d+")


def check_config_error(exc: BaseException, path: Path, fields: list[str], raw: bytes) -> None:
    assert isinstance(exc, HydraError), f"{type(exc).__name__} escaped the loader: {exc!s:.300}"
    message = str(exc)
    assert path.name in message, f"the message does not name the file:\n{message[:500]}"
    keys = _top_keys(raw)
    named = LINE.search(message) or "top level" in message or any(f"{k}" in message for k in [*fields, *keys])
    assert named, f"the message names no field or line:\n{message[:500]}"
    assert "Traceback" not in message


def _top_keys(raw: bytes) -> list[str]:
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except Exception:  # unreadable documents have no keys to name; the line must be named instead
        return []
    return [str(k) for k in data] if isinstance(data, dict) else []


def _still_usable(policy: Policy) -> None:
    """A policy that loads can be enforced: its globs compile and match."""
    for path in ("src/app.py", ".env", "a/b/c.pem", "x"):
        policy.matcher.is_visible(path)
        policy.matcher.why_not_writable(path)


SAMPLE_EVENTS = [
    Event(
        id=f"e{i}",
        session_id="s-1",
        counter=i,
        type=kind,  # type: ignore[arg-type]
        text="pytest passed; fixed it",
        data=data,
        related_files=["src/app.py"],
    )
    for i, (kind, data) in enumerate(
        [
            ("test", {"passed": True, "runner": "pytest"}),
            ("command", {"command": "pytest -q", "exit_code": 0}),
            ("diff", {}),
            ("decision", {}),
            ("message", {}),
        ]
    )
]


def _profile_usable(profile: Profile) -> None:
    """A profile that loads can be followed: its checklist rules compile and match events."""
    checklist = Checklist.from_profile(profile)
    for event in SAMPLE_EVENTS:
        checklist.observe(event)


def test_fuzz_policy_files(scenario: str) -> None:
    fields = list(Policy.model_fields)

    @FUZZ
    @given(drawn=documents(POLICY_DOC | NEAR_VALID_POLICY, fields, {"name": STEM}))
    def prop(drawn: tuple[bytes, str]) -> None:
        raw, _mutation = drawn
        with count_example(scenario), tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / f"{SIBLING}.yaml").write_text(VALID_POLICY)
            path = root / f"{STEM}.yaml"
            path.write_bytes(raw)
            catalog = PolicyCatalog([root])
            try:
                policy = catalog.get(STEM)
            except BaseException as exc:
                check_config_error(exc, path, fields, raw)
            else:
                assert isinstance(policy, Policy) and policy.name == STEM
                _still_usable(policy)
            good, bad = catalog.load_all()
            assert SIBLING in good, f"a broken {path.name} hid its valid sibling: {bad.get(SIBLING)}"
            _still_usable(good[SIBLING])
            assert (STEM in good) != (STEM in bad)

    prop()


def test_fuzz_profile_files(scenario: str) -> None:
    fields = list(Profile.model_fields)

    @FUZZ
    @given(drawn=documents(PROFILE_DOC | NEAR_VALID_PROFILE, fields, PROFILE_BASE))
    def prop(drawn: tuple[bytes, str]) -> None:
        raw, _mutation = drawn
        with count_example(scenario), tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / f"{SIBLING}.yaml").write_text(VALID_PROFILE)
            path = root / f"{STEM}.yaml"
            path.write_bytes(raw)
            catalog = ProfileCatalog([root])
            try:
                good, bad = catalog.load_all()
            except BaseException as exc:
                raise AssertionError(f"load_all raised {type(exc).__name__}: {exc!s:.300}") from exc
            # a file may claim another profile's id on purpose (it then overrides that profile's fields)
            assume(SIBLING not in _claimed_ids(raw))
            assert SIBLING in good, f"a broken {path.name} hid its valid sibling: {bad.get(SIBLING)}"
            for pid in set(catalog.ids()) - {SIBLING}:
                try:
                    profile = catalog.get(pid)
                except BaseException as exc:
                    check_config_error(exc, path, fields, raw)
                    assert pid in bad
                else:
                    assert isinstance(profile, Profile) and pid in good
                    _profile_usable(profile)

    prop()


def _claimed_ids(raw: bytes) -> set[str]:
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except Exception:
        return set()
    return {str(data.get("id"))} if isinstance(data, dict) else set()
