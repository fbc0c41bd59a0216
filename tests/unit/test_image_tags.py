"""Agent image tags follow the Codex version built: an upgrade is one setting and a rebuild, and a tag
that names one Codex version never receives another (checked without building anything)."""

from __future__ import annotations

from pathlib import Path

import pytest

import hydra_sandbox.images as images
from hydra_sandbox.errors import ConfigError, ImageBuildError
from hydra_sandbox.image_tags import agent_image_tags, codex_version_in_tag, default_agent_image
from hydra_sandbox.settings import CODEX_VERSION, HydraSettings, load_settings


def test_the_default_agent_image_follows_the_codex_version_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_AGENT_IMAGE", raising=False)
    assert HydraSettings().agent_image == f"hydra-agent:codex-{CODEX_VERSION}"
    monkeypatch.setenv("HYDRA_CODEX_VERSION", "0.171.0")
    assert load_settings().agent_image == "hydra-agent:codex-0.171.0" == default_agent_image("0.171.0")


def test_an_agent_image_set_on_purpose_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_AGENT_IMAGE", "registry.local:5000/team/agent:pinned")
    monkeypatch.setenv("HYDRA_CODEX_VERSION", "0.171.0")
    assert load_settings().agent_image == "registry.local:5000/team/agent:pinned"


def test_a_codex_version_that_is_not_a_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_CODEX_VERSION", "latest; rm -rf /")
    with pytest.raises(ConfigError, match="HYDRA_CODEX_VERSION"):
        load_settings()


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("hydra-agent:codex-0.169.0", "0.169.0"),
        ("hydra-agent:0.1.0-codex-0.171.0-alpha.1", "0.171.0-alpha.1"),
        ("registry.local:5000/hydra-agent:codex-1.2.3", "1.2.3"),
        ("registry.local:5000/hydra-agent", None),
        ("hydra-agent:wt-facts", None),
        ("codex-0.169.0/agent:dev", None),
    ],
)
def test_the_codex_version_a_tag_names_is_read_from_the_tag_only(image: str, version: str | None) -> None:
    assert codex_version_in_tag(image) == version


def test_a_build_tags_the_default_image_and_the_versioned_name() -> None:
    assert agent_image_tags("hydra-agent:codex-0.171.0", "0.171.0", "0.1.0") == [
        "hydra-agent:codex-0.171.0",
        "hydra-agent:0.1.0-codex-0.171.0",
    ]
    versioned = "hydra-agent:0.1.0-codex-0.171.0"
    assert agent_image_tags(versioned, "0.171.0", "0.1.0") == [versioned]
    assert agent_image_tags("hydra-agent:wt-facts", "0.171.0", "0.1.0")[0] == "hydra-agent:wt-facts"


def test_a_tag_naming_another_codex_version_is_never_relabelled() -> None:
    refused = r"names Codex 0\.169\.0, but this build installs Codex 0\.171\.0"
    with pytest.raises(ImageBuildError, match=refused) as info:
        agent_image_tags("hydra-agent:codex-0.169.0", "0.171.0", "0.1.0")
    assert info.value.hint is not None and "hydra-agent:codex-0.171.0" in info.value.hint


def test_the_upgrade_from_the_issue_is_refused_before_any_docker_or_npm_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the build went on to Docker or npm")

    monkeypatch.setattr(images, "_docker_client", unreachable)
    monkeypatch.setattr(images, "stage_codex", unreachable)
    settings = HydraSettings(data_home=tmp_path, agent_image="hydra-agent:codex-0.169.0", codex_version="0.171.0")
    with pytest.raises(ImageBuildError, match="HYDRA_AGENT_IMAGE=hydra-agent:codex-0.169.0"):
        images.build_agent_image(settings)
