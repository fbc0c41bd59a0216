"""The pytest plugin of hydra_sandbox.testing, loaded through the ``pytest11`` entry point ``hydra``.

Fixtures (each a factory, so a test starts what it needs and everything is stopped after it):

* ``hydra_workspace(fixture_dir, name=None, owner=None) -> Path``: a fresh copy of a fixture directory;
* ``await hydra_scripted_model(script) -> ScriptedModel``: the scripted model in this process;
* ``await hydra_in_process(model=None, **settings) -> InProcessHydra``: Hydra in this process;
* ``hydra_container(script=None, workspaces=(), settings=None) -> HydraContainer``: Hydra's server
  image, with the scripted model in a container beside it on a private network.

Paths given to them (fixture directories, script files) are relative to the test file. The marker
``@pytest.mark.requires_docker`` skips a test, with the reason, when no Docker daemon answers; the
Hydra fixtures do the same. With ``--hydra-require-docker`` (or ``hydra_require_docker = true`` in the
ini file) they fail instead, for CI where a missing Docker is a broken machine.

Nothing here imports testcontainers or Docker until a fixture is used: installing Hydra without the
``testing`` extra leaves every other pytest run in the environment untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from hydra_sandbox.testing.containers import HydraContainer
    from hydra_sandbox.testing.inprocess import InProcessHydra
    from hydra_sandbox.testing.model import ScriptedModel
    from hydra_sandbox.testing.script import ModelScript

try:
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # without the testing extra: pytest then says an async plugin is needed
    _async_fixture = pytest.fixture

MARKER = "requires_docker"
_DOCKER_PROBLEM = pytest.StashKey[str]()
_MODELS = pytest.StashKey[list[Any]]()
ScriptSource = Any
"""A :class:`~hydra_sandbox.testing.ModelScript`, a mapping of one, or a path to a script file."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hydra", "Hydra test kit (hydra_sandbox.testing)")
    group.addoption(
        "--hydra-require-docker",
        action="store_true",
        default=False,
        help="fail tests that need Docker when no daemon answers, instead of skipping them",
    )
    parser.addini("hydra_require_docker", type="bool", default=False, help="like --hydra-require-docker")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: needs a Docker daemon (Hydra's sandboxes); skipped with the reason when none answers, "
        "failed instead under --hydra-require-docker",
    )


def docker_problem(config: pytest.Config) -> str:
    """Why Docker cannot be used ('' when it can); asked once per test run."""
    if _DOCKER_PROBLEM not in config.stash:
        from hydra_sandbox.errors import RuntimeUnavailableError
        from hydra_sandbox.testing import _hydra

        try:
            _hydra.docker_client().close()
            config.stash[_DOCKER_PROBLEM] = ""
        except RuntimeUnavailableError as exc:
            config.stash[_DOCKER_PROBLEM] = str(exc)
    return config.stash[_DOCKER_PROBLEM]


def require_docker(config: pytest.Config) -> None:
    """Skip (or, when required, fail) the current test with the reason when Docker is absent."""
    problem = docker_problem(config)
    if not problem:
        return
    reason = f"Hydra needs a Docker daemon and none answers: {problem}"
    if config.getoption("--hydra-require-docker") or config.getini("hydra_require_docker"):
        pytest.fail(reason + " (--hydra-require-docker is set, so this fails instead of skipping)")
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is not None:
        require_docker(item.config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and item.stash.get(_MODELS, None):
        for model in item.stash[_MODELS]:
            with contextlib.suppress(Exception):  # a report is a courtesy; it must not hide the failure
                report.sections.append(
                    ("hydra scripted model", json.dumps(model.report().model_dump(mode="json"), indent=1))
                )
    return report


def _resolve(request: pytest.FixtureRequest, path: Path | str) -> Path:
    path = Path(path)
    return path if path.is_absolute() else request.path.parent / path


def resolve_script(request: pytest.FixtureRequest, script: ScriptSource) -> ModelScript:
    from hydra_sandbox.testing.script import ModelScript, load_script, parse_script

    if isinstance(script, ModelScript):
        return script
    if isinstance(script, dict):
        return parse_script(script, f"script given in {request.node.nodeid}")
    return load_script(_resolve(request, script))


def _remember(request: pytest.FixtureRequest, model: Any) -> None:
    request.node.stash.setdefault(_MODELS, []).append(model)


@pytest.fixture
def hydra_workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Path]:
    """``hydra_workspace("fixtures/calc")``: a copy of the directory, owned as
    :func:`hydra_sandbox.testing.copy_workspace` explains."""
    from hydra_sandbox.testing.workspace import copy_workspace

    def make(fixture: Path | str, *, name: str | None = None, owner: int | None = None) -> Path:
        return copy_workspace(_resolve(request, fixture), tmp_path / "workspaces", name=name, owner=owner)

    return make


@_async_fixture
async def hydra_scripted_model(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """``model = await hydra_scripted_model("scripts/fix.yaml")``: served on loopback until the test ends."""
    from hydra_sandbox.testing.model import ScriptedModel

    async with contextlib.AsyncExitStack() as stack:

        async def start(script: ScriptSource, host: str = "127.0.0.1") -> ScriptedModel:
            model = await stack.enter_async_context(ScriptedModel(resolve_script(request, script), host))
            _remember(request, model)
            return model

        yield start


@_async_fixture
async def hydra_in_process(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """``hydra = await hydra_in_process(model)``: Hydra in this process, agents in real sandboxes;
    ``model`` is a ScriptedModel or a Responses-API URL; keyword arguments are HydraSettings fields."""
    from hydra_sandbox.testing.inprocess import InProcessHydra

    require_docker(request.config)
    async with contextlib.AsyncExitStack() as stack:

        async def start(model: ScriptedModel | str | None = None, **settings: Any) -> InProcessHydra:
            url = model if isinstance(model, str) or model is None else model.base_url
            return await stack.enter_async_context(InProcessHydra(model_url=url, **settings))

        yield start


@pytest.fixture
def hydra_container(request: pytest.FixtureRequest) -> Iterator[Callable[..., HydraContainer]]:
    """``hydra = hydra_container("scripts/fix.yaml", workspaces=[repo])``: the server image over HTTP,
    with the script's model in its own container on a private network shared with it."""
    require_docker(request.config)
    from testcontainers.core.network import Network

    from hydra_sandbox.testing.containers import HydraContainer, ScriptedModelContainer

    with contextlib.ExitStack() as stack:

        def start(
            script: ScriptSource | None = None,
            *,
            workspaces: tuple[Path | str, ...] | list[Path | str] = (),
            settings: dict[str, str] | None = None,
            image: str | None = None,
        ) -> HydraContainer:
            hydra = HydraContainer(image, workspaces=workspaces, settings=settings)
            if script is not None:
                network = stack.enter_context(Network())
                model = ScriptedModelContainer(resolve_script(request, script), network=network, image=image)
                stack.enter_context(model)
                _remember(request, model)
                hydra.with_scripted_model(model)
            return stack.enter_context(hydra)

        yield start
