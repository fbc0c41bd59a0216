"""Protected paths: the credential files issue 14 found visible are hidden under every built-in policy;
names holding a newline are matched like any other; a hard link to a hidden file is hidden too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hydra_sandbox.glob_sets import GlobSet
from hydra_sandbox.policy import DirectoryPolicy, Policy, PolicyCatalog, explain
from hydra_sandbox.sandbox.workspace import StagedWorkspace, hidden_paths
from hydra_sandbox.settings import REPO_ROOT

BUILTIN = PolicyCatalog([REPO_ROOT / "policies"]).load_all()[0]
CREDENTIAL_FILES = [
    "id_ed25519",
    "home/.ssh/id_ecdsa",
    "id_rsa.pub",
    ".netrc",
    ".npmrc",
    "tools/.pypirc",
    ".git-credentials",
    ".aws/credentials",
    "home/.aws/credentials",
    ".docker/config.json",
    "home/.kube/config",
    "infra/terraform.tfstate",
    "infra/terraform.tfstate.backup",
    "certs/server.PEM",
    "certs/tls.Key",
    ".env~",
    ".env-prod",
    ".env_local",
    "prod.env",
    "app/.ENV",
    ".git/modules/vendor/config",
    ".git/modules/a/modules/b/config",
    ".git/config.worktree",
    "a\nb/.env",
    "x\ny/deeper\nstill/.env.local",
]


@pytest.mark.parametrize("policy", sorted(BUILTIN))
@pytest.mark.parametrize("path", CREDENTIAL_FILES)
def test_credential_files_are_hidden_under_every_built_in_policy(policy: str, path: str) -> None:
    assert not BUILTIN[policy].matcher.is_visible(path)


@pytest.mark.parametrize("path", ["src/app.py", "environment.py", "docs/env.md", "keys.py", "a\nb/app.py", "id.txt"])
def test_ordinary_files_stay_visible(path: str) -> None:
    assert BUILTIN["default"].matcher.is_visible(path)


def test_protected_credential_files_stay_hidden_when_a_policy_allows_them() -> None:
    matcher = Policy(name="p", directory=DirectoryPolicy(allow=["**", ".npmrc", ".aws/**"])).matcher
    assert not matcher.is_visible(".npmrc") and not matcher.is_visible(".aws/credentials")
    assert matcher.why_not_writable(".npmrc") == "protected path"


@pytest.mark.parametrize(
    ("globs", "path", "expected"),
    [
        (["secrets/**"], "secrets/a\nb.txt", True),
        (["src/**"], "src/new\nline/x.py", True),
        (["**/*.pem"], "dir\nname/k.pem", True),
        (["*.py", "!keep.py"], "x\ny/keep.py", False),
        (["*.py", "!keep.py"], "x\ny/other.py", True),
    ],
)
def test_globs_match_names_holding_a_newline(globs: list[str], path: str, expected: bool) -> None:
    assert GlobSet(globs).match_file(path) is expected


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("x = 1\n")
    (root / ".env").write_text("TOKEN=secret\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "db.txt").write_text("password\n")
    (root / "odd\nname").mkdir()
    (root / "odd\nname" / ".env").write_text("TOKEN=secret\n")
    return root


def test_a_hard_link_to_a_hidden_file_is_hidden(workspace: Path) -> None:
    os.link(workspace / ".env", workspace / "notes.txt")
    os.link(workspace / "secrets" / "db.txt", workspace / "src" / "fixture.txt")
    os.link(workspace / "src" / "app.py", workspace / "src" / "copy.py")  # linked, but to a visible file
    hidden = hidden_paths(workspace, BUILTIN["default"].matcher)
    assert {"notes.txt", "src/fixture.txt", ".env", "secrets", "odd\nname/.env"} <= set(hidden)
    assert "src/copy.py" not in hidden and "src/app.py" not in hidden
    result = explain(BUILTIN["default"], workspace)
    assert "notes.txt" in result.hidden and "notes.txt" not in result.visible
    assert "src/fixture.txt" in result.hidden and "src/copy.py" in result.visible


def test_hidden_names_holding_a_newline_survive_the_sessions_hidden_list(workspace: Path, tmp_path: Path) -> None:
    hidden = hidden_paths(workspace, BUILTIN["default"].matcher)
    session = tmp_path / "session"
    (session / "upper").mkdir(parents=True)
    (session / "hidden.txt").write_text("\0".join(hidden), encoding="utf-8")
    ws = StagedWorkspace(
        session_id="s",
        source=workspace,
        lowers=[workspace],
        upper=session / "upper",
        work=session / "work",
        volume_name="v",
        mode="overlay",
        agent_uid=1000,
        agent_gid=1000,
        started_at_ns=0,
    )
    assert ws.hidden() == set(hidden) and "odd\nname/.env" in ws.hidden()
