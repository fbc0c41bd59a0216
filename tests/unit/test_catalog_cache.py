"""Profile and policy catalogs read their YAML once and again only when a file changes: a call on the
event loop costs a listing and a stat per file, not a parse."""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import hydra_sandbox.policy as policy_module
import hydra_sandbox.profiles as profiles_module
from hydra_sandbox.errors import ConfigError, PolicyNotFoundError, ProfileNotFoundError
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.settings import BUILTIN_DIR
from hydra_sandbox.yaml_dirs import YamlDirectories


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Path]:
    """Record every path the module's YAML reader ``name`` is asked for (its last argument)."""
    seen: list[Path] = []
    real: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any) -> Any:
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def rewrite_same_size(path: Path, old: str, new: str) -> None:
    """Change a file in place without changing its size, and move its mtime on for sure."""
    assert len(old) == len(new)
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    shutil.copy(BUILTIN_DIR / "profiles" / "default.yaml", tmp_path / "default.yaml")
    return tmp_path


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    for name in ("default", "offline"):
        shutil.copy(BUILTIN_DIR / "policies" / f"{name}.yaml", tmp_path / f"{name}.yaml")
    return tmp_path


def test_profiles_are_parsed_once_for_many_calls(monkeypatch: pytest.MonkeyPatch, profiles: Path) -> None:
    reads = counting(monkeypatch, profiles_module, "read_yaml")
    catalog = ProfileCatalog([profiles])
    for _ in range(20):
        catalog.get("default")
        catalog.load_all()
        catalog.ids()
    assert reads == [profiles / "default.yaml"]


def test_an_edited_profile_is_seen_on_the_next_call(profiles: Path) -> None:
    catalog = ProfileCatalog([profiles])
    title = catalog.get("default").title
    text = (profiles / "default.yaml").read_text()
    (profiles / "default.yaml").write_text(text.replace(f"title: {title}", "title: Edited"))
    assert catalog.get("default").title == "Edited"


def test_a_same_size_edit_is_seen_by_its_modification_time(profiles: Path) -> None:
    catalog = ProfileCatalog([profiles])
    assert catalog.get("default").policy == "default"
    rewrite_same_size(profiles / "default.yaml", "policy: default", "policy: offline")
    assert catalog.get("default").policy == "offline"


def test_added_and_removed_profile_files_are_seen(profiles: Path) -> None:
    catalog = ProfileCatalog([profiles])
    shutil.copy(profiles / "default.yaml", profiles / "second.yaml")
    text = (profiles / "second.yaml").read_text().replace("id: default", "id: second")
    (profiles / "second.yaml").write_text(text)
    assert "second" in catalog.ids()
    (profiles / "second.yaml").unlink()
    with pytest.raises(ProfileNotFoundError):
        catalog.get("second")


def test_a_file_replaced_by_rename_is_seen(profiles: Path) -> None:
    """Editors save by writing a new file and renaming it over the old one: a new inode."""
    catalog = ProfileCatalog([profiles])
    catalog.get("default")
    fresh = profiles / "tmp.saving"
    fresh.write_text((profiles / "default.yaml").read_text().replace("title: Generalist", "title: Specialist"))
    os.replace(fresh, profiles / "default.yaml")
    assert catalog.get("default").title == "Specialist"


def test_policies_are_parsed_once_for_many_calls(monkeypatch: pytest.MonkeyPatch, policies: Path) -> None:
    reads = counting(monkeypatch, policy_module, "load_yaml_model")
    catalog = PolicyCatalog([policies])
    for _ in range(20):
        catalog.get("default")
        catalog.load_all()
        catalog.names()
    assert sorted(p.name for p in reads) == ["default.yaml", "offline.yaml"]


def test_an_edited_policy_is_seen_and_a_deleted_one_is_gone(policies: Path) -> None:
    catalog = PolicyCatalog([policies])
    assert catalog.get("offline").network.mode == "none"
    text = (policies / "offline.yaml").read_text()
    (policies / "offline.yaml").write_text(text + "\n# edited\n")
    assert catalog.get("offline").network.mode == "none"
    (policies / "offline.yaml").unlink()
    with pytest.raises(PolicyNotFoundError, match="available policies: default"):
        catalog.get("offline")


def test_a_broken_policy_fails_the_same_way_every_time(policies: Path) -> None:
    (policies / "bad.yaml").write_text("name: bad\nnetwork: {mode: everywhere}\n")
    catalog = PolicyCatalog([policies])
    errors = []
    for _ in range(3):
        with pytest.raises(ConfigError) as info:
            catalog.get("bad")
        errors.append(info.value)
    assert len({str(e) for e in errors}) == 1 and "network.mode" in str(errors[0])
    depths = [len(traceback.extract_tb(e.__traceback__)) for e in errors]
    assert depths[0] == depths[-1], "a remembered error is raised as a copy, its traceback does not grow"
    assert catalog.get("default").name == "default"  # one broken file never hides the others


def test_a_broken_file_that_is_fixed_loads(policies: Path) -> None:
    (policies / "bad.yaml").write_text("name: bad\nnetwork: {mode: everywhere}\n")
    catalog = PolicyCatalog([policies])
    assert "bad" in catalog.load_all()[1]
    (policies / "bad.yaml").write_text("name: bad\n")
    assert catalog.get("bad").name == "bad"


def test_yaml_directories_builds_only_when_something_changed(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (first / "x.yaml").write_text("1")
    built: list[list[str]] = []
    watch = YamlDirectories([first, None, second], lambda files: built.append([p.name for p in files]) or len(built))
    assert watch.current() == watch.current() == 1
    second.mkdir()  # a directory that appears later is looked at from then on
    (second / "x.yml").write_text("2")
    assert watch.current() == 2
    assert built == [["x.yaml"], ["x.yaml", "x.yml"]]
