"""The exact promises of the policy module, each with the boundary that proves it: every reason
``why_not_writable`` gives, every field ``narrow`` carries into the child, every glob refusal and
what an explanation lists (the mutation run, issue 17 item 8, found these untested)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hydra_sandbox.errors import ConfigError, LimitExceededError, PolicyNotFoundError, PolicyViolation
from hydra_sandbox.limits import MAX_GLOB_CHARS
from hydra_sandbox.policy import (
    DirectoryPolicy,
    NetworkPolicy,
    Policy,
    PolicyCatalog,
    PolicyRequest,
    explain,
    narrow,
)
from hydra_sandbox.yaml_models import validate_data


def make(**kw: object) -> Policy:
    return validate_data(Policy, {"name": "p", **kw}, "test")


PARENT = make(
    description="the parent",
    directory={"allow": ["src/**", "tests/**"], "deny": ["src/vendor/**"], "read_only": ["src/gen/**"]},
    network={"mode": "allowlist", "allow_domains": ["pkg.example", "docs.example"]},
    resources={"cpus": 2, "memory_mb": 2048, "pids": 256, "timeout_s": 600},
    delegation={"max_depth": 2, "max_children": 3},
)


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        (".git/HEAD", "protected path"),  # protected read-only, though every glob allows it
        (".env", "protected path"),  # protected hidden
        ("src/vendor/lib.py", "denied by policy"),
        ("docs/readme.md", "outside the allowed paths"),
        ("src/gen/api.py", "read-only by policy"),
        ("src/app.py", None),
    ],
)
def test_why_not_writable_gives_the_one_reason_that_applies(rel: str, reason: str | None) -> None:
    matcher = make(
        directory={"allow": ["src/**", ".git/**", ".env"], "deny": ["src/vendor/**"], "read_only": ["src/gen/**"]}
    ).matcher
    assert matcher.why_not_writable(rel) == reason
    assert matcher.is_writable(rel) is (reason is None)


def test_a_policys_own_read_only_globs_stop_writes_but_not_reads() -> None:
    matcher = make(directory={"read_only": ["docs/**", "LICENSE"]}).matcher
    for rel in ("docs/a.md", "LICENSE"):
        assert matcher.is_visible(rel) and not matcher.is_writable(rel)
        assert matcher.why_not_writable(rel) == "read-only by policy"
        assert not matcher.is_protected(rel) and not matcher.is_denied(rel)
    assert matcher.is_writable("src/a.py") and matcher.why_not_writable("src/a.py") is None


def test_is_denied_and_is_protected_name_exactly_their_own_globs() -> None:
    matcher = make(directory={"allow": ["src/**"], "deny": ["src/secret/**"]}).matcher
    assert matcher.is_denied("src/secret/k") and not matcher.is_protected("src/secret/k")
    assert matcher.is_denied("a/.env") and matcher.is_protected("a/.env")  # hidden by every policy
    assert matcher.is_protected(".git/config") and matcher.is_protected(".gitmodules")
    assert not matcher.is_denied(".gitmodules"), "protected read-only is visible, not denied"
    assert not matcher.is_denied("docs/x") and not matcher.is_visible("docs/x")  # outside allow: not denied
    assert matcher.is_denied(".ENV"), "protected hidden globs ignore case"


def test_a_childs_tighter_delegation_limits_are_kept() -> None:
    child = narrow(PARENT, PolicyRequest(delegation={"max_children": 1, "max_depth": 0}))
    assert (child.delegation.max_children, child.delegation.max_depth) == (1, 0)
    assert narrow(PARENT, PolicyRequest(delegation={"max_children": 3})).delegation == PARENT.delegation
    assert narrow(PARENT, PolicyRequest(delegation={"max_depth": 1})).delegation.max_children == 3


def test_a_delegation_request_names_an_unknown_field_and_an_invalid_value() -> None:
    with pytest.raises(PolicyViolation, match=r"delegation.allow_widening: unknown field") as info:
        narrow(PARENT, PolicyRequest(delegation={"allow_widening": 1}))
    assert "valid: max_children, max_depth" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="max_children"):
        narrow(PARENT, PolicyRequest(delegation={"max_children": -1}))


def test_a_narrowed_child_keeps_every_field_it_did_not_ask_to_change() -> None:
    child = narrow(PARENT, PolicyRequest(resources={"pids": 64}), name="kid")
    assert child.name == "kid" and child.description == "the parent"
    assert child.directory == PARENT.directory and child.network == PARENT.network
    assert child.delegation == PARENT.delegation
    assert child.resources == PARENT.resources.model_copy(update={"pids": 64})
    assert narrow(PARENT, PolicyRequest()).name == "p"
    assert narrow(PARENT, None, name="other").name == "other"
    assert narrow(PARENT, None, name="other").directory == PARENT.directory


def test_equal_limits_narrow_and_one_more_is_wider() -> None:
    for key, value in {"cpus": 2.0, "memory_mb": 2048, "pids": 256, "timeout_s": 600}.items():
        assert getattr(narrow(PARENT, PolicyRequest(resources={key: value})).resources, key) == value
        with pytest.raises(PolicyViolation, match=rf"resources.{key}: .* is wider than the parent's") as info:
            narrow(PARENT, PolicyRequest(resources={key: value + 1}))
        assert info.value.hint == f"ask for at most {getattr(PARENT.resources, key)}"


def test_the_child_directory_accumulates_denies_and_read_only_and_inherits_every_allow_layer() -> None:
    request = DirectoryPolicy(allow=["src/lib/**"], deny=["src/lib/secret/**"], read_only=["src/lib/api.py"])
    child = narrow(PARENT, PolicyRequest(directory=request))
    assert child.directory.allow == ["src/lib/**"]
    assert child.directory.deny == ["src/lib/secret/**", "src/vendor/**"]
    assert child.directory.read_only == ["src/gen/**", "src/lib/api.py"]
    assert child.directory.inherited_allow == [["src/**", "tests/**"]]
    grandchild = narrow(child, PolicyRequest(directory=DirectoryPolicy(allow=["src/lib/a/**"])))
    assert grandchild.directory.inherited_allow == [["src/**", "tests/**"], ["src/lib/**"]]
    assert grandchild.matcher.is_visible("src/lib/a/x.py") and not grandchild.matcher.is_visible("src/lib/b.py")
    assert grandchild.matcher.why_not_writable("src/lib/api.py") == "outside the allowed paths"
    assert child.matcher.why_not_writable("src/lib/api.py") == "read-only by policy"


@pytest.mark.parametrize("glob", ["src/lib/*.py", "src/lib/", "tests/unit/**", "src/[ab]/x"])
def test_a_glob_inside_the_parents_paths_is_a_narrowing(glob: str) -> None:
    child = narrow(PARENT, PolicyRequest(directory=DirectoryPolicy(allow=[glob])))
    assert child.directory.allow == [glob]


@pytest.mark.parametrize("glob", ["*.py", "**/x", "?rc/**", "docs/**", "src/vendor/**", "srcx/**"])
def test_a_glob_reaching_outside_the_parents_paths_is_wider(glob: str) -> None:
    with pytest.raises(PolicyViolation, match=r"directory.allow\[0\]: .* is wider than the parent's allow") as info:
        narrow(PARENT, PolicyRequest(directory=DirectoryPolicy(allow=[glob])))
    assert info.value.message.startswith(f"directory.allow[0]: {glob!r} is wider than the parent's allow")
    assert "src/**" in str(info.value) and "subset of the parent's paths" in (info.value.hint or "")


def test_a_wildcard_glob_the_parent_itself_allows_may_be_asked_for_again() -> None:
    parent = make(directory={"allow": ["*.md", "src/**"]})
    child = narrow(parent, PolicyRequest(directory=DirectoryPolicy(allow=["*.md"])))
    assert child.matcher.is_visible("README.md") and not child.matcher.is_visible("src/a.py")


def test_a_network_request_that_narrows_keeps_its_own_domains() -> None:
    request = NetworkPolicy(mode="allowlist", allow_domains=["pkg.example"])
    assert narrow(PARENT, PolicyRequest(network=request)).network == request
    same = narrow(PARENT, PolicyRequest(network=NetworkPolicy(mode="allowlist")))
    assert same.network.mode == "allowlist" and same.network.allow_domains == []


def test_a_wider_network_mode_lists_the_modes_the_parent_allows() -> None:
    model_only = make(network={"mode": "model-only"})
    with pytest.raises(PolicyViolation) as info:
        narrow(model_only, PolicyRequest(network=NetworkPolicy(mode="allowlist")))
    assert "network.mode: 'allowlist' is wider than the parent's 'model-only'" in str(info.value)
    assert info.value.hint == "valid: none, model-only"
    assert narrow(model_only, PolicyRequest(network=NetworkPolicy(mode="model-only"))).network.mode == "model-only"


def test_a_domain_the_parent_lacks_is_named_with_the_parents_list() -> None:
    request = NetworkPolicy(mode="allowlist", allow_domains=["pkg.example", "evil.example"])
    with pytest.raises(PolicyViolation) as info:
        narrow(PARENT, PolicyRequest(network=request))
    assert "network.allow_domains: ['evil.example'] not in the parent's allowlist" in str(info.value)
    assert "pkg.example" not in str(info.value).split("allowlist")[0]


def test_domains_are_normalised_once_and_each_kept_once() -> None:
    network = NetworkPolicy(mode="allowlist", allow_domains=["PKG.example.", " pkg.example", "bücher.example"])
    assert network.allow_domains == ["pkg.example", "xn--bcher-kva.example"]
    with pytest.raises(ValueError, match="not a domain name: .*; write one such as 'pypi.example.org'"):
        NetworkPolicy(mode="allowlist", allow_domains=["a_b.example"])


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("", "empty glob; use e.g. 'src/**'"),
        ("   ", "empty glob; use e.g. 'src/**'"),
        ("C:/Windows/**", "is an absolute path; globs are relative to the workspace root"),
        ("c:", "is an absolute path"),
        ("src\\..\\..\\etc", "escapes the workspace with '..'"),
        ("x" * (MAX_GLOB_CHARS + 1), f"a glob of {MAX_GLOB_CHARS + 1} characters; the limit is {MAX_GLOB_CHARS}"),
    ],
)
def test_each_bad_glob_is_refused_with_its_own_reason(glob: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(directory={"read_only": [glob]})
    assert "directory.read_only[0]" in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize("glob", ["x" * MAX_GLOB_CHARS, "a", "..x/**", "ab:c", "src/.../x"])
def test_globs_at_the_edge_of_each_rule_are_accepted(glob: str) -> None:
    assert make(directory={"deny": [glob]}).directory.deny == [glob]


def test_a_request_with_more_globs_than_the_limit_names_the_list() -> None:
    from hydra_sandbox.limits import MAX_GLOBS

    for name in ("allow", "deny", "read_only"):
        globs = [f"d{i}/**" for i in range(MAX_GLOBS + 1)]
        expected = rf"^policy.directory.{name}: {MAX_GLOBS + 1} globs given, the limit is {MAX_GLOBS}"
        with pytest.raises(LimitExceededError, match=expected):
            PolicyRequest(directory=DirectoryPolicy(**{name: globs}))
        PolicyRequest(directory=DirectoryPolicy(**{name: globs[:MAX_GLOBS]}))


def test_a_catalog_lists_names_and_paths_and_a_later_directory_overrides(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "one.yaml").write_text("name: one\ndescription: first\n")
    (first / "two.yaml").write_text("name: two\n")
    (second / "one.yaml").write_text("name: one\ndescription: second\n")
    catalog = PolicyCatalog([first, None, second])
    assert catalog.names() == ["one", "two"]
    assert catalog.path("one") == second / "one.yaml" and catalog.path("two") == first / "two.yaml"
    assert catalog.get("one").description == "second"
    with pytest.raises(PolicyNotFoundError) as info:
        catalog.path("three")
    assert f"policy 'three' not found in {first}, {second}" in str(info.value)
    assert info.value.hint == "available policies: one, two"
    with pytest.raises(PolicyNotFoundError) as info:
        PolicyCatalog([tmp_path / "empty"]).get("one")
    assert info.value.hint == "available policies: none"


def test_a_bad_file_is_raised_again_each_time_and_the_good_ones_still_load(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: other\n")
    (tmp_path / "good.yaml").write_text("name: good\n")
    catalog = PolicyCatalog([tmp_path])
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"bad.yaml: name: 'other' does not match the file name") as info:
            catalog.get("bad")
        assert info.value.hint == "set name: bad"
    assert catalog.get("good").name == "good"


def test_explain_sorts_each_file_into_exactly_one_of_writable_or_read_only(tmp_path: Path) -> None:
    policy = make(
        directory={"allow": ["src/**", ".git/**", "link"], "deny": ["src/secret/**"], "read_only": ["src/gen/**"]}
    )
    for rel in ["src/a.py", "src/b/c.py", "src/gen/g.py", "src/secret/k", ".git/HEAD", "top.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "link").symlink_to("src", target_is_directory=True)
    result = explain(policy, tmp_path)
    # a directory level at a time, sorted: its files and links to directories, then its subdirectories
    assert result.visible == ["link", ".git/HEAD", "src/a.py", "src/b/c.py", "src/gen/g.py"]
    assert result.writable == ["link", "src/a.py", "src/b/c.py"]
    assert result.read_only == [".git/HEAD", "src/gen/g.py"]
    assert result.hidden == ["top.txt", "src/secret/k"]


def test_explain_hides_a_visible_file_hard_linked_to_a_hidden_one(tmp_path: Path) -> None:
    policy = make(directory={"allow": ["**"], "deny": ["secret/**"]})
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("k")
    os.link(tmp_path / "secret" / "key", tmp_path / "copy")
    (tmp_path / "plain").write_text("p")
    (tmp_path / "ro").mkdir()
    result = explain(policy, tmp_path)
    assert result.visible == ["plain"] and result.writable == ["plain"] and result.read_only == []
    assert result.hidden == ["copy", "secret/key"]


def test_a_narrowed_limit_the_model_refuses_is_reported_as_the_policy_requests() -> None:
    with pytest.raises(ConfigError) as info:
        narrow(PARENT, PolicyRequest(resources={"memory_mb": 1}))  # narrower, but below the floor of 64
    assert str(info.value).startswith("policy request: memory_mb: Input should be greater than or equal to 64")
    with pytest.raises(ConfigError) as info:
        narrow(PARENT, PolicyRequest(delegation={"max_children": -1}))
    assert str(info.value).startswith("policy request: max_children: Input should be greater than or equal to 0")


def test_a_glob_that_does_not_compile_is_refused_with_the_compilers_reason() -> None:
    with pytest.raises(ConfigError) as info:
        make(directory={"deny": ["[z-a]"]})
    assert "'[z-a]' is not a valid gitignore-style glob: bad character range z-a" in str(info.value)
