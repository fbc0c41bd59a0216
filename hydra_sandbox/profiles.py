"""Agent profiles: persona, system prompt, goals, checklist template, default policy and limits.

Merge order, later wins:

1. built-in profiles (``profiles/*.yaml`` shipped with Hydra);
2. the user's profile directory (``HYDRA_PROFILES_DIR``): a file whose ``id`` matches a built-in
   replaces the top-level fields it sets and keeps the others; a new id adds a profile;
3. per-call values (:class:`ProfileOverrides`): ``goalset`` entries are appended to the profile's,
   ``custom_prompt`` is the task given to the agent, ``model`` replaces the profile's model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import pathspec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from hydra_sandbox.errors import ConfigError, ProfileNotFoundError, shown
from hydra_sandbox.linear_match import check_pattern, compile_linear
from hydra_sandbox.yaml_dirs import YamlDirectories, fresh, load_each
from hydra_sandbox.yaml_models import read_yaml, validate_data

_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(value: str) -> str:
    check_pattern(value, "regular expression")
    try:
        compile_linear(value)  # matched against agent text: never a backtracking engine
    except ValueError as exc:
        raise ValueError(f"{shown(value)} is {exc}") from None
    return value


def _check_glob(value: str) -> str:
    check_pattern(value, "glob")
    try:
        pathspec.PathSpec.from_lines("gitignore", [value]).match_file("x")
    except (ValueError, re.error) as exc:
        raise ValueError(f"{shown(value)} is not a valid gitignore-style glob: {str(exc)[:80]}") from None
    return value


# Compiled when the profile loads, so a bad one names its file and field instead of failing every
# event of a running session.
Regex = Annotated[str, AfterValidator(_check_regex)]
Glob = Annotated[str, AfterValidator(_check_glob)]


class TestPassedRule(_Strict):
    kind: Literal["test_passed"]
    runner: str | None = Field(default=None, description="Only tests run by this runner, e.g. 'pytest'.")


class CommandSucceededRule(_Strict):
    kind: Literal["command_succeeded"]
    pattern: Regex = Field(description="Regular expression searched in the command line.")


class FileChangedRule(_Strict):
    kind: Literal["file_changed"]
    glob: Glob = Field(description="gitignore-style glob relative to the workspace root.")


class DecisionStatedRule(_Strict):
    kind: Literal["decision_stated"]
    pattern: Regex = Field(default=".", description="Regular expression the decision text must match.")


class MessageMatchesRule(_Strict):
    kind: Literal["message_matches"]
    pattern: Regex = Field(description="Regular expression searched in the agent's messages.")


ChecklistRule = Annotated[
    TestPassedRule | CommandSucceededRule | FileChangedRule | DecisionStatedRule | MessageMatchesRule,
    Field(discriminator="kind"),
]


class ChecklistItemTemplate(_Strict):
    id: str = Field(pattern=_ID)
    description: str
    rule: ChecklistRule


class ApplyRule(_Strict):
    """A business rule checked by ``apply_diff``: a child of this profile must have passed first."""

    name: str = Field(pattern=_ID)
    kind: Literal["child_completed"] = "child_completed"
    profile_id: str = Field(description="The child's profile, e.g. 'code_reviewer'.")
    checklist_item: str | None = Field(default=None, description="The child's item that must be done.")


class Profile(_Strict):
    id: str = Field(pattern=_ID)
    title: str
    description: str
    persona: str
    system_prompt: str
    goalset: list[str] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)
    expected_outputs: list[str] = Field(default_factory=list)
    checklist_template: list[ChecklistItemTemplate] = Field(default_factory=list)
    policy: str = Field(default="default", description="Name of the policy used when none is given.")
    model: str | None = Field(default=None, description="Model name; unset uses HYDRA_MODEL.")
    limits: dict[str, float | int] = Field(default_factory=dict, description="Narrows the policy's resources.")
    read_only: bool = Field(default=False, description="The agent must not change files; its diff is refused.")
    test_runners: list[str] = Field(
        default_factory=lambda: [
            "pytest",
            "python -m pytest",
            "python3 -m pytest",
            "python -m unittest",
            "python3 -m unittest",
            "npm test",
            "npm run test",
            "npx jest",
            "npx vitest",
            "jest",
            "vitest",
            "go test",
            "cargo test",
            "make test",
            "make check",
        ],
        description="Command prefixes that count as test runs.",
    )
    apply_requires: list[ApplyRule] = Field(default_factory=list)

    @field_validator("checklist_template")
    @classmethod
    def _unique_items(cls, items: list[ChecklistItemTemplate]) -> list[ChecklistItemTemplate]:
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise ValueError(f"checklist item id {item.id!r} appears twice")
            seen.add(item.id)
        return items


class ProfileOverrides(_Strict):
    """Per-call values that refine a profile."""

    custom_prompt: str | None = None
    goalset: list[str] = Field(default_factory=list)
    model: str | None = None


def apply_overrides(profile: Profile, overrides: ProfileOverrides | None) -> Profile:
    if overrides is None:
        return profile
    update: dict[str, Any] = {"goalset": [*profile.goalset, *overrides.goalset]}
    if overrides.model:
        update["model"] = overrides.model
    return profile.model_copy(update=update)


def render_prompt(profile: Profile, task: str | None, inputs: dict[str, Any] | None = None) -> str:
    """The one prompt string handed to Codex: system prompt, persona, goals, constraints, task."""
    parts = [profile.system_prompt.strip(), f"Persona: {profile.persona.strip()}"]
    if profile.goalset:
        parts.append("Goals:\n" + "\n".join(f"- {g}" for g in profile.goalset))
    if profile.constraints:
        parts.append("Constraints:\n" + "\n".join(f"- {c}" for c in profile.constraints))
    if profile.expected_outputs:
        parts.append("Expected outputs:\n" + "\n".join(f"- {o}" for o in profile.expected_outputs))
    if profile.checklist_template:
        parts.append("Checklist:\n" + "\n".join(f"- {i.id}: {i.description}" for i in profile.checklist_template))
    if inputs:
        parts.append("Inputs:\n" + "\n".join(f"- {k}: {v}" for k, v in sorted(inputs.items())))
    if task:
        parts.append(f"Task:\n{task.strip()}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class _Loaded:
    """Every profile file read, merged by id and validated: one build of the catalog."""

    good: dict[str, Profile]
    invalid: dict[str, ConfigError]  # merged but not valid, by id
    unreadable: dict[str, ConfigError]  # files that did not parse, by file stem


def _load(files: list[Path]) -> _Loaded:
    merged: dict[str, tuple[dict[str, Any], list[Path]]] = {}
    unreadable: dict[str, ConfigError] = {}
    for path in files:  # one broken file does not hide the others
        try:
            data = read_yaml(path)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a mapping of profile fields at the top level")
        except ConfigError as exc:
            unreadable[path.stem] = exc
            continue
        pid = str(data.get("id", path.stem))
        base, sources = merged.get(pid, ({}, []))
        merged[pid] = ({**base, **data}, [*sources, path])
    good, invalid = load_each(
        (pid, partial(validate_data, Profile, data, " + ".join(str(s) for s in sources)))
        for pid, (data, sources) in sorted(merged.items())
    )
    return _Loaded(good=good, invalid=invalid, unreadable=unreadable)


class ProfileCatalog:
    """Profiles from several directories, later ones overriding earlier ones (see the module doc); each
    file is read once and again only when it changes (:class:`~hydra_sandbox.yaml_dirs.YamlDirectories`)."""

    def __init__(self, directories: Iterable[Path | None]) -> None:
        self._files = YamlDirectories(directories, _load)
        self._dirs = self._files.directories

    def ids(self) -> list[str]:
        loaded = self._files.current()
        return sorted(set(loaded.good) | set(loaded.invalid) | set(loaded.unreadable))

    def get(self, profile_id: str) -> Profile:
        loaded = self._files.current()
        if profile_id in loaded.good:
            return loaded.good[profile_id]
        error = loaded.invalid.get(profile_id) or loaded.unreadable.get(profile_id)
        if error is not None:
            raise fresh(error)
        raise ProfileNotFoundError(
            f"profile {shown(profile_id)} not found",
            hint="available profiles: "
            + (", ".join(sorted(loaded.good)) or "none")
            + f"; searched {', '.join(str(d) for d in self._dirs)}",
        )

    def load_all(self) -> tuple[dict[str, Profile], dict[str, ConfigError]]:
        """Every profile that loads, and the error of each one that does not."""
        loaded = self._files.current()
        return dict(loaded.good), {**loaded.unreadable, **loaded.invalid}
