"""The Codex version of the real agent image, as ``hydra://status`` and ``hydra doctor`` find it: from the
image's build label, and from ``codex --version`` in a real hardened throwaway container."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from hydra_sandbox.doctor import _codex_version
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.codex_version import CodexVersionFinder
from hydra_sandbox.sandbox.spec import LABEL_HOME, ImageInfo
from hydra_sandbox.settings import HydraSettings

pytestmark = pytest.mark.docker
IMAGE = "hydra-agent:codex-0.169.0"
HOME = "test-codex-version"


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{IMAGE} is missing: build it with `hydra images build` (scripts/setup does)")
    return IMAGE


class UnlabelledRuntime(DockerRuntime):
    """The real engine, but every image looks as if built by hand: no labels, so the probe must run."""

    async def image_info(self, tag: str) -> ImageInfo | None:
        info = await super().image_info(tag)
        return None if info is None else info.model_copy(update={"labels": {}})


async def test_the_agent_image_answers_with_the_codex_version_its_build_labelled(image: str) -> None:
    found = await CodexVersionFinder(DockerRuntime(), home_label=HOME).find(image)
    assert found is not None and (found.version, found.source) == ("0.169.0", "label")
    assert found.image_id.startswith("sha256:")


async def test_an_unlabelled_image_is_asked_in_a_throwaway_container_that_is_then_removed(
    image: str, docker_client: docker.DockerClient
) -> None:
    found = await CodexVersionFinder(UnlabelledRuntime(), home_label=HOME).find(image)
    assert found is not None and (found.version, found.source) == ("0.169.0", "probe")
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_HOME}={HOME}"}) == []


def test_doctor_compares_the_version_found_with_the_setting(
    image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    data_home = tmp_path  # only labels the probe; nothing is written there
    ok, detail = _codex_version(HydraSettings(data_home=data_home, agent_image=image))
    assert ok and detail == f"Codex 0.169.0 in {image} (from its build label)"
    upgraded = HydraSettings(data_home=data_home, agent_image=image, codex_version="0.171.0")
    ok, detail = _codex_version(upgraded)
    assert not ok and detail.endswith("but HYDRA_CODEX_VERSION is 0.171.0")
