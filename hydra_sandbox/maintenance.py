"""Maintenance of the journal and the index: export, import, prune and disk usage.

Export format (JSON Lines, UTF-8): one object per line, either
``{"kind": "session", "session": {...}}`` (a session record: ``session_id``, ``status``,
``profile_id``, ``parent_session_id``, ``created_at``, ``updated_at`` and the manager's own data) or
``{"kind": "event", "event": {...}}`` (an :class:`~hydra_sandbox.events.Event`). Sessions come first,
then events in journal order. Events in the journal are already masked, so an export holds no secret the
journal does not. Import is idempotent: records whose id is already present are skipped, so importing the
same file twice changes nothing. The indexer picks imported events up like any other. The export is
written to a fresh 0600 file beside ``out`` (created ``O_EXCL | O_NOFOLLOW``: a link planted at that name
is never written through) and renamed over it.

An export is untrusted input. Import restores only finished sessions (never one that would be queued or
followed at the next start), with ids of Hydra's form; their policy and profile are the ones of the same
name in this machine's catalog (a record's own policy body is never used), and they cannot be resumed
(their Codex thread stayed where they ran). Refused records, and their events, are counted and named.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hydra_sandbox.beneath import Tree
from hydra_sandbox.errors import HydraError, StoreError
from hydra_sandbox.events import Event
from hydra_sandbox.journal import Journal
from hydra_sandbox.lifecycle import ACTIVE
from hydra_sandbox.policy import PolicyCatalog
from hydra_sandbox.profiles import ProfileCatalog
from hydra_sandbox.session_ids import HOST_SESSION, SessionId, is_session_id
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import ContextStore

_STATUSES = frozenset({"awaiting_approval", "completed", "failed", "cancelled", "timed_out"})


class SessionRecord(BaseModel):
    """A session row as exported; extra keys are the manager's data."""

    model_config = ConfigDict(extra="allow")

    session_id: SessionId
    status: str
    profile_id: str
    parent_session_id: SessionId | None = None
    created_at: datetime
    updated_at: datetime


class SessionLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["session"]
    session: SessionRecord


class EventLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["event"]
    event: Event


ExportLine = Annotated[SessionLine | EventLine, Field(discriminator="kind")]
_LINE = TypeAdapter(ExportLine)


class ImportReport(BaseModel):
    """What an import did; ``*_skipped`` counts records already present."""

    path: Path
    events_added: int = 0
    events_skipped: int = 0
    sessions_added: int = 0
    sessions_skipped: int = 0
    sessions_refused: int = 0
    events_refused: int = 0
    refused: list[str] = Field(default_factory=list, description="Why records were refused (the first 50).")


class DiskUsage(BaseModel):
    """Bytes used by Hydra's data, and whether it crossed ``settings.disk_warning_bytes``."""

    journal_bytes: int
    index_bytes: int | None = Field(description="None when the index is on a Chroma server.")
    sessions_bytes: int
    total_bytes: int
    free_bytes: int | None
    warning_bytes: int
    warning: bool
    message: str | None = None


