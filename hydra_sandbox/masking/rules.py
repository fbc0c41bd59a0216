"""Masking rules as data: the built-in ``rules.yaml`` shipped with the package, and operator files
(``*.yaml`` in ``HYDRA_MASKING_RULES_DIR``) added after it.

A rule is a regular expression with the literals it contains (``keywords``, matched case-insensitively
by the fallback engine), an optional shorter ``prefilter`` for the multi-pattern engine, checks on the
value it would mask (entropy floor, ``require`` and ``allow`` patterns, the code test of generic rules)
and examples: each ``secret`` example must be masked by the rule, each ``ordinary`` one left alone.
Rules are tried in file order: where two candidates start together the earlier rule names the mask.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # the stdlib's own parser, for the widest match a pattern allows
from collections.abc import Iterable, Sequence
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.yaml_models import load_yaml_model, read_yaml, validate_data

MAX_RULE_WIDTH = 40_000
"""The widest match a rule may allow, in characters: a stream holds back twice this much at most."""

_VALUE_GROUP = re.compile(r"\(\?P<(v\d*)>")


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_compiles)]


class RuleExamples(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: list[str] = Field(default_factory=list, description="Texts this rule must mask.")
    ordinary: list[str] = Field(default_factory=list, description="Texts this rule must leave alone.")


class MaskingRule(BaseModel):
    """One pattern rule. A group named ``v`` (or ``v2``, ``v3``...) marks the part to mask; without one
    the whole match is masked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Shown in the mask: [MASKED:<id>].")
    description: str = ""
    pattern: Regex
    keywords: tuple[str, ...] = Field(
        default=(), description="Literals every match contains (case-insensitive); none: scanned everywhere."
    )
    prefilter: Regex | None = Field(
        default=None, description="A cheaper pattern for the multi-pattern engine; a match of it must end inside "
        "every match of ``pattern``. Default: ``pattern`` itself."
    )
    before_hit: int | None = Field(
        default=None, ge=1, description="A match starts at most this far before the end of the first prefilter "
        "hit, and of the first keyword, inside it (default: max_length). Narrows the search window and what a "
        "stream holds back; too small, and the start of a secret is emitted unmasked."
    )
    after_hit: int | None = Field(
        default=None, ge=0, description="A match ends at most this far after the end of the first prefilter hit, "
        "and of the first keyword, inside it (default: max_length)."
    )
    entropy: float = Field(default=0.0, ge=0.0, le=8.0, description="Minimum Shannon entropy (bits/char) of the value.")
    require: tuple[Regex, ...] = Field(default=(), description="Patterns the value must contain, each of them.")
    allow: tuple[Regex, ...] = Field(default=(), description="A value matching one of these in full is not a secret.")
    generic: bool = Field(
        default=False, description="A name=value rule: values that read as code or placeholders are not secrets."
    )
    examples: RuleExamples = Field(default_factory=RuleExamples)

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for word in value:
            if len(word) < 2:
                raise ValueError(f"keyword {word!r} is shorter than 2 characters; use a longer literal")
        return tuple(w.lower() for w in value)

    @model_validator(mode="after")
    def _bounded(self) -> MaskingRule:
        width = self.max_length
        if width > MAX_RULE_WIDTH:
            raise ValueError(
                f"pattern of rule {self.id!r} can match {'unboundedly many' if width >= 1 << 60 else width} "
                f"characters; bound every repeat (e.g. {{1,200}} instead of +) so matches stay under {MAX_RULE_WIDTH}"
            )
        names = _VALUE_GROUP.findall(self.pattern)
        if any(not re.fullmatch(r"v\d*", n) for n in names):
            raise ValueError(f"rule {self.id!r}: value groups are named v, v2, v3...")
        return self

    @cached_property
    def max_length(self) -> int:
        """The widest match the pattern allows (lookarounds excluded)."""
        return int(sre_parse.parse(self.pattern).getwidth()[1])

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    @cached_property
    def value_groups(self) -> tuple[str, ...]:
        return tuple(_VALUE_GROUP.findall(self.pattern))

    @cached_property
    def require_regexes(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.require)

    @cached_property
    def allow_regex(self) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{p})" for p in self.allow)) if self.allow else None


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=1, ge=1, le=1)
    rules: list[MaskingRule]


def _check_unique(rules: Sequence[MaskingRule], source: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ConfigError(f"{source}: rule id {rule.id!r} appears twice", hint="give every rule its own id")
        seen.add(rule.id)


@lru_cache(maxsize=1)
def default_rules() -> tuple[MaskingRule, ...]:
    """The built-in rules shipped as ``hydra_sandbox/masking/rules.yaml``."""
    source = resources.files("hydra_sandbox.masking").joinpath("rules.yaml")
    with resources.as_file(source) as path:
        data = read_yaml(Path(path))
    rules = validate_data(RuleFile, data, "built-in masking rules").rules
    _check_unique(rules, "built-in masking rules")
    return tuple(rules)


def load_rules(directories: Iterable[Path] = ()) -> tuple[MaskingRule, ...]:
    """The built-in rules followed by every ``*.yaml`` rule file of ``directories`` (sorted by name).
    An operator rule with a built-in rule's id replaces it in place."""
    rules = list(default_rules())
    for directory in directories:
        if not directory.is_dir():
            raise ConfigError(
                f"HYDRA_MASKING_RULES_DIR: {directory} is not a directory",
                hint="create it or unset HYDRA_MASKING_RULES_DIR",
            )
        for path in sorted(directory.glob("*.yaml")):
            extra = load_yaml_model(RuleFile, path).rules
            _check_unique(extra, str(path))
            for rule in extra:
                at = next((i for i, r in enumerate(rules) if r.id == rule.id), None)
                if at is None:
                    rules.append(rule)
                else:
                    rules[at] = rule
    return tuple(rules)
