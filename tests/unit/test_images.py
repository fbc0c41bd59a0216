"""Image building without Docker: build steps report their failure, the Codex binary is staged in the
cache directory setting, and the server image refuses to build outside a source checkout."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

import hydra_sandbox.images as images
from hydra_sandbox.errors import ImageBuildError
from hydra_sandbox.settings import HydraSettings


def test_a_failed_step_shows_its_last_output_and_the_hint() -> None:
    with pytest.raises(ImageBuildError, match=r"(?s)step failed:.*boom.*\(try again\)"):
        images._run_step(["sh", "-c", "echo boom >&2; exit 3"], "step failed", "try again")


def test_a_step_that_does_not_make_its_file_fails(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="npm could not"):
        images._run_step(["true"], "npm could not install", "hint", made=tmp_path / "codex")
    images._run_step(["true"], "never", "never")


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64", "aarch64", "arm64"}, reason="no Codex build")
def test_codex_is_staged_in_the_cache_dir_setting(tmp_path: Path) -> None:
    package, triple = images._platform_package()
    binary = tmp_path / "codex-9.9.9" / "node_modules" / "@openai" / package / "vendor" / triple / "bin" / "codex"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\necho codex-cli 9.9.9\n")
    binary.chmod(0o755)
    assert images.stage_codex("9.9.9", tmp_path) == binary  # found there: npm is never asked


def test_the_server_image_needs_a_source_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "REPO_ROOT", tmp_path)  # what an installed wheel sees: no pyproject.toml
    with pytest.raises(ImageBuildError, match="source checkout"):
        images.build_server_image(HydraSettings(data_home=tmp_path))
