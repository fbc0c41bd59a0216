from pathlib import Path

import pytest

from hydra_sandbox.errors import ConfigError, PolicyNotFoundError, PolicyViolation
from hydra_sandbox.policy import (
    DirectoryPolicy,
    NetworkPolicy,
    Policy,
    PolicyCatalog,
    PolicyRequest,
    child_of,
    explain,
    narrow,
)
from hydra_sandbox.settings import REPO_ROOT
from hydra_sandbox.yaml_models import validate_data

BUILTIN = REPO_ROOT / "policies"


def make(**kw: object) -> Policy:
    return validate_data(Policy, {"name": "p", **kw}, "test")


def test_builtin_policies_all_load() -> None:
    good, bad = PolicyCatalog([BUILTIN]).load_all()
    assert bad == {}
    assert {"default", "read_only", "offline", "package_install"} <= set(good)
    assert good["default"].network.mode == "model-only"


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.production",
        "app/.env",
        ".git/config",
        "sub/.git/config",
        ".envrc",
        ".codex/config.toml",
        ".mcp.json",
    ],
)
def test_protected_paths_are_hidden_even_when_allowed(path: str) -> None:
    assert not make(directory={"allow": ["**"]}).matcher.is_visible(path)


@pytest.mark.parametrize(
    "path",
    [".git/HEAD", ".git/hooks/pre-commit", ".gitmodules", ".vscode/settings.json", ".bashrc", ".zshrc"],
)
def test_protected_paths_are_read_only(path: str) -> None:
    matcher = make().matcher
    assert matcher.is_visible(path)
    assert not matcher.is_writable(path)
    assert matcher.why_not_writable(path) == "protected path"


def test_deny_wins_over_allow() -> None:
    matcher = make(directory={"allow": ["src/**"], "deny": ["src/secret/**"]}).matcher
    assert matcher.is_visible("src/app.py")
    assert not matcher.is_visible("src/secret/key.txt")
    assert not matcher.is_visible("docs/readme.md")


