"""The session state index documents carry, derived from the journal alone (so a rebuild gives the same).

Each event is indexed with ``session_status``: the session's status as of that event (the ``to`` of its
last status change at or before it). A status change also re-indexes the session's latest summary with
the new status, so "which reviewer sessions failed" is one filter over the summaries. Root session and
depth are journaled with every event (:class:`~hydra_sandbox.events.SessionRef`); events journaled before
that have none.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra_sandbox.events import Event
from hydra_sandbox.journal import Journal
from hydra_sandbox.store import SUMMARY_TYPE

MAX_SESSIONS_REMEMBERED = 10_000


def _status_of(event: Event) -> str | None:
    if event.type != "status":
        return None
    to = event.data.get("to")
    return to if isinstance(to, str) else None


class SessionStateIndex:
    """Turns a batch of journal events into the documents the index stores. One indexer thread only."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._status: dict[str, str | None] = {}

    def _known_status(self, event: Event) -> str | None:
        if event.session_id not in self._status:
            if len(self._status) >= MAX_SESSIONS_REMEMBERED:
                self._status.clear()
            last = self._journal.latest_event(event.session_id, "status", before=event.counter)
            self._status[event.session_id] = _status_of(last) if last is not None else None
        return self._status[event.session_id]

    def documents(self, events: Sequence[Event]) -> list[Event]:
        """``events`` with their session status, plus each changed session's latest summary again."""
        out: list[Event] = []
        latest_summary: dict[str, Event] = {}
        changed: set[str] = set()
        for event in events:
            status = _status_of(event)
            if status is not None:
                self._status[event.session_id] = status
                changed.add(event.session_id)
            document = event.model_copy(update={"session_status": status or self._known_status(event)})
            if event.type == SUMMARY_TYPE:
                latest_summary[event.session_id] = document
            out.append(document)
        for session_id in changed:
            summary = latest_summary.get(session_id) or self._journal.latest_event(session_id, SUMMARY_TYPE)
            if summary is not None and summary.session_status != self._status[session_id]:
                out.append(summary.model_copy(update={"session_status": self._status[session_id]}))
        return out
