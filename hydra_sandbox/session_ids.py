"""Session ids: ``s-`` and 12 lowercase hex digits, checked before an id touches a path or a Docker name.

One type for every boundary (tool arguments, the CLI, import, the manager's lookups, workspace layers,
teardown): :data:`SessionId` for pydantic models and tool signatures, :func:`check_session_id` for code,
:func:`session_path` for every path built from an id, which also proves the path stays under its root.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Annotated

from pydantic import StringConstraints

from hydra_sandbox.errors import InvalidSessionIdError, shown

SESSION_ID_PATTERN = r"^s-[0-9a-f]{12}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
HOST_SESSION = "host"
"""Pseudo-session that holds notes a host logs without naming a session (never a path)."""

SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
"""A Hydra session id, for pydantic models and tool arguments."""


def new_session_id() -> str:
    return "s-" + secrets.token_hex(6)


def is_session_id(value: object) -> bool:
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def check_session_id(value: object, where: str) -> str:
    """``value`` when it is a session id, else :class:`InvalidSessionIdError` naming ``where``."""
    if not is_session_id(value):
        raise InvalidSessionIdError(
            f"{where}: session {shown(value)} not found: it is not a Hydra session id",
            hint="a session id is 's-' and 12 lowercase hex digits, e.g. s-0123456789ab",
        )
    assert isinstance(value, str)
    return value


def session_path(root: Path, session_id: str, *parts: str) -> Path:
    """``root/<session_id>/<parts...>`` after checking the id, and that the result is below ``root``."""
    check_session_id(session_id, f"session directory under {root}")
    path = root.joinpath(session_id, *parts)
    if any(p in {"", ".", ".."} or "/" in p for p in parts) or root not in path.parents:
        raise InvalidSessionIdError(f"{path} would leave {root}", hint="name parts without '/', '.' or '..'")
    return path