@pytest.mark.parametrize(
    ("glob", "expected"),
    [("../etc/**", "escapes the workspace"), ("/etc/passwd", "absolute path"), ("src/../../x", "escapes")],
)
def test_globs_that_leave_the_workspace_are_refused(glob: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(directory={"deny": ["ok/**", glob]})
    assert "directory.deny[1]" in str(info.value)
    assert expected in str(info.value)


def test_policy_file_with_wrong_type_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nresources: {memory_mb: lots}\n")
    with pytest.raises(ConfigError) as info:
        PolicyCatalog([tmp_path]).get("bad")
    assert "bad.yaml" in str(info.value) and "resources.memory_mb" in str(info.value)


def test_policy_name_must_match_file(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("name: two\n")
    with pytest.raises(ConfigError, match="does not match the file name"):
        PolicyCatalog([tmp_path]).get("one")


def test_missing_policy_lists_available() -> None:
    with pytest.raises(PolicyNotFoundError, match="available policies: .*default"):
        PolicyCatalog([BUILTIN]).get("nope")


def test_unknown_network_mode_lists_valid_modes() -> None:
    with pytest.raises(ConfigError) as info:
        make(network={"mode": "everything"})
    assert "network.mode" in str(info.value) and "model-only" in str(info.value)


# --- narrowing ---------------------------------------------------------------------------------

PARENT = make(
    directory={"allow": ["src/**", "tests/**"], "deny": ["src/vendor/**"]},
    network={"mode": "allowlist", "allow_domains": ["pkg.example"]},
    resources={"cpus": 2, "memory_mb": 2048, "pids": 256, "timeout_s": 600},
    delegation={"max_depth": 2, "max_children": 3},
)


def test_narrowing_without_request_keeps_parent() -> None:
    assert narrow(PARENT, None) == PARENT


def test_child_directory_is_intersected_with_parent() -> None:
    child = narrow(PARENT, PolicyRequest(directory=DirectoryPolicy(allow=["src/lib/**"], deny=["src/lib/x.py"])))
    m = child.matcher
    assert m.is_visible("src/lib/a.py")
    assert not m.is_visible("src/lib/x.py")
    assert not m.is_visible("tests/test_a.py")
    assert not m.is_visible("src/vendor/a.py")  # parent's deny is kept


def test_child_asking_for_wider_paths_is_refused_naming_the_field() -> None:
    with pytest.raises(PolicyViolation) as info:
        narrow(PARENT, PolicyRequest(directory=DirectoryPolicy(allow=["src/**", "**"])))
    assert "directory.allow[1]" in str(info.value) and "wider" in str(info.value)


def test_child_asking_for_a_hidden_subtree_is_refused() -> None:
    with pytest.raises(PolicyViolation, match=r"directory.allow\[0\]"):
        narrow(PARENT, PolicyRequest(directory=DirectoryPolicy(allow=["docs/**"])))


def test_wider_network_mode_is_refused() -> None:
    offline = make(network={"mode": "none"})
    with pytest.raises(PolicyViolation) as info:
        narrow(offline, PolicyRequest(network=NetworkPolicy(mode="model-only")))
    assert "network.mode" in str(info.value) and "'none'" in str(info.value)


def test_new_domain_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="network.allow_domains"):
        narrow(PARENT, PolicyRequest(network=NetworkPolicy(mode="allowlist", allow_domains=["evil.example"])))


def test_narrower_network_is_accepted() -> None:
    assert narrow(PARENT, PolicyRequest(network=NetworkPolicy(mode="none"))).network.mode == "none"


@pytest.mark.parametrize("field", ["cpus", "memory_mb", "pids", "timeout_s"])
def test_more_resources_than_parent_is_refused(field: str) -> None:
    value = getattr(PARENT.resources, field) * 2
    with pytest.raises(PolicyViolation) as info:
        narrow(PARENT, PolicyRequest(resources={field: value}))
    assert f"resources.{field}" in str(info.value)


def test_fewer_resources_are_accepted() -> None:
    child = narrow(PARENT, PolicyRequest(resources={"memory_mb": 512, "timeout_s": 60}))
    assert child.resources.memory_mb == 512 and child.resources.timeout_s == 60
    assert child.resources.cpus == PARENT.resources.cpus


def test_a_model_token_budget_narrows_like_every_other_limit() -> None:
    budgeted = narrow(PARENT, PolicyRequest(resources={"max_model_tokens": 1000}))  # from no limit: any
    assert PARENT.resources.max_model_tokens is None and budgeted.resources.max_model_tokens == 1000
    assert narrow(budgeted, PolicyRequest(resources={"max_model_tokens": 10})).resources.max_model_tokens == 10
    assert narrow(budgeted, None).resources.max_model_tokens == 1000  # a child inherits it
    with pytest.raises(PolicyViolation, match=r"resources.max_model_tokens: 2000 is wider than the parent's 1000"):
        narrow(budgeted, PolicyRequest(resources={"max_model_tokens": 2000}))
    with pytest.raises(ConfigError, match="max_model_tokens: Input should be greater than or equal to 1"):
        narrow(PARENT, PolicyRequest(resources={"max_model_tokens": 0}))


def test_unknown_resource_field_lists_valid_fields() -> None:
    with pytest.raises(PolicyViolation, match=r"resources.gpus: unknown field.*memory_mb"):
        narrow(PARENT, PolicyRequest(resources={"gpus": 1}))


def test_more_delegation_than_parent_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="delegation.max_children"):
        narrow(PARENT, PolicyRequest(delegation={"max_children": 10}))


def test_widening_can_never_be_enabled() -> None:
    with pytest.raises(ConfigError, match="delegation.allow_widening"):
        make(delegation={"allow_widening": True})


def test_each_level_of_delegation_goes_one_deeper_until_refused() -> None:
    level1 = child_of(PARENT)
    level2 = child_of(level1)
    assert (level1.delegation.max_depth, level2.delegation.max_depth) == (1, 0)
    with pytest.raises(PolicyViolation, match="delegation.max_depth"):
        child_of(level2)


