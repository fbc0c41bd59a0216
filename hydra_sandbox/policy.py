"""Directory, network, resource and delegation policy, and how a child's policy narrows its parent's.

Directory globs use gitignore syntax (``pathspec``'s ``gitwildmatch``) relative to the workspace
root. A path is visible when every allow layer matches it and no deny glob does; deny wins.
Protected paths (:mod:`hydra_sandbox.protected`) apply to every policy and
cannot be removed by any policy or request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from hydra_sandbox.egress_rules import policy_domain
from hydra_sandbox.errors import ConfigError, PolicyNotFoundError, PolicyViolation, shown
from hydra_sandbox.glob_sets import glob_set
from hydra_sandbox.hardlinks import is_multiply_linked, linked_to_hidden
from hydra_sandbox.limits import MAX_GLOB_CHARS, MAX_GLOBS, check_count
from hydra_sandbox.linear_match import MAX_GLOBS as MAX_POLICY_GLOBS
from hydra_sandbox.protected import PROTECTED_HIDDEN, PROTECTED_READ_ONLY
from hydra_sandbox.yaml_dirs import YamlDirectories, fresh, load_each
from hydra_sandbox.yaml_models import field_path, load_yaml_model, validate_data

NetworkMode = Literal["none", "model-only", "allowlist"]
_NETWORK_ORDER: dict[str, int] = {"none": 0, "model-only": 1, "allowlist": 2}


def _check_glob(value: str) -> str:
    if not value or not value.strip():
        raise ValueError("empty glob; use e.g. 'src/**'")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"{shown(value)} is an absolute path; globs are relative to the workspace root, e.g. 'src/**'")
    parts = value.replace("\\", "/").split("/")
    if ".." in parts:
        raise ValueError(f"{shown(value)} escapes the workspace with '..'; globs stay inside the workspace root")
    if len(value) > MAX_GLOB_CHARS:
        raise ValueError(f"a glob of {len(value)} characters; the limit is {MAX_GLOB_CHARS}")
    try:  # compiled now, so a bad glob is refused where it is written, not when an agent starts
        glob_set([value])
    except (ValueError, re.error) as exc:
        raise ValueError(f"{shown(value)} is not a valid gitignore-style glob: {str(exc)[:80]}") from None
    return value


Glob = Annotated[str, AfterValidator(_check_glob)]
Globs = Annotated[list[Glob], Field(max_length=MAX_POLICY_GLOBS)]  # a request: MAX_GLOBS (limits)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DirectoryPolicy(_Strict):
    allow: Globs = Field(default_factory=lambda: ["**"], description="Globs the agent may see.")
    deny: Globs = Field(default_factory=list, description="Globs hidden from the agent; deny wins.")
    read_only: Globs = Field(default_factory=list, description="Visible globs the agent may not change.")
    # Allow lists inherited from ancestors: a child sees a path only if every layer allows it.
    inherited_allow: list[Globs] = Field(default_factory=list, max_length=32)


class NetworkPolicy(_Strict):
    mode: NetworkMode = "model-only"
    allow_domains: list[str] = Field(default_factory=list, description="Used when mode is 'allowlist'.")

    @field_validator("allow_domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        """Plain LDH names (a Unicode name becomes its IDNA ``xn--`` form), as the egress relay
        compares them; see :mod:`hydra_sandbox.egress_rules`."""
        out = []
        for value in values:
            try:
                name = policy_domain(value)
            except ValueError as exc:
                raise ValueError(f"not a domain name: {exc}; write one such as 'pypi.example.org'") from None
            if name not in out:
                out.append(name)
        return out


class ResourceLimits(_Strict):
    cpus: float = Field(default=1.0, gt=0, le=64, description="CPU cores (nano_cpus).")
    memory_mb: int = Field(default=2048, ge=64, le=262144, description="Memory and memory+swap limit.")
    pids: int = Field(default=256, ge=16, le=65536, description="Maximum processes and threads.")
    timeout_s: int = Field(default=1800, ge=1, le=86400, description="Wall-clock limit of one run.")
    max_output_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, description="Output kept per run.")
    max_model_tokens: int | None = Field(
        default=None,
        ge=1,
        le=10**12,
        description="Model tokens (input + output, as the model reports them) a session may use through the "
        "gateway; past it further model requests are refused and the run fails. None: no limit.",
    )
    disk_mb: int | None = Field(
        default=None, ge=16, le=1_048_576, description="Quota of the writable workspace layer (MB); none if unset."
    )
    max_apply_file_mb: int = Field(
        default=100, ge=1, le=1048576, description="Largest file apply writes (MiB); larger ones are refused."
    )


class DelegationLimits(_Strict):
    max_depth: int = Field(default=2, ge=0, le=16, description="Levels of children below this session.")
    max_children: int = Field(default=4, ge=0, le=256, description="Direct children of one session.")
    allow_widening: Literal[False] = Field(default=False, description="Always false: children only narrow.")


class Policy(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = ""
    directory: DirectoryPolicy = Field(default_factory=DirectoryPolicy)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    resources: ResourceLimits = Field(default_factory=ResourceLimits)
    delegation: DelegationLimits = Field(default_factory=DelegationLimits)

    @cached_property
    def matcher(self) -> PathMatcher:
        return PathMatcher(self.directory)


class PolicyRequest(_Strict):
    """What a caller asks for on top of a base policy. Every field may only narrow."""

    directory: DirectoryPolicy | None = None
    network: NetworkPolicy | None = None
    resources: dict[str, float | int] | None = None
    delegation: dict[str, int] | None = None

    @field_validator("directory")
    @classmethod
    def _bounded_globs(cls, value: DirectoryPolicy | None) -> DirectoryPolicy | None:
        if value is not None:
            for name in ("allow", "deny", "read_only"):
                check_count(f"policy.directory.{name}", getattr(value, name), MAX_GLOBS, "globs")
        return value


class PathMatcher:
    """Answers what an agent may see and write, for workspace-relative POSIX paths."""

    def __init__(self, directory: DirectoryPolicy) -> None:
        self._allow_layers = [glob_set(layer) for layer in [*directory.inherited_allow, directory.allow]]
        self._denied = glob_set(directory.deny)
        self._hidden = glob_set(PROTECTED_HIDDEN, ignore_case=True)
        self._read_only = glob_set([*directory.read_only, *PROTECTED_READ_ONLY])
        self._protected_read_only = glob_set(PROTECTED_READ_ONLY)

    def is_visible(self, rel: str) -> bool:
        if self.is_denied(rel):
            return False
        return all(layer.match_file(rel) for layer in self._allow_layers)

    def is_denied(self, rel: str) -> bool:
        """Hidden by a deny or protected glob (whatever the allow lists say)."""
        return self._hidden.match_file(rel) or self._denied.match_file(rel)

    def is_writable(self, rel: str) -> bool:
        return self.is_visible(rel) and not self._read_only.match_file(rel)

    def is_protected(self, rel: str) -> bool:
        return self._hidden.match_file(rel) or self._protected_read_only.match_file(rel)

    def why_not_writable(self, rel: str) -> str | None:
        """``None`` when writable, else a short reason for reports."""
        if self.is_protected(rel):
            return "protected path"
        if self._denied.match_file(rel):
            return "denied by policy"
        if not all(layer.match_file(rel) for layer in self._allow_layers):
            return "outside the allowed paths"
        if self._read_only.match_file(rel):
            return "read-only by policy"
        return None


def _fixed_prefix(glob: str) -> str:
    """The literal directory part of a glob before its first wildcard: ``src/lib/*.py`` -> ``src/lib``."""
    out = []
    for part in glob.strip("/").split("/"):
        if any(ch in part for ch in "*?["):
            break
        out.append(part)
    return "/".join(out)


def narrow(parent: Policy, request: PolicyRequest | None, *, name: str | None = None) -> Policy:
    """The parent's policy narrowed by ``request``; any widening raises :class:`PolicyViolation`.

    The field that would widen is named in the message. Narrowing is also enforced structurally:
    the child's allow list is intersected with every ancestor's, and denies only accumulate.
    """
    if request is None:
        return parent.model_copy(update={"name": name or parent.name})
    directory = parent.directory
    if request.directory is not None:
        parent_matcher = PathMatcher(parent.directory)
        for i, glob in enumerate(request.directory.allow):
            probe = _fixed_prefix(glob)
            probe_path = f"{probe}/x" if probe else "x"
            wider = not probe or not parent_matcher.is_visible(probe_path)
            if wider and glob not in parent.directory.allow:
                raise PolicyViolation(
                    f"directory.allow[{i}]: {shown(glob)} is wider than the parent's allow {parent.directory.allow}",
                    hint="ask for a subset of the parent's paths, e.g. 'src/**' inside an allowed 'src/'",
                )
        directory = DirectoryPolicy(
            allow=request.directory.allow,
            deny=sorted({*parent.directory.deny, *request.directory.deny}),
            read_only=sorted({*parent.directory.read_only, *request.directory.read_only}),
            inherited_allow=[*parent.directory.inherited_allow, parent.directory.allow],
        )
    network = parent.network
    if request.network is not None:
        if _NETWORK_ORDER[request.network.mode] > _NETWORK_ORDER[parent.network.mode]:
            raise PolicyViolation(
                f"network.mode: {request.network.mode!r} is wider than the parent's {parent.network.mode!r}",
                hint="valid: "
                + ", ".join(m for m, o in _NETWORK_ORDER.items() if o <= _NETWORK_ORDER[parent.network.mode]),
            )
        extra = [d for d in request.network.allow_domains if d not in parent.network.allow_domains]
        if extra:
            raise PolicyViolation(
                f"network.allow_domains: {shown(extra)} not in the parent's allowlist {parent.network.allow_domains}",
                hint="a child may only use domains its parent may use",
            )
        network = request.network
    resources = parent.resources
    if request.resources is not None:
        updates = _narrow_numbers("resources", parent.resources, request.resources)
        resources = validate_data(ResourceLimits, {**parent.resources.model_dump(), **updates}, "policy request")
    delegation = parent.delegation
    if request.delegation is not None:
        updates = _narrow_numbers("delegation", parent.delegation, request.delegation)
        delegation = validate_data(DelegationLimits, {**parent.delegation.model_dump(), **updates}, "policy request")
    return Policy(
        name=name or parent.name,
        description=parent.description,
        directory=directory,
        network=network,
        resources=resources,
        delegation=delegation,
    )


def _narrow_numbers(section: str, parent: BaseModel, request: Mapping[str, float | int]) -> dict[str, float | int]:
    fields = {k for k, v in type(parent).model_fields.items() if v.annotation in (int, float, int | None)}
    out: dict[str, float | int] = {}
    for key, value in request.items():
        if key not in fields:
            raise PolicyViolation(
                f"{field_path((section, key))}: unknown field", hint="valid: " + ", ".join(sorted(fields))
            )
        current = getattr(parent, key)
        if current is not None and value > current:  # None: the parent has no limit, any value narrows
            raise PolicyViolation(
                f"{section}.{key}: {shown(value)} is wider than the parent's {current}",
                hint=f"ask for at most {current}",
            )
        out[key] = value
    return out


def child_of(parent: Policy) -> Policy:
    """The policy a child starts from: the parent's, one delegation level down."""
    if parent.delegation.max_depth <= 0:
        raise PolicyViolation(
            f"delegation.max_depth: policy {parent.name!r} allows no further children",
            hint="the session is already at the deepest level its policy allows",
        )
    delegation = parent.delegation.model_copy(update={"max_depth": parent.delegation.max_depth - 1})
    return parent.model_copy(update={"delegation": delegation})


def _load_policy(path: Path) -> Policy:
    policy = load_yaml_model(Policy, path)
    if policy.name != path.stem:
        raise ConfigError(f"{path}: name: {policy.name!r} does not match the file name", hint=f"set name: {path.stem}")
    return policy


@dataclass(frozen=True)
class _Loaded:
    """Every policy file of the catalog read and validated: one build."""

    files: dict[str, Path]
    good: dict[str, Policy]
    bad: dict[str, ConfigError]


def _load(found: list[Path]) -> _Loaded:
    files = {path.stem: path for path in found}  # a later directory overrides by name
    good, bad = load_each((name, partial(_load_policy, path)) for name, path in sorted(files.items()))
    return _Loaded(files=files, good=good, bad=bad)


class PolicyCatalog:
    """Policies by name from the built-in directory and the user's (later directories override); each
    file is read once and again only when it changes (:class:`~hydra_sandbox.yaml_dirs.YamlDirectories`)."""

    def __init__(self, directories: Iterable[Path | None]) -> None:
        self._files = YamlDirectories(directories, _load)
        self._dirs = self._files.directories

    def names(self) -> list[str]:
        return sorted(self._files.current().files)

    def path(self, name: str) -> Path:
        files = self._files.current().files
        if name not in files:
            raise self._not_found(name, files)
        return files[name]

    def get(self, name: str) -> Policy:
        loaded = self._files.current()
        if name in loaded.bad:
            raise fresh(loaded.bad[name])
        if name not in loaded.good:
            raise self._not_found(name, loaded.files)
        return loaded.good[name]

    def _not_found(self, name: str, files: Mapping[str, Path]) -> PolicyNotFoundError:
        return PolicyNotFoundError(
            f"policy {shown(name)} not found in {', '.join(str(d) for d in self._dirs)}",
            hint="available policies: " + (", ".join(sorted(files)) or "none"),
        )

    def load_all(self) -> tuple[dict[str, Policy], dict[str, ConfigError]]:
        """Every policy that loads, and the error of each one that does not."""
        loaded = self._files.current()
        return dict(loaded.good), dict(loaded.bad)


class Explanation(BaseModel):
    visible: list[str]
    hidden: list[str]
    writable: list[str]
    read_only: list[str]


def _walk(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames.sort()
        for fname in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            rel = fname if rel_dir == "." else f"{rel_dir}/{fname}"
            yield rel.replace(os.sep, "/")


def explain(policy: Policy, workspace: Path) -> Explanation:
    """Which files of ``workspace`` an agent under ``policy`` would see, not see, and may write."""
    if not workspace.is_dir():
        raise ConfigError(f"--workspace: {workspace} is not a directory")
    matcher = policy.matcher
    visible: list[str] = []
    hidden: list[str] = []
    writable: list[str] = []
    read_only: list[str] = []
    for rel in _walk(workspace):
        if matcher.is_visible(rel):
            visible.append(rel)
            (writable if matcher.is_writable(rel) else read_only).append(rel)
        else:
            hidden.append(rel)
    linked = linked_to_hidden(workspace, hidden, [v for v in visible if is_multiply_linked(workspace / v)])
    if linked:
        visible = [v for v in visible if v not in linked]
        writable = [v for v in writable if v not in linked]
        read_only = [v for v in read_only if v not in linked]
        hidden = sorted(hidden + linked)
    return Explanation(visible=visible, hidden=hidden, writable=writable, read_only=read_only)
