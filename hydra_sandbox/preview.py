"""The preview a reviewer reads: the models of a change set and their rendering as one unified diff,
with the notes that say what the text does not show (masked spans, truncation, a parent's changes)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from hydra_sandbox.changeset import describe_size, hidden_by_mask

MAX_DIFF_BYTES = 1_000_000

FileStatus = Literal["added", "modified", "deleted", "renamed", "symlink", "mode_changed"]


class FileChange(BaseModel):
    path: str
    status: FileStatus
    old_path: str | None = None
    binary: bool = False
    symlink_target: str | None = None
    old_mode: str | None = None
    new_mode: str | None = None
    additions: int = 0
    deletions: int = 0
    size: int | None = Field(default=None, description="Bytes apply writes (files only).")
    old_size: int | None = Field(default=None, description="Bytes of the host file it replaces.")
    disk_bytes: int | None = Field(default=None, description="Bytes allocated in the layer (less: sparse).")
    truncated: bool = Field(default=False, description="Larger than the preview shows; apply writes all of it.")
    includes_parent_changes: bool = Field(
        default=False, description="The file carries a parent session's changes that are not on the host."
    )
    masked_lines: int = Field(default=0, description="Preview lines masking hid; apply writes them as they are.")
    masked_rules: list[str] = Field(default_factory=list)


class RefusedWrite(BaseModel):
    path: str
    reason: str


class DiffStats(BaseModel):
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0


class DiffPreview(BaseModel):
    session_id: str
    files: list[FileChange] = Field(default_factory=list)
    unified: str = ""
    stats: DiffStats = Field(default_factory=DiffStats)
    refused: list[RefusedWrite] = Field(default_factory=list)
    digest: str = Field(default="", description="Of the change set; apply_diff(digest=...) refuses any other.")
    masked_files: list[str] = Field(
        default_factory=list, description="Files with masked spans: apply needs acknowledge_masked=true."
    )


def _text(data: bytes) -> list[str] | None:
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def detect_renames(
    changes: list[FileChange], contents: dict[str, tuple[bytes | None, bytes | None]]
) -> list[FileChange]:
    deleted = {contents[c.path][0]: c for c in changes if c.status == "deleted" and contents[c.path][0]}
    out, used = [], set()
    for change in changes:
        if change.status == "added":
            after = contents[change.path][1]
            old = deleted.get(after) if after else None
            if old is not None and old.path not in used:
                used.add(old.path)
                out.append(change.model_copy(update={"status": "renamed", "old_path": old.path}))
                contents[change.path] = (after, after)
                continue
        out.append(change)
    return [c for c in out if not (c.status == "deleted" and c.path in used)]


def render(
    session_id: str,
    files: list[FileChange],
    contents: dict[str, tuple[bytes | None, bytes | None]],
    refused: list[RefusedWrite],
    mask: Callable[[str], str],
    detect: Callable[[str], str],
) -> DiffPreview:
    chunks: list[str] = []
    rendered: list[FileChange] = []
    insertions = deletions = 0
    masked_files: list[str] = []
    for change in sorted(files, key=lambda c: c.path):
        before, after = contents.get(change.path, (None, None))
        name = mask(change.path)
        old_name = mask(change.old_path) if change.old_path else name
        header = f"diff --hydra a/{old_name} b/{name}\n" + _notes(change)
        if change.status == "symlink":
            chunks.append(header + f"symbolic link -> {change.symlink_target}\n")
            rendered.append(change.model_copy(update={"path": name}))
            continue
        if change.status == "mode_changed":
            chunks.append(header + f"old mode {change.old_mode}\nnew mode {change.new_mode}\n")
            rendered.append(change.model_copy(update={"path": name}))
            continue
        old_lines = _text(before) if before is not None else []
        new_lines = _text(after) if after is not None else []
        if old_lines is None or new_lines is None:
            sizes = f"{describe_size(change.old_size, None)} -> {describe_size(change.size, change.disk_bytes)}"
            chunks.append(header + f"Binary files differ ({sizes})\n")
            rendered.append(
                change.model_copy(update={"path": name, "old_path": change.old_path and old_name, "binary": True})
            )
            continue
        adds = dels = 0
        body = []
        for line in difflib.unified_diff(
            old_lines,
            new_lines,
            "/dev/null" if change.status == "added" else f"a/{old_name}",
            "/dev/null" if change.status == "deleted" else f"b/{name}",
        ):
            if line.startswith("+") and not line.startswith("+++"):
                adds += 1
            elif line.startswith("-") and not line.startswith("---"):
                dels += 1
            body.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        insertions += adds
        deletions += dels
        # masked as one text: a private key block spans lines, and no single line of it looks secret
        text = "".join(body)
        shown_text = mask(text)
        hidden, rules = hidden_by_mask(text, shown_text if detect is mask else detect(text))
        if hidden:
            masked_files.append(name)
            header += (
                f"# hydra: masking hid {hidden} line(s) here ({', '.join(rules)}); apply writes them as they are\n"
            )
        chunks.append(header + shown_text)
        rendered.append(
            change.model_copy(
                update={
                    "path": name,
                    "old_path": change.old_path and old_name,
                    "additions": adds,
                    "deletions": dels,
                    "masked_lines": hidden,
                    "masked_rules": rules,
                }
            )
        )
    return DiffPreview(
        session_id=session_id,
        files=rendered,
        unified="".join(chunks),
        stats=DiffStats(files_changed=len(rendered), insertions=insertions, deletions=deletions),
        refused=refused,
        masked_files=masked_files,
    )


def _notes(change: FileChange) -> str:
    notes = []
    if change.includes_parent_changes:
        notes.append("# hydra: this file carries a parent session's changes that are not on the host; shown here\n")
    if change.truncated:
        notes.append(f"# hydra: only the first {MAX_DIFF_BYTES} bytes are shown; apply writes all {change.size}\n")
    return "".join(notes)
