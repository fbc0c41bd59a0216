"""Fixtures the unit tests share."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private directory for Unix sockets (a socket path has at most 108 bytes, which a test's
    ``tmp_path`` can exceed), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="hydra-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
