"""The agent image's tags follow the Codex version it holds, so one tag never names two versions.

``hydra-agent:codex-<version>`` is the default agent image for ``HYDRA_CODEX_VERSION=<version>``
(:func:`default_agent_image`); a build tags what it built with that name and with
``hydra-agent:<hydra>-codex-<version>`` (:func:`agent_image_tags`). A tag that names another Codex
version is refused instead of being moved onto the new build. Pure functions, tested without Docker.
"""

from __future__ import annotations

import re

from hydra_sandbox.errors import ImageBuildError

AGENT_REPOSITORY = "hydra-agent"
_NAMED_VERSION = re.compile(r"codex-(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)$")


def default_agent_image(codex_version: str) -> str:
    """The agent image a Hydra configured for ``codex_version`` runs, unless HYDRA_AGENT_IMAGE says otherwise."""
    return f"{AGENT_REPOSITORY}:codex-{codex_version}"


def codex_version_in_tag(image: str) -> str | None:
    """``hydra-agent:codex-0.169.0`` -> ``0.169.0``; ``None`` for a tag that names no Codex version."""
    tag = image.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]  # registry ports and digests aside
    match = _NAMED_VERSION.search(tag)
    return match.group(1) if match else None


def agent_image_tags(agent_image: str, codex_version: str, hydra_version: str) -> list[str]:
    """The tags a build of Codex ``codex_version`` gets: ``agent_image`` first (the one Hydra runs),
    then the versioned name. Refuses an ``agent_image`` whose tag names another Codex version."""
    named = codex_version_in_tag(agent_image)
    if named is not None and named != codex_version:
        raise ImageBuildError(
            f"HYDRA_AGENT_IMAGE={agent_image} names Codex {named}, but this build installs Codex {codex_version} "
            "(HYDRA_CODEX_VERSION): the tag would then lie about what it holds",
            hint=f"unset HYDRA_AGENT_IMAGE (it follows HYDRA_CODEX_VERSION: {default_agent_image(codex_version)}), "
            f"or name a tag without a Codex version in it",
        )
    versioned = f"{AGENT_REPOSITORY}:{hydra_version}-codex-{codex_version}"
    return [agent_image] if versioned == agent_image else [agent_image, versioned]
