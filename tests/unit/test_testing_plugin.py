"""The pytest plugin (entry point pytest11 'hydra'), run on small test files by pytester: the
requires_docker marker, its strict mode, and the workspace fixture. Each run is a subprocess: an
in-process run drops the modules it imported afterwards, and a later import of the same extension
module (cryptography's) then no longer matches the classes other modules hold."""

from __future__ import annotations

import os

import pytest

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
NO_DOCKER = """
import pytest

@pytest.mark.requires_docker
def test_needs_docker():
    raise AssertionError("ran without Docker")

def test_fixture_needs_docker(hydra_container):
    raise AssertionError("ran without Docker")
"""


@pytest.fixture(autouse=True)
def quiet_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)


@pytest.fixture
def without_docker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-daemon.sock")
    pytester.makepyfile(test_no_docker=NO_DOCKER)
    return pytester


def test_without_docker_a_marked_test_and_a_hydra_fixture_skip_with_the_reason(without_docker: pytest.Pytester) -> None:
    result = without_docker.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*Hydra needs a Docker daemon and none answers: cannot reach the Docker daemon*"] * 2)


def test_with_require_docker_the_same_tests_fail_instead(without_docker: pytest.Pytester) -> None:
    result = without_docker.runpytest_subprocess("-p", "no:cacheprovider", "--hydra-require-docker")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*--hydra-require-docker is set, so this fails instead of skipping*"])


def test_the_ini_option_makes_missing_docker_fail_too(without_docker: pytest.Pytester) -> None:
    without_docker.makeini(INI + "hydra_require_docker = true\n")
    without_docker.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(errors=2)


def test_the_workspace_fixture_copies_a_fixture_directory_next_to_the_test(pytester: pytest.Pytester) -> None:
    fixture = pytester.mkdir("fixtures") / "calc"
    fixture.mkdir()
    (fixture / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (fixture / "link").symlink_to("calc.py")
    owner = 1000 if os.geteuid() == 0 else os.geteuid()
    pytester.makepyfile(
        f"""
        import os

        def test_copy(hydra_workspace):
            first = hydra_workspace("fixtures/calc")
            second = hydra_workspace("fixtures/calc", name="calc-2")
            assert first != second and first.parent == second.parent
            assert (first / "calc.py").read_text().endswith("a - b\\n")
            assert os.readlink(first / "link") == "calc.py"
            assert first.stat().st_uid == (first / "calc.py").stat().st_uid == {owner}
            (first / "calc.py").write_text("changed")
            assert (second / "calc.py").read_text().endswith("a - b\\n")
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_missing_fixture_directory_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_copy(hydra_workspace):
            hydra_workspace("fixtures/nowhere")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fixtures/nowhere does not exist or is not a directory*"])
