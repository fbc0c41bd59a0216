"""Recording events: mask, append to the journal (the source of truth), update the session's
checklist and summary, and wake whoever waits for news of the session.

The search index is filled from the journal by the background :class:`~hydra_sandbox.indexer.Indexer`,
so an outage of Chroma never blocks or loses a recorded event.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from hydra_sandbox.checklists import Checklist
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.journal import Journal
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.profiles import Profile
from hydra_sandbox.summaries import SummaryBuilder

EventListener = Callable[[Event], None]
"""Called on the event loop with every event the recorder appends to the journal."""


def _mask_value(masker: SecretMasker, value: Any) -> Any:
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, dict):
        return {masker.mask(str(k)): _mask_value(masker, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(masker, v) for v in value]
    return value


def mask_draft(masker: SecretMasker, draft: EventDraft) -> EventDraft:
    """Every string of a draft passed through the masker (idempotent: markers are not secrets), except the
    text of an output group the pipeline masked line by line (:attr:`EventDraft.text_masked`): masking
    the joined text again would cost a second pass and could join lines per-line masking keeps apart."""
    return draft.model_copy(
        update={
            "text": draft.text if draft.text_masked else masker.mask(draft.text),
            "data": _mask_value(masker, draft.data),
            "tags": [masker.mask(t) for t in draft.tags],
            "related_files": [masker.mask(f) for f in draft.related_files],
        }
    )


def _replay_key(data: dict[str, Any]) -> tuple[int, str] | None:
    """Agent events carry their run and their place in one output stream; a re-attach replays the
    stream from the start, and events at or before the last recorded place are dropped."""
    run, seq = data.get("run"), data.get("seq")
    if not isinstance(run, int) or not isinstance(seq, int):
        return None
    return run, str(data.get("stream", "stdout"))


def unrecorded_part(draft: EventDraft, last_seq: int) -> EventDraft | None:
    """What of an agent event a replay still has to record, given the last ``seq`` recorded of its stream:
    nothing when it is at or before it; for an output group that straddles it (its lines numbered
    ``first_line_seq`` to ``seq``), the group without its leading lines already recorded."""
    seq, first, count = draft.data["seq"], draft.data.get("first_line_seq"), draft.data.get("lines")
    if seq <= last_seq:
        return None
    if not isinstance(first, int) or not isinstance(count, int) or first > last_seq:
        return draft
    lines = draft.text.split("\n")
    if len(lines) != count or count != seq - first + 1:
        return draft  # not a group as the pipeline makes them: recorded whole rather than cut wrongly
    kept = lines[last_seq - first + 1 :]
    data = {**draft.data, "lines": len(kept), "first_line_seq": last_seq + 1}
    return draft.model_copy(update={"text": "\n".join(kept), "data": data})


class _SessionTrack:
    def __init__(self, profile: Profile | None, session_id: str) -> None:
        self.checklist = Checklist.from_profile(profile) if profile else Checklist([])
        self.summary = SummaryBuilder(session_id)
        self.last_seq: dict[tuple[int, str], int] = {}


class Recorder:
    """Records events for many sessions. Safe to call from the event loop only."""

    def __init__(self, journal: Journal, masker: SecretMasker, on_recorded: Callable[[], None] | None = None) -> None:
        self.journal = journal
        self.masker = masker
        self._on_recorded = on_recorded or (lambda: None)
        self._tracks: dict[str, _SessionTrack] = {}
        self._conditions: dict[str, asyncio.Condition] = defaultdict(asyncio.Condition)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._listeners: list[EventListener] = []
        self.events_recorded = 0

    def subscribe(self, listener: EventListener) -> None:
        """Call ``listener`` with every event appended from now on (checklist and summary events too).

        ``on_recorded`` still fires once per :meth:`record` call, after all its appends; listeners see
        each event. A listener must be quick and must not raise: it runs inside the recording path."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: EventListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def _append(self, ref: SessionRef, draft: EventDraft) -> Event:
        event = await asyncio.to_thread(self.journal.append, ref, draft)
        self.events_recorded += 1
        for listener in self._listeners:
            listener(event)
        return event

    async def track(self, ref: SessionRef, profile: Profile | None) -> None:
        """Start following a session: build its checklist from the profile (none without one) and
        replay what is recorded (read in a worker thread)."""
        track = _SessionTrack(profile, ref.session_id)
        for event in await asyncio.to_thread(self.journal.events, ref.session_id):
            track.checklist.observe(event)
            track.summary.observe(event)
            key = _replay_key(event.data)
            if key is not None:
                track.last_seq[key] = max(track.last_seq.get(key, -1), event.data["seq"])
        self._tracks[ref.session_id] = track

    def checklist(self, session_id: str) -> Checklist | None:
        track = self._tracks.get(session_id)
        return track.checklist if track else None

    def last_seq(self, session_id: str, run: int, stream: str = "stdout") -> int:
        track = self._tracks.get(session_id)
        return track.last_seq.get((run, stream), -1) if track else -1

    async def record(self, ref: SessionRef, draft: EventDraft) -> Event | None:
        """Record one event; returns ``None`` for an agent event already recorded (re-attach replay)."""
        async with self._locks[ref.session_id]:
            track = self._tracks.get(ref.session_id)
            key = _replay_key(draft.data)
            if track and key is not None:
                part = unrecorded_part(draft, track.last_seq.get(key, -1))
                if part is None:
                    return None
                draft = part
                track.last_seq[key] = draft.data["seq"]
            event = await self._append(ref, mask_draft(self.masker, draft))
            follow_ups: list[EventDraft] = []
            if track is not None:
                for item in track.checklist.observe(event):
                    follow_ups.append(
                        EventDraft(
                            type="checklist",
                            text=f"checklist item {item.id} done: {item.description}",
                            data={"item": item.id, "done": True, "proved_by": item.proved_by},
                            related_sessions=[ref.session_id],
                        )
                    )
                track.summary.observe(event)
            for follow in follow_ups:
                extra = await self._append(ref, follow)
                if track is not None:
                    track.summary.observe(extra)
            if track is not None and event.type != "summary" and track.summary.due(time.monotonic()):
                await self._record_summary(ref, track, outcome=None, final=False)
        self._on_recorded()
        await self.notify(ref.session_id)
        return event

    async def _record_summary(self, ref: SessionRef, track: _SessionTrack, outcome: str | None, final: bool) -> Event:
        draft = track.summary.build(track.checklist, outcome=outcome, final=final)
        event = await self._append(ref, mask_draft(self.masker, draft))
        track.summary.observe(event)
        return event

    async def finalize(self, ref: SessionRef, outcome: str) -> Event | None:
        """Record the final summary of a run; returns it (for the summaries collection)."""
        track = self._tracks.get(ref.session_id)
        if track is None:
            return None
        async with self._locks[ref.session_id]:
            event = await self._record_summary(ref, track, outcome=outcome, final=True)
        self._on_recorded()
        await self.notify(ref.session_id)
        return event

    async def notify(self, session_id: str) -> None:
        condition = self._conditions[session_id]
        async with condition:
            condition.notify_all()

    async def wait_for_news(self, session_id: str, timeout_s: float) -> None:
        """Return when anything is recorded for the session, or after ``timeout_s``."""
        condition = self._conditions[session_id]
        async with condition:
            try:
                await asyncio.wait_for(condition.wait(), timeout=max(timeout_s, 0))
            except TimeoutError:
                return
