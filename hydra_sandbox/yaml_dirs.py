"""The YAML files of a list of directories, re-read only when they change.

The profile and policy catalogs are consulted on the server's event loop (spawn resolution, prompts,
listings). Parsing and validating every file on every call would be blocking file I/O there, so a
:class:`YamlDirectories` keeps what a catalog built from the files and rebuilds it only when the
directory listing or a file's identity changes. Looking costs a directory listing and one ``stat``
per file; a file counts as changed when its inode, size, modification or change time differs (an
editor that saves by renaming gets a new inode; a write in place moves the times).
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

from hydra_sandbox.errors import ConfigError, HydraError

S = TypeVar("S")
T = TypeVar("T")
E = TypeVar("E", bound=HydraError)
Stamp = tuple[tuple[str, int, int, int, int], ...]


def yaml_files(directories: Iterable[Path]) -> list[Path]:
    """Every ``*.yaml`` and ``*.yml`` file, directory by directory, sorted by name within each: a
    later file with the same name overrides an earlier one."""
    found: list[Path] = []
    for directory in directories:
        if directory.is_dir():
            found += sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    return found


def _stamp(files: list[Path]) -> Stamp:
    marks = []
    for path in files:
        try:
            st = os.stat(path)
            marks.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:  # gone since the listing: the next look lists without it and rebuilds
            marks.append((str(path), -1, -1, -1, -1))
    return tuple(marks)


def load_each(loaders: Iterable[tuple[str, Callable[[], T]]]) -> tuple[dict[str, T], dict[str, ConfigError]]:
    """Run every named loader: what loaded, by name, and the error of each one that did not (one broken
    file never hides the others)."""
    good: dict[str, T] = {}
    bad: dict[str, ConfigError] = {}
    for name, load in loaders:
        try:
            good[name] = load()
        except ConfigError as exc:
            bad[name] = exc
    return good, bad


def fresh(error: E) -> E:
    """A copy of a remembered error to raise, so raising it again never grows one shared traceback."""
    return copy.copy(error)


class YamlDirectories(Generic[S]):
    """What ``build`` makes of the YAML files of ``directories``, rebuilt when any of them changes.

    Thread-safe: the server asks from the event loop and from worker threads.
    """

    def __init__(self, directories: Iterable[Path | None], build: Callable[[list[Path]], S]) -> None:
        self.directories = [d for d in directories if d is not None]
        self._build = build
        self._lock = threading.Lock()
        self._stamp: Stamp | None = None
        self._value: S | None = None
        self.builds = 0
        """How many times the files were read (tests and curious operators)."""

    def current(self) -> S:
        """The value for the files as they are now: cached unless a file was added, removed or changed."""
        files = yaml_files(self.directories)
        stamp = _stamp(files)  # taken before reading, so a change during the build is seen next time
        with self._lock:
            if self._value is None or stamp != self._stamp:
                self._value = self._build(files)
                self._stamp = stamp
                self.builds += 1
            return self._value
