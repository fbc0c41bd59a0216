"""Files below a trusted directory, reached without following a symbolic link in ANY component.

``O_NOFOLLOW`` guards only the last component of a path: a hostile process that owns a layer (a running
parent agent writes its upper layer, which is a lower layer of its child) can swap a directory for a
link to a host path between Hydra's ``lstat`` and its ``open``. Every path Hydra reads or writes in a
layer or in the operator's directory therefore goes through a :class:`Tree`, which holds a descriptor of
its root and resolves each relative path with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` (Linux
5.6+), or, where that system call is missing or filtered, by opening one component at a time with
``O_NOFOLLOW | O_DIRECTORY``. Either way a link anywhere on the way fails with ``ELOOP`` and nothing
outside the root is ever opened.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from hydra_sandbox.errors import WorkspaceError

_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it to (5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINKED = (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)  # what a link or a file in a directory's place gives


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """The system call, probed once per process; ``None`` after ENOSYS/EPERM (old kernel, seccomp)."""

    usable: bool | None = None
    _syscall: Callable[..., int] | None = None

    @classmethod
    def call(cls, dir_fd: int, rel: str, flags: int, mode: int) -> int | None:
        if cls.usable is False:
            return None
        if cls._syscall is None:
            libc = ctypes.CDLL(None, use_errno=True)
            cls._syscall = libc.syscall
        how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        fd = cls._syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(rel)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            cls.usable = True
            return int(fd)
        err = ctypes.get_errno()
        if cls.usable is None and err in (errno.ENOSYS, errno.EPERM):
            cls.usable = False
            return None
        raise OSError(err, os.strerror(err), rel)


def split_relative(rel: str) -> list[str]:
    """The components of a workspace-relative path; refuses absolute paths and ``''``/``.``/``..``."""
    parts = rel.split("/")
    if not rel or any(p in {"", ".", ".."} for p in parts):
        raise WorkspaceError(
            f"path {rel!r} is not a plain relative path",
            hint="use names separated by single '/', without '.', '..' or a leading '/'",
        )
    return parts


def is_link_error(exc: OSError) -> bool:
    """True when an open failed because a component was a link (or no longer a directory)."""
    return exc.errno in _LINKED


class Tree:
    """A directory Hydra trusts, and every path below it opened without following links.

    Use as a context manager (it holds one descriptor). All ``rel`` arguments are relative to the root;
    ``""`` is the root itself for the directory operations.
    """

    def __init__(self, root: Path, *, openat2: bool = True) -> None:
        self.root = Path(root)
        self._openat2 = openat2
        self.fd = os.open(self.root, _DIR_FLAGS)

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _walk_open(self, parts: list[str], flags: int, mode: int) -> int:
        fd = os.dup(self.fd)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
        finally:
            os.close(fd)

    def open(self, rel: str, flags: int = os.O_RDONLY, mode: int = 0) -> int:
        """A descriptor of ``rel``; ``OSError(ELOOP)`` when any component is a symbolic link."""
        if rel == "":
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=self.fd)
        parts = split_relative(rel)
        if self._openat2:
            fd = _Openat2.call(self.fd, rel, flags, mode if flags & os.O_CREAT else 0)
            if fd is not None:
                return fd
        return self._walk_open(parts, flags, mode)

    def open_dir(self, rel: str) -> int:
        return self.open(rel, _DIR_FLAGS)

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry itself (a link is not followed); ``None`` when it, or a directory on the way, is
        missing or is not a directory."""
        parent, _, name = rel.rpartition("/")
        try:
            fd = self.open_dir(parent)
        except OSError:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)

    def readlink(self, rel: str) -> str:
        parent, _, name = rel.rpartition("/")
        fd = self.open_dir(parent)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def read(self, rel: str, limit: int | None = None) -> bytes:
        """The content of the regular file ``rel`` (up to ``limit`` bytes)."""
        with os.fdopen(self.open(rel, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", rel)
            return fh.read() if limit is None else fh.read(limit)

    def getxattr(self, rel: str, name: str) -> bytes | None:
        """An attribute of the directory ``rel``; ``None`` when it has none or is not a directory."""
        try:
            fd = self.open_dir(rel)
        except OSError:
            return None
        try:
            return os.getxattr(fd, name)
        except OSError:
            return None
        finally:
            os.close(fd)

    def scandir(self, rel: str) -> list[tuple[str, os.stat_result]]:
        """The entries of the directory ``rel`` with their own (unfollowed) stat, sorted by name."""
        fd = self.open_dir(rel)
        try:
            out = []
            for name in sorted(os.listdir(fd)):
                try:
                    out.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # removed while listing
            return out
        finally:
            os.close(fd)

    def walk(
        self, rel: str = "", *, skip: Callable[[str], bool] = lambda _rel: False
    ) -> Iterator[tuple[str, str, os.stat_result]]:
        """``(rel_dir, name, stat)`` for every entry below ``rel``; directories are descended (each one
        opened again from the root, so a directory swapped for a link is skipped, never entered) unless
        ``skip(rel_of_dir)`` is true. A directory that cannot be opened is left out."""
        stack = [rel]
        while stack:
            current = stack.pop()
            try:
                entries = self.scandir(current)
            except OSError:
                continue
            for name, st in entries:
                child = f"{current}/{name}" if current else name
                yield current, name, st
                if stat.S_ISDIR(st.st_mode) and not skip(child):
                    stack.append(child)

    def make_dirs(self, rel: str, mode_of: Callable[[str], int]) -> int:
        """A descriptor of directory ``rel``, creating missing components with ``mode_of(rel_so_far)``
        (set exactly, whatever the umask). A link or a file on the way raises ``OSError``."""
        if rel == "":
            return os.dup(self.fd)
        fd = os.dup(self.fd)
        done: list[str] = []
        try:
            for part in split_relative(rel):
                done.append(part)
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    mode = mode_of("/".join(done)) & 0o777
                    os.mkdir(part, mode, dir_fd=fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    os.chmod(nxt, mode)
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise


def temp_name(prefix: str) -> str:
    """A fresh name for a temporary entry created with ``O_EXCL`` next to its target."""
    return f"{prefix}{secrets.token_hex(8)}"