def test_explain_lists_visible_hidden_and_writable(tmp_path: Path) -> None:
    for rel in ["src/a.py", "src/vendor/v.py", ".env", ".git/HEAD", "docs/x.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    result = explain(PARENT, tmp_path)
    assert result.writable == ["src/a.py"]
    assert set(result.hidden) == {"src/vendor/v.py", ".env", ".git/HEAD", "docs/x.md"}


def test_explain_refuses_a_missing_workspace(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--workspace"):
        explain(PARENT, tmp_path / "nope")


GLOBS = [["**"], [".env", "src/"], ["**/*.pem", "docs/**"], ["*.py", "!keep.py"], ["a/*/c", "b/**/d"], []]
PATHS = [
    ".env",
    "x/.env",
    "src/a.py",
    "lib/src/b",
    "k.pem",
    "a/b/k.pem",
    "docs/x/y.md",
    "keep.py",
    "m.py",
    "a/b/c",
    "a/b/x/c",
    "b/d",
    "b/x/y/d",
    "README",
]


@pytest.mark.parametrize("globs", GLOBS)
def test_compiled_globs_match_exactly_like_pathspec(globs: list[str]) -> None:
    import pathspec

    from hydra_sandbox.glob_sets import GlobSet

    reference = pathspec.PathSpec.from_lines("gitignore", globs)
    compiled = GlobSet(globs)
    for path in PATHS:
        assert compiled.match_file(path) == reference.match_file(path), (globs, path)


def test_glob_and_domain_refusals_quote_the_value_short() -> None:
    huge = "/" + "x" * 10_000
    with pytest.raises(ConfigError) as info:
        make(directory={"allow": [huge]})
    assert "absolute path" in str(info.value) and len(str(info.value)) < 600
    with pytest.raises(ConfigError) as info:
        make(network={"mode": "allowlist", "allow_domains": ["a b" * 5000]})
    assert "not a domain name" in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name: bad\n\xff\xfe\n", "line 2, column 1: not UTF-8 text (byte 0xff)"),
        (b"name: bad\nresources: {memory_mb: " + b"9" * 5000 + b"}\n", "line 2, column 24: YAML syntax error"),
        (b"name: bad\ndescription: 2026-13-45\n", "line 2, column 14: YAML syntax error"),
        (b"name: bad\ndescription: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than 64 levels deep"),
    ],
)
def test_malformed_policy_file_is_a_config_error_with_its_line(tmp_path: Path, content: bytes, expected: str) -> None:
    """These escaped as UnicodeDecodeError, ValueError and RecursionError and hid the file's name."""
    (tmp_path / "bad.yaml").write_bytes(content)
    (tmp_path / "good.yaml").write_text("name: good\n")
    with pytest.raises(ConfigError) as info:
        PolicyCatalog([tmp_path]).get("bad")
    assert "bad.yaml" in str(info.value) and expected in str(info.value)
    good, bad = PolicyCatalog([tmp_path]).load_all()
    assert set(good) == {"good"} and set(bad) == {"bad"}


@pytest.mark.parametrize("glob", ["[z-a]", "\\", "!"])
def test_a_glob_that_does_not_compile_is_refused_when_the_policy_loads(tmp_path: Path, glob: str) -> None:
    """It used to load and then raise re.error / GitIgnorePatternError when an agent was spawned."""
    (tmp_path / "bad.yaml").write_text(f"name: bad\ndirectory:\n  deny: ['ok/**', '{glob}']\n")
    with pytest.raises(ConfigError) as info:
        PolicyCatalog([tmp_path]).get("bad")
    assert "bad.yaml: directory.deny[1]" in str(info.value) and "not a valid gitignore-style glob" in str(info.value)


def test_a_yaml_alias_bomb_is_refused_with_a_bounded_message(tmp_path: Path) -> None:
    """400 bytes expanding to 9**9 strings: the error message used to repr all of them (minutes)."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join([*lines, "name: bomb", "description: *l8"]) + "\n")
    with pytest.raises(ConfigError) as info:
        PolicyCatalog([tmp_path]).get("bomb")
    assert len(str(info.value)) < 2_000  # the value is shown cut, never expanded
    assert "bomb.yaml: description: Input should be a valid string (got [[[" in str(info.value)
