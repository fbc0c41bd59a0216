"""The Codex version Hydra reports is read from the agent image (its build label, else ``codex --version``
in a throwaway hardened container), cached by image id; never the configured setting."""

from __future__ import annotations

import pytest

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.codex_version import LABEL_CODEX_VERSION, CodexVersionFinder, parse_codex_version
from hydra_sandbox.sandbox.fake import FakeProgram, FakeRuntime
from hydra_sandbox.sandbox.spec import ContainerSpec

IMAGE = "hydra-agent:codex-0.169.0"
WARNING = (b"stderr", b"WARNING: proceeding, even though we could not create PATH aliases\n")


def finder(runtime: FakeRuntime) -> CodexVersionFinder:
    return CodexVersionFinder(runtime, home_label="test-home")


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("codex-cli 0.169.0\n", "0.169.0"),
        ("WARNING: something\ncodex-cli 0.171.0-alpha.2\n", "0.171.0-alpha.2"),
        ("codex 1.2.3", "1.2.3"),
        ("bash: codex: command not found", None),
        ("codex-cli 0.169.0; rm -rf /", None),
        ("", None),
    ],
)
def test_only_a_codex_version_line_is_read_as_a_version(output: str, version: str | None) -> None:
    assert parse_codex_version(output) == version


async def test_the_build_label_answers_without_running_a_container() -> None:
    runtime = FakeRuntime(images=[IMAGE])
    runtime.image_labels[IMAGE] = {LABEL_CODEX_VERSION: "0.171.0"}  # what was built, whatever the tag says
    found = await finder(runtime).find(IMAGE)
    assert found is not None and (found.version, found.source) == ("0.171.0", "label")
    assert "create" not in runtime.calls


async def test_an_unlabelled_image_is_asked_in_a_hardened_throwaway_container() -> None:
    runtime = FakeRuntime(FakeProgram(output=[WARNING, ("stdout", b"codex-cli 0.170.1\n")]), images=[IMAGE])
    found = await finder(runtime).find(IMAGE)
    assert found is not None and (found.version, found.source) == ("0.170.1", "probe")
    assert runtime.calls.count("create") == 1 and runtime.containers == {}  # removed after answering


async def test_the_probe_container_keeps_every_hardening_default() -> None:
    seen: list[ContainerSpec] = []

    def program(spec: ContainerSpec) -> FakeProgram:
        seen.append(spec)
        return FakeProgram(output=[("stdout", b"codex-cli 0.169.0\n")])

    runtime = FakeRuntime(program, images=[IMAGE])
    await finder(runtime).find(IMAGE)
    (spec,) = seen
    assert spec.argv == ["codex", "--version"] and spec.network_mode == "none"
    assert spec.read_only_root and spec.cap_drop == ["ALL"] and spec.no_new_privileges
    assert spec.user == "1000:1000" and spec.mounts == []


async def test_the_answer_is_cached_by_image_id_and_asked_again_after_a_rebuild() -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stdout", b"codex-cli 0.169.0\n")]), images=[IMAGE])
    versions = finder(runtime)
    assert (await versions.find(IMAGE)) == (await versions.find(IMAGE))
    assert runtime.calls.count("create") == 1
    runtime.image_ids[IMAGE] = "sha256:rebuilt"
    runtime.image_labels[IMAGE] = {LABEL_CODEX_VERSION: "0.171.0"}
    rebuilt = await versions.find(IMAGE)
    assert rebuilt is not None and (rebuilt.image_id, rebuilt.version) == ("sha256:rebuilt", "0.171.0")


async def test_a_missing_image_has_no_version() -> None:
    assert await finder(FakeRuntime()).find(IMAGE) is None


async def test_an_image_that_prints_no_version_is_named_in_a_clear_error() -> None:
    runtime = FakeRuntime(FakeProgram(output=[("stderr", b"codex: not found\n")], exit_code=127), images=[IMAGE])
    with pytest.raises(RuntimeUnavailableError, match=rf"{IMAGE}: `codex --version` exited 127.*hydra images build"):
        await finder(runtime).find(IMAGE)
    assert runtime.containers == {}
