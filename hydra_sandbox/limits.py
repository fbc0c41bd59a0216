"""Hydra's limits on what a caller or an agent can make it hold, in one place.

Each limit is a constant here (or a setting, where an operator should tune it); each check raises
:class:`~hydra_sandbox.errors.LimitExceededError` naming the argument, the limit and what was given.
``docs/tool_catalog.md`` lists them (``tests/unit/test_docs.py`` keeps the table honest).

Tags get two kinds of limits: the ones a caller meets (:func:`check_tags`) and the ones the index
enforces on anything it is asked to store (:func:`index_problem`), so an event that reached the journal
another way (an import, an older version) is set aside by the indexer instead of breaking the index:
about 10,000 distinct tags in one event once made embedded Chroma fail every later write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hydra_sandbox.errors import LimitExceededError, shown
from hydra_sandbox.events import Event

MAX_TAGS = 32
"""Tags on one event (``log_context(tags=...)``; search filters take as many)."""
MAX_TAG_CHARS = 64
"""Characters in one tag."""
MAX_NOTE_CHARS = 100_000
"""Characters in one ``log_context`` note."""
MAX_PROMPT_CHARS = 100_000
"""Characters in a ``spawn_agent`` or ``resume_session`` prompt."""
MAX_QUERY_CHARS = 10_000
"""Characters in a ``search_context`` query."""
MAX_GOALS = 100
"""Items in a ``spawn_agent`` goal set (checklist items)."""
MAX_GOAL_CHARS = 2_000
"""Characters in one goal."""
MAX_GLOBS = 200
"""Globs in one policy override list (allow, deny, read-only)."""
MAX_GLOB_CHARS = 1_000
"""Characters in one glob."""
MAX_INPUT_BYTES = 64 * 1024
"""JSON bytes of a structured tool input (``inputs``, ``data``)."""
MAX_INPUT_DEPTH = 16
"""Nesting depth of a structured tool input."""
MAX_LIST_LIMIT = 1_000
"""Largest ``limit`` a listing tool accepts."""
MAX_PAGE_EVENTS = 1_000
"""Events in one page of ``tail_logs`` or a session resource."""
MAX_PAGE_BYTES = 1024 * 1024
"""Serialised bytes of one page of events (a page ends early rather than grow past it)."""
MAX_INDEX_TAGS = 256
"""Tags the index stores for one event (far below where embedded Chroma breaks)."""
MAX_INDEX_TAG_CHARS = 1_000
"""Characters of one tag the index stores."""
MAX_INDEX_RELATED = 1_000
"""Related files or related sessions the index stores for one event."""


def _too_many(argument: str, limit: int, given: int, unit: str) -> LimitExceededError:
    return LimitExceededError(
        f"{argument}: {given} {unit} given, the limit is {limit}",
        hint=f"send at most {limit} {unit}",
    )


def check_count(argument: str, items: Sequence[Any], limit: int, unit: str = "items") -> None:
    if len(items) > limit:
        raise _too_many(argument, limit, len(items), unit)


def check_chars(argument: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise _too_many(argument, limit, len(value), "characters")


def check_tags(argument: str, tags: Sequence[str]) -> None:
    """At most :data:`MAX_TAGS` tags of 1 to :data:`MAX_TAG_CHARS` characters each."""
    check_count(argument, tags, MAX_TAGS, "tags")
    for index, tag in enumerate(tags):
        if not tag or len(tag) > MAX_TAG_CHARS:
            raise LimitExceededError(
                f"{argument}[{index}]: tag {shown(tag)} has {len(tag)} characters, a tag has 1 to {MAX_TAG_CHARS}",
                hint="shorten the tag",
            )


def _depth(value: Any, limit: int, level: int = 1) -> int:
    """Nesting depth of a JSON value, stopping once past ``limit`` (so a deep value costs little)."""
    if level > limit or not isinstance(value, dict | list):
        return level
    children = value.values() if isinstance(value, dict) else value
    return max((_depth(child, limit, level + 1) for child in children), default=level)


def check_structure(
    argument: str, value: Any, max_bytes: int = MAX_INPUT_BYTES, max_depth: int = MAX_INPUT_DEPTH
) -> None:
    """A structured input no deeper than ``max_depth`` and no bigger than ``max_bytes`` as JSON."""
    depth = _depth(value, max_depth)
    if depth > max_depth:
        raise LimitExceededError(
            f"{argument}: nested more than {max_depth} levels deep", hint=f"flatten it to at most {max_depth} levels"
        )
    size = len(json.dumps(value, default=str).encode())
    if size > max_bytes:
        raise _too_many(argument, max_bytes, size, "bytes of JSON")


def index_problem(event: Event) -> str | None:
    """Why the index must not store ``event`` as it is, or None (every store checks this first)."""
    if len(event.tags) > MAX_INDEX_TAGS:
        return f"{len(event.tags)} tags, the index takes at most {MAX_INDEX_TAGS}"
    long = [t for t in event.tags if len(t) > MAX_INDEX_TAG_CHARS]
    if long:
        return f"a tag of {len(long[0])} characters, the index takes at most {MAX_INDEX_TAG_CHARS}"
    for name in ("related_files", "related_sessions"):
        count = len(getattr(event, name))
        if count > MAX_INDEX_RELATED:
            return f"{count} {name}, the index takes at most {MAX_INDEX_RELATED}"
    return None
