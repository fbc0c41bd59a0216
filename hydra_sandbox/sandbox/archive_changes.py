"""The agent's tree, back as a tar, turned into the overlay form of its change set in ``ws.upper``.

The archive is HOSTILE: the agent made it. :func:`unpack_changes` reads it once, as a stream, and
refuses (with a :class:`~hydra_sandbox.errors.WorkspaceError` naming the member and what is allowed)
absolute names, ``..``, NUL in a name or a link's target, a member whose directory did not come before
it as a directory (under a link or a file an earlier member made), duplicates, hard links, devices and
fifos, names over 4096 bytes, more members than :attr:`UnpackBounds.max_members`, a file over the
apply-size limit and more bytes in all than :attr:`UnpackBounds.max_total_bytes`. Changed content is
staged under a fresh directory on the layer's own filesystem (``O_EXCL | O_NOFOLLOW``), and only once
the whole archive passed is anything moved into ``ws.upper``, through a
:class:`~hydra_sandbox.beneath.Tree` (a link is never followed).

What lands in ``ws.upper`` is what the overlay would have written for the same changes: changed and
added files, links and directories owned by the agent; a whiteout (``c 0 0``) for each deleted path; an
opaque directory where a directory replaced something else. So :mod:`hydra_sandbox.diffing`,
preview and :mod:`hydra_sandbox.applying` read it unchanged; a hidden path the agent re-created comes
back as a file in the upper layer, which the diff lists as a refused write, as with the overlay.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import tarfile
from typing import BinaryIO, cast

from pydantic import BaseModel, Field

from hydra_sandbox.beneath import Tree, split_relative
from hydra_sandbox.errors import WorkspaceError
from hydra_sandbox.sandbox.archive import EntryType, Manifest
from hydra_sandbox.sandbox.workspace import StagedWorkspace

MIB = 1 << 20
MAX_NAME_BYTES = 4096
DEFAULT_EXTRA_MB = 4096
NEW_MEMBERS = 200_000
MAX_HEADER_BYTES = 64 << 10
_LONG_HEADERS = (
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
)  # fmt: skip
_OPAQUE = "trusted.overlay.opaque"
_CHUNK = 1 << 20


class UnpackBounds(BaseModel):
    max_members: int = Field(default=NEW_MEMBERS, ge=1)
    max_file_bytes: int = Field(default=100 * MIB, ge=0, description="A changed file larger than this is refused.")
    max_total_bytes: int = Field(default=DEFAULT_EXTRA_MB * MIB, ge=0, description="File bytes in the whole archive.")


def bounds_for(ws: StagedWorkspace, manifest: Manifest) -> UnpackBounds:
    """The session's bounds: the apply-size limit, the baseline plus its disk quota (or 4 GiB), and the
    baseline's entries plus :data:`NEW_MEMBERS`."""
    extra = (ws.quota_mb or DEFAULT_EXTRA_MB) * MIB
    return UnpackBounds(
        max_members=len(manifest.entries) + NEW_MEMBERS,
        max_file_bytes=ws.max_apply_file_mb * MIB,
        max_total_bytes=manifest.total_bytes() + extra,
    )


def stream_limit(bounds: UnpackBounds) -> int:
    """The most bytes an archive within ``bounds`` can take, headers included."""
    return bounds.max_total_bytes + bounds.max_members * 1536 + MIB


class UnpackResult(BaseModel):
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    bytes_read: int = 0


class _Change(BaseModel):
    rel: str
    type: EntryType
    mode: int
    staged: str | None = None
    target: str | None = None


def _refuse(ws: StagedWorkspace, name: str, what: str, allowed: str) -> WorkspaceError:
    return WorkspaceError(
        f"session {ws.session_id}: the agent's archive member {name!r} {what}; nothing of it was applied to the layer",
        hint=allowed,
    )


