import re
from pathlib import Path

import mcp.types

from hydra_sandbox.settings import CODEX_VERSION

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"


def test_changelog_names_the_pinned_codex_version() -> None:
    assert f"`{CODEX_VERSION}`" in CHANGELOG.read_text(), "CHANGELOG.md: update the pinned Codex version"


def test_changelog_names_the_mcp_protocol_version_of_the_installed_sdk() -> None:
    text = CHANGELOG.read_text()
    assert re.search(r"protocol version `\d{4}-\d{2}-\d{2}`", text)
    assert mcp.types.LATEST_PROTOCOL_VERSION in text, (
        f"the installed mcp speaks {mcp.types.LATEST_PROTOCOL_VERSION}; CHANGELOG.md names another: update it"
    )
