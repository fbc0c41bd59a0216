"""Who hears about sessions as they change: a session appearing (spawned) and every status transition.

Observers are synchronous and run on the event loop right after the change is persisted; one that
raises is logged and skipped, so a listener (the MCP live updates) can never fail a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from hydra_sandbox.lifecycle import SessionRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionChange:
    """One change of one session."""

    record: SessionRecord
    created: bool
    """``True`` when the session has just appeared (spawned, queued); ``False`` for a transition."""


SessionObserver = Callable[[SessionChange], None]


class SessionObservers:
    """The observers of the manager's sessions (event loop only)."""

    def __init__(self) -> None:
        self._observers: dict[object, SessionObserver] = {}

    def add(self, observer: SessionObserver) -> Callable[[], None]:
        """Register ``observer``; returns the call that removes it (idempotent)."""
        token = object()
        self._observers[token] = observer

        def remove() -> None:
            self._observers.pop(token, None)

        return remove

    def notify(self, change: SessionChange) -> None:
        for observer in list(self._observers.values()):
            try:
                observer(change)
            except Exception:  # fan-out boundary: an observer's bug never fails a session's transition
                log.exception("session observer failed on session %s", change.record.session_id)
