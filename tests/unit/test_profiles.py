from pathlib import Path

import pytest

from hydra_sandbox.errors import ConfigError, ProfileNotFoundError
from hydra_sandbox.profiles import ProfileCatalog, ProfileOverrides, apply_overrides, render_prompt
from hydra_sandbox.settings import REPO_ROOT

BUILTIN = REPO_ROOT / "profiles"


def test_builtin_profiles_all_load() -> None:
    good, bad = ProfileCatalog([BUILTIN]).load_all()
    assert bad == {}
    assert {"default", "coder", "code_reviewer", "data_migration"} <= set(good)
    assert good["code_reviewer"].read_only is True
    assert good["code_reviewer"].policy == "read_only"


def test_user_file_overrides_only_the_fields_it_sets(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text("id: default\ntitle: Our generalist\n")
    profile = ProfileCatalog([BUILTIN, tmp_path]).get("default")
    builtin = ProfileCatalog([BUILTIN]).get("default")
    assert profile.title == "Our generalist"
    assert profile.system_prompt == builtin.system_prompt


def test_user_directory_can_add_profiles(tmp_path: Path) -> None:
    (tmp_path / "docs.yaml").write_text("id: docs_writer\ntitle: Docs\ndescription: d\npersona: p\nsystem_prompt: s\n")
    assert "docs_writer" in ProfileCatalog([BUILTIN, tmp_path]).ids()


def test_per_call_values_extend_goals_and_replace_model() -> None:
    base = ProfileCatalog([BUILTIN]).get("default")
    merged = apply_overrides(base, ProfileOverrides(goalset=["Also update docs"], model="other-model"))
    assert merged.goalset == [*base.goalset, "Also update docs"]
    assert merged.model == "other-model"
    prompt = render_prompt(merged, "Fix the bug", {"ticket": "T-1"})
    assert "Also update docs" in prompt and prompt.endswith("Task:\nFix the bug")
    assert "ticket: T-1" in prompt


def test_missing_profile_lists_available_ones() -> None:
    with pytest.raises(ProfileNotFoundError) as info:
        ProfileCatalog([BUILTIN]).get("nope")
    message = str(info.value)
    assert "'nope' not found" in message
    assert "code_reviewer" in message and "default" in message


def test_unknown_field_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("id: x\ntitle: X\ndescription: d\npersona: p\nsystem_prompt: s\ncolour: red\n")
    with pytest.raises(ConfigError) as info:
        ProfileCatalog([tmp_path]).get("x")
    assert "x.yaml" in str(info.value)
    assert "colour: unknown field" in str(info.value)
    assert "valid top-level fields" in str(info.value)


def test_wrong_type_names_nested_field_path(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "id: x\ntitle: X\ndescription: d\npersona: p\nsystem_prompt: s\n"
        "checklist_template:\n  - id: a\n    description: d\n    rule: {kind: test_passed}\n"
        "  - id: b\n    description: d\n    rule: {kind: file_changed, glob: 5}\n"
    )
    with pytest.raises(ConfigError) as info:
        ProfileCatalog([tmp_path]).get("x")
    assert "checklist_template[1].rule.file_changed.glob" in str(info.value)


def test_unknown_rule_kind_lists_valid_kinds(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "id: x\ntitle: X\ndescription: d\npersona: p\nsystem_prompt: s\n"
        "checklist_template:\n  - id: a\n    description: d\n    rule: {kind: vibes}\n"
    )
    with pytest.raises(ConfigError) as info:
        ProfileCatalog([tmp_path]).get("x")
    assert "test_passed" in str(info.value) and "file_changed" in str(info.value)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("id: broken\ntitle: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        ProfileCatalog([tmp_path]).get("broken")
    assert "broken.yaml" in str(info.value)
    assert "line" in str(info.value) and "YAML syntax error" in str(info.value)


def test_a_broken_profile_does_not_hide_the_others(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("id: broken\ntitle: [unclosed\n")
    good, bad = ProfileCatalog([BUILTIN, tmp_path]).load_all()
    assert "default" in good
    assert "broken" in bad


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("id: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML"):
        ProfileCatalog([tmp_path]).get("x")


def test_odd_keys_are_quoted_and_long_lists_of_problems_cut_short(tmp_path: Path) -> None:
    keys = "\n".join(f'"bad key {i}\\twith tab": 1' for i in range(8))
    (tmp_path / "x.yaml").write_text(f"id: x\ntitle: X\ndescription: d\npersona: p\nsystem_prompt: s\n{keys}\n")
    with pytest.raises(ConfigError) as info:
        ProfileCatalog([tmp_path]).get("x")
    lines = str(info.value).splitlines()
    assert "x.yaml: ['bad key 0\\twith tab']: unknown field" in lines[0]
    assert len(lines) == 6 and "... and 3 more problem(s)" in lines[-1]


def test_non_utf8_profile_is_reported_and_does_not_hide_the_others(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_bytes(b"id: broken\ntitle: caf\xe9\n")
    (tmp_path / "docs.yaml").write_text("id: docs\ntitle: Docs\ndescription: d\npersona: p\nsystem_prompt: s\n")
    good, bad = ProfileCatalog([tmp_path]).load_all()
    assert set(good) == {"docs"}
    assert "broken.yaml: line 2, column 11: not UTF-8 text" in str(bad["broken"])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{kind: command_succeeded, pattern: '('}", "not a valid regular expression"),
        ("{kind: message_matches, pattern: '[a-'}", "not a valid regular expression"),
        ("{kind: file_changed, glob: '[z-a]'}", "not a valid gitignore-style glob"),
    ],
)
def test_a_checklist_rule_that_does_not_compile_is_refused_when_the_profile_loads(
    tmp_path: Path, rule: str, expected: str
) -> None:
    """It used to load and then raise re.error on every event of a running session."""
    (tmp_path / "x.yaml").write_text(
        "id: x\ntitle: X\ndescription: d\npersona: p\nsystem_prompt: s\n"
        f"checklist_template:\n  - {{id: a, description: d, rule: {rule}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        ProfileCatalog([tmp_path]).get("x")
    assert "x.yaml: checklist_template[0].rule." in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    ("content", "where"), [("\x00", "line 1, column 1"), ("id: x\ntitle: a\x07b\n", "line 2, column 9")]
)
def test_control_characters_are_a_yaml_error_naming_line_and_column(tmp_path: Path, content: str, where: str) -> None:
    from hydra_sandbox.errors import ConfigError
    from hydra_sandbox.yaml_models import read_yaml

    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"bad.yaml: {where}: YAML syntax error: character"):
        read_yaml(path)