def export_jsonl(journal: Journal, out: Path, session_id: str | None = None) -> int:
    """Write sessions and events (all, or one session's) to ``out``; returns the events written."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    written = 0
    try:
        with _create_private(tmp) as fh:
            sessions = journal.all_sessions()
            for record in sessions:
                if session_id is None or record["session_id"] == session_id:
                    line = SessionLine(kind="session", session=SessionRecord.model_validate(record))
                    fh.write(line.model_dump_json() + "\n")
            events = journal.events(session_id) if session_id is not None else journal.iter_all()
            for event in events:
                fh.write(EventLine(kind="event", event=event).model_dump_json() + "\n")
                written += 1
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"export to {out} failed ({exc})",
            hint="check that the directory exists, is writable and has space",
        ) from exc
    return written


def _create_private(tmp: Path) -> TextIO:
    """``tmp`` created afresh, 0600, never through a link planted at its name (a stale one is removed)."""
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(tmp, flags, 0o600), "w", encoding="utf-8")


def import_jsonl(journal: Journal, path: Path, *, policies: PolicyCatalog, profiles: ProfileCatalog) -> ImportReport:
    """Import an export file; idempotent. Every line is validated before anything is written."""
    path = Path(path)
    parsed: list[SessionLine | EventLine] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    parsed.append(_LINE.validate_json(raw))
                except ValidationError as exc:
                    problems = "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors()[:3]
                    )
                    raise StoreError(
                        f"{path}:{number}: not a valid Hydra export line ({problems})",
                        hint="fix or remove that line; nothing was imported",
                    ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path} ({exc})", hint="check the path and that it is a UTF-8 text file") from exc
    report = ImportReport(path=path)
    refused: set[str] = set()
    for line in parsed:
        if isinstance(line, SessionLine):
            restored = _restorable(line.session, policies, profiles)
            if isinstance(restored, str):
                refused.add(line.session.session_id)
                report.sessions_refused += 1
                report.refused = [*report.refused, restored][:50]
            elif journal.import_session(restored):
                report.sessions_added += 1
            else:
                report.sessions_skipped += 1
        elif line.event.session_id in refused or not (
            is_session_id(line.event.session_id) or line.event.session_id == HOST_SESSION
        ):
            report.events_refused += 1
        elif journal.record(line.event):
            report.events_added += 1
        else:
            report.events_skipped += 1
    return report


def _restorable(record: SessionRecord, policies: PolicyCatalog, profiles: ProfileCatalog) -> dict[str, object] | str:
    """The record as this machine restores it, or why it is refused."""
    where = f"session {record.session_id}"
    if record.status in {s.value for s in ACTIVE} or record.status not in _STATUSES:
        return f"{where}: status {record.status!r}: only finished sessions are imported (an import never runs one)"
    data = record.model_dump()
    policy = data.get("policy")
    name = policy.get("name") if isinstance(policy, dict) else None
    if not isinstance(name, str):
        return f"{where}: its record names no policy"
    try:
        data["policy"] = policies.get(name).model_dump(mode="json")
    except HydraError:
        return f"{where}: policy {name!r} is not in this machine's catalog"
    try:
        data["profile"] = profiles.get(record.profile_id).model_dump(mode="json")
    except HydraError:
        data["profile"] = None
    data.update(thread_id=None, container_id=None)  # never resumed or followed here
    return data


def prune(journal: Journal, store: ContextStore, older_than: timedelta) -> int:
    """Delete events older than ``older_than`` from the journal and the index; returns how many.

    Session records are kept (they are small and the manager's history). If the index cannot be
    reached the journal is still pruned and a StoreError says to run ``hydra reindex``.
    """
    cutoff = datetime.now(UTC) - older_than
    ids = journal.delete_before(cutoff)
    if ids:
        try:
            store.delete(ids)
        except Exception as exc:
            raise StoreError(
                f"pruned {len(ids)} events from journal {journal.path} but the index kept them "
                f"({type(exc).__name__}: {exc})",
                hint="run `hydra reindex` once the index is reachable to drop them there too",
            ) from exc
    return len(ids)


def _tree_bytes(path: Path) -> int:
    """Bytes of the non-directory entries below ``path``, walked without following any link."""
    if path.is_file():
        return path.stat().st_size
    with Tree(path) as tree:
        return sum(st.st_size for _dir, _name, st in tree.walk() if not stat.S_ISDIR(st.st_mode))


def disk_usage(settings: HydraSettings) -> DiskUsage:
    """Bytes used by the journal (with WAL), the embedded index and session directories."""
    journal = settings.journal_path
    journal_bytes = sum(
        _tree_bytes(p)
        for p in (journal, journal.with_name(journal.name + "-wal"), journal.with_name(journal.name + "-shm"))
        if p.exists()
    )
    index_bytes: int | None = None
    if not settings.chroma_url:
        chroma = settings.effective_chroma_path
        index_bytes = _tree_bytes(chroma) if chroma.exists() else 0
    sessions_bytes = _tree_bytes(settings.sessions_dir) if settings.sessions_dir.exists() else 0
    total = journal_bytes + (index_bytes or 0) + sessions_bytes
    free: int | None = None
    probe = settings.data_home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    warning = total > settings.disk_warning_bytes
    message = None
    if warning:
        message = (
            f"Hydra data in {settings.data_home} uses {total} bytes, over HYDRA_DISK_WARNING_BYTES="
            f"{settings.disk_warning_bytes}; run `hydra prune --older-than 30d` or raise the limit"
        )
    return DiskUsage(
        journal_bytes=journal_bytes,
        index_bytes=index_bytes,
        sessions_bytes=sessions_bytes,
        total_bytes=total,
        free_bytes=free,
        warning_bytes=settings.disk_warning_bytes,
        warning=warning,
        message=message,
    )