class _BoundedHeaders(tarfile.TarInfo):
    """Members whose PAX or GNU long-name header, which :mod:`tarfile` reads whole, is small."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type in _LONG_HEADERS and self.size > MAX_HEADER_BYTES:
            raise WorkspaceError(
                f"the agent's archive has an extended header of {self.size} bytes; nothing of it was applied",
                hint=f"extended headers up to {MAX_HEADER_BYTES} bytes",
            )
        return super()._proc_member(archive)  # type: ignore[misc, no-any-return]


class _Bounded:
    """The archive stream, cut off past ``limit`` bytes (headers included: a PAX header is read whole)."""

    def __init__(self, ws: StagedWorkspace, stream: BinaryIO, limit: int) -> None:
        self.ws, self.stream, self.limit, self.count = ws, stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        block = self.stream.read(size)
        self.count += len(block)
        if self.count > self.limit:
            raise _refuse(self.ws, "(stream)", f"is over {self.limit} bytes", "fewer or smaller files")
        return block


class _Reader:
    """Reads the archive, checks every member, stages the changed ones under ``incoming``."""

    def __init__(self, ws: StagedWorkspace, manifest: Manifest, bounds: UnpackBounds, incoming: int) -> None:
        self.ws, self.manifest, self.bounds, self.incoming = ws, manifest, bounds, incoming
        self.seen: dict[str, EntryType] = {}
        self.dir_modes: dict[str, int] = {}
        self.changes: list[_Change] = []
        self.result = UnpackResult()
        self.members = 0

    def _relative(self, member: tarfile.TarInfo) -> str | None:
        name = member.name
        if len(os.fsencode(name)) > MAX_NAME_BYTES:
            raise _refuse(self.ws, name[:80] + "…", f"has a name over {MAX_NAME_BYTES} bytes", "shorter paths")
        if name.startswith("/"):
            raise _refuse(self.ws, name, "is an absolute name", "names relative to the workspace, under './'")
        if "\0" in name:
            raise _refuse(self.ws, name, "holds a NUL character", "names without NUL")
        if name in {".", "./"}:
            if not member.isdir():
                raise _refuse(self.ws, name, "is the workspace root but not a directory", "a directory")
            return None
        if not name.startswith("./"):
            raise _refuse(self.ws, name, "is not under './'", "names relative to the workspace, under './'")
        rel = name[2:].rstrip("/")
        try:
            split_relative(rel)
        except WorkspaceError:
            raise _refuse(self.ws, name, "has an empty, '.' or '..' component", "plain relative names") from None
        return rel

    def _check_place(self, name: str, rel: str) -> None:
        if rel in self.seen:
            raise _refuse(self.ws, name, "comes twice", "each path once")
        parent = rel.rpartition("/")[0]
        kind = self.seen.get(parent, "dir" if parent == "" else None)
        if kind == "link":
            raise _refuse(self.ws, name, f"is under {parent!r}, an earlier link", "no path below a link")
        if kind != "dir":
            raise _refuse(self.ws, name, "does not follow its directory", "each directory before what it holds")

    def take(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.bounds.max_members:
            raise _refuse(self.ws, member.name, f"is past {self.bounds.max_members} members", "fewer files")
        rel = self._relative(member)
        if rel is None:
            return
        self._check_place(member.name, rel)
        mode = member.mode & 0o7777
        base = self.manifest.entries.get(rel)
        if member.isdir():
            self.seen[rel], self.dir_modes[rel] = "dir", mode
            same = base is not None and base.type == "dir" and base.mode == mode
            self._record(same, _Change(rel=rel, type="dir", mode=mode))
        elif member.issym():
            if "\0" in member.linkname or len(os.fsencode(member.linkname)) >= MAX_NAME_BYTES:
                what = "is a link to a target with NUL or over 4095 bytes"
                raise _refuse(self.ws, member.name, what, "shorter link targets")
            self.seen[rel] = "link"
            same = base is not None and base.type == "link" and base.target == member.linkname
            self._record(same, _Change(rel=rel, type="link", mode=mode, target=member.linkname))
        elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            self.seen[rel] = "file"
            self._file(tar, member, rel, mode)
        elif member.islnk():
            raise _refuse(self.ws, member.name, "is a hard link", "regular files, directories and symbolic links")
        else:
            raise _refuse(
                self.ws, member.name, "is a device, fifo or other special entry", "regular files, directories, links"
            )

    def _record(self, same: bool, change: _Change) -> None:
        if same:
            self.result.unchanged += 1
        else:
            self.changes.append(change)

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, mode: int) -> None:
        base = self.manifest.entries.get(rel)
        as_before = base is not None and base.type == "file" and base.size == member.size
        if member.size > self.bounds.max_file_bytes and not as_before:
            raise _refuse(
                self.ws, member.name, f"is {member.size} bytes", f"files up to {self.bounds.max_file_bytes} bytes"
            )
        self.result.bytes_read += member.size
        if self.result.bytes_read > self.bounds.max_total_bytes:
            raise _refuse(
                self.ws, member.name, "goes past the bytes allowed", f"{self.bounds.max_total_bytes} bytes in all"
            )
        source = tar.extractfile(member)
        assert source is not None  # a regular member always has a file object
        head = source.read(_CHUNK) if as_before else b""
        small = as_before and len(head) == member.size  # read whole: compared without touching the disk
        if small and base is not None and base.sha256 == hashlib.sha256(head).hexdigest() and base.mode == mode:
            self.result.unchanged += 1
            return
        staged = f"{len(self.changes)}-{secrets.token_hex(4)}"
        digest = hashlib.sha256(head)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(staged, flags, 0o600, dir_fd=self.incoming)
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            for block in iter(lambda: source.read(_CHUNK), b""):
                digest.update(block)
                out.write(block)
            os.fchmod(out.fileno(), mode)
            os.fchown(out.fileno(), self.ws.agent_uid, self.ws.agent_gid)
        if as_before and base is not None and base.sha256 == digest.hexdigest() and base.mode == mode:
            os.unlink(staged, dir_fd=self.incoming)
            self.result.unchanged += 1
            return
        self.changes.append(_Change(rel=rel, type="file", mode=mode, staged=staged))

    def deletions(self) -> list[str]:
        """Baseline paths the agent removed, topmost only (a whiteout of a directory covers what it held)."""
        gone = []
        for rel in self.manifest.entries:
            parent = rel.rpartition("/")[0]
            if rel not in self.seen and (parent == "" or self.seen.get(parent) == "dir"):
                gone.append(rel)
        return sorted(gone)


class _Writer:
    """Moves the staged change set into the upper layer, without following a link."""

    def __init__(self, reader: _Reader, upper: Tree) -> None:
        self.r, self.upper = reader, upper

    def _mode_of(self, rel: str) -> int:
        base = self.r.manifest.entries.get(rel)
        return self.r.dir_modes.get(rel, base.mode if base is not None and base.type == "dir" else 0o755)

    def _parent_fd(self, rel: str) -> int:
        """A descriptor of ``rel``'s directory in the upper layer, made (owned by the agent) if missing."""
        done = ""
        for part in rel.split("/")[:-1]:
            done = f"{done}/{part}" if done else part
            st = self.upper.lstat(done)
            if st is None:
                self._mkdir(done)
            elif not stat.S_ISDIR(st.st_mode):
                raise WorkspaceError(f"session {self.r.ws.session_id}: {done} is not a directory in the layer")
        return self.upper.open_dir(rel.rpartition("/")[0])

    def _mkdir(self, rel: str) -> None:
        parent, _, name = rel.rpartition("/")
        fd = self.upper.open_dir(parent)
        try:
            os.mkdir(name, 0o700, dir_fd=fd)
            os.chown(name, self.r.ws.agent_uid, self.r.ws.agent_gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(name, self._mode_of(rel), dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    @staticmethod
    def _clear(fd: int, name: str, keep_dir: bool) -> os.stat_result | None:
        """Remove what the layer has at ``name`` (a directory is kept when ``keep_dir``); what was there."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if not keep_dir:
                shutil.rmtree(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)
        return st

    def change(self, change: _Change) -> None:
        fd = self._parent_fd(change.rel)
        name = change.rel.rpartition("/")[2]
        ws = self.r.ws
        try:
            before = self._clear(fd, name, keep_dir=change.type == "dir")
            if change.type == "file" and change.staged is not None:
                os.rename(change.staged, name, src_dir_fd=self.r.incoming, dst_dir_fd=fd)
            elif change.type == "link" and change.target is not None:
                os.symlink(change.target, name, dir_fd=fd)
                os.chown(name, ws.agent_uid, ws.agent_gid, dir_fd=fd, follow_symlinks=False)
            elif change.type == "dir":
                if before is None or not stat.S_ISDIR(before.st_mode):
                    os.mkdir(name, 0o700, dir_fd=fd)
                    os.chown(name, ws.agent_uid, ws.agent_gid, dir_fd=fd, follow_symlinks=False)
                base = self.r.manifest.entries.get(change.rel)
                replaced = before is not None and not stat.S_ISDIR(before.st_mode)
                if replaced or (base is not None and base.type != "dir"):
                    self._opaque(fd, name)  # what was below is gone, as when the overlay makes a directory there
                os.chmod(name, change.mode, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def _opaque(self, parent_fd: int, name: str) -> None:
        dir_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            os.setxattr(dir_fd, _OPAQUE, b"y")
        except OSError as exc:
            raise WorkspaceError(
                f"session {self.r.ws.session_id}: cannot mark {name} opaque in the layer ({exc.strerror})",
                hint="Hydra needs CAP_SYS_ADMIN for trusted.* attributes, as for the overlay",
            ) from None
        finally:
            os.close(dir_fd)

    def delete(self, rel: str) -> None:
        fd = self._parent_fd(rel)
        name = rel.rpartition("/")[2]
        try:
            self._clear(fd, name, keep_dir=False)
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
        finally:
            os.close(fd)


def _write(reader: _Reader, upper: Tree) -> UnpackResult:
    writer = _Writer(reader, upper)
    try:
        for change in reader.changes:
            writer.change(change)
        gone = reader.deletions()
        for rel in gone:
            writer.delete(rel)
    except OSError as exc:
        raise WorkspaceError(
            f"session {reader.ws.session_id}: writing the agent's changes into {upper.root} failed ({exc})",
            hint="the layer holds part of the change set: review it with care, or discard the session's changes",
        ) from None
    return reader.result.model_copy(update={"changed": len(reader.changes), "deleted": len(gone)})


def unpack_changes(
    stream: BinaryIO, manifest: Manifest, ws: StagedWorkspace, bounds: UnpackBounds | None = None
) -> UnpackResult:
    """Read the agent's tree (a tar whose members are ``.`` and ``./path``) and write its differences
    from ``manifest`` into ``ws.upper`` in overlay form. Nothing is written to the layer unless the
    whole archive passes."""
    bounds = bounds or bounds_for(ws, manifest)
    incoming_path = ws.upper.parent / f"incoming-{secrets.token_hex(6)}"
    incoming_path.mkdir(mode=0o700)
    try:
        with contextlib.ExitStack() as stack:
            incoming = os.open(incoming_path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            stack.callback(os.close, incoming)
            reader = _Reader(ws, manifest, bounds, incoming)
            try:
                bounded = cast(BinaryIO, _Bounded(ws, stream, stream_limit(bounds)))
                with tarfile.open(fileobj=bounded, mode="r|", tarinfo=_BoundedHeaders) as tar:
                    for member in tar:
                        reader.take(tar, member)
            except tarfile.TarError as exc:
                raise WorkspaceError(
                    f"session {ws.session_id}: the agent's archive is not a valid tar ({exc})",
                    hint="nothing of it was applied to the layer",
                ) from None
            except OSError as exc:  # staging: e.g. the layer's quota filesystem is full
                raise WorkspaceError(
                    f"session {ws.session_id}: staging the agent's changes failed ({exc.strerror})",
                    hint="nothing of it was applied to the layer; is the disk (or the session's quota) full?",
                ) from None
            return _write(reader, stack.enter_context(Tree(ws.upper)))
    finally:
        shutil.rmtree(incoming_path, ignore_errors=True)
