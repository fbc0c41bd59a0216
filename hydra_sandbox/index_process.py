"""The embedded Chroma index in a process of its own, behind the ContextStore protocol.

Embedded Chroma's Python binding holds the interpreter lock for the whole of each call: upserting a
batch of 256 events takes about 200 ms, 64 take 55 ms, and for that long no other thread of the
process runs, the MCP server's event loop included. With a few dozen agents streaming, the index was
the largest holder of the lock and every tool call waited behind it (``benchmarks/bench_agents_per_host.py``).
:class:`IndexProcess` runs :class:`~hydra_sandbox.chroma_store.ChromaStore` (and the embedding model) in
a spawned child process and forwards each ContextStore call over a pipe; the caller's thread waits on
the pipe without the lock.

- One call at a time, in order (a lock around the pipe); the child is single-threaded, as the
  embedded directory allows.
- Errors come back as themselves: :class:`~hydra_sandbox.errors.HydraError` pickles with its fields, so
  the indexer still sees :class:`~hydra_sandbox.errors.UnindexableEventError` for an event to set aside
  and a :class:`~hydra_sandbox.errors.StoreError` for an outage.
- The child's start-up failures (the directory locked by another Hydra, the embedding model missing)
  are raised by the constructor, as the in-process store raised them.
- A child that dies (killed, out of memory) fails the call in progress with a StoreError; the next call
  starts a new child, so the indexer's retry finds the index again. A parent that dies closes the pipe,
  and the child exits on that, releasing the directory's lock.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from hydra_sandbox.errors import HydraError, StoreError
from hydra_sandbox.events import Event
from hydra_sandbox.settings import HydraSettings
from hydra_sandbox.store import SearchFilters, SearchHit

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""How long the child may take to open the index (imports, the embedding model, the directory)."""
STOP_TIMEOUT_S = 10.0
_CALLS = frozenset(
    [
        *("record_events", "record_event", "finalize_session", "query_by_session"),
        *("semantic_search", "delete", "count", "reset"),
    ]
)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` as the child sends it: Hydra's errors as they are, anything else as a StoreError naming it."""
    if isinstance(exc, HydraError):
        return exc
    return StoreError(
        f"the index process failed: {type(exc).__name__}: {exc}", hint="see the server log; the call may be retried"
    )


def serve(conn: Connection) -> None:
    """The child: read the settings, open the store, answer ``(method, args, kwargs)`` until told to
    stop or the pipe closes."""
    from hydra_sandbox.chroma_store import ChromaStore  # imported here: the parent never loads Chroma
    from hydra_sandbox.indexer import INDEX_NICE, lower_priority

    lower_priority(INDEX_NICE)  # embedding is the heaviest work: tool calls and agents come first
    try:
        store = ChromaStore.from_settings(HydraSettings.model_validate(conn.recv()))
    except Exception as exc:  # every start-up failure goes to the parent
        conn.send(("error", _portable(exc)))
        return
    conn.send(("ready", None))
    try:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if method == "close":
                return
            try:
                result = getattr(store, method)(*args, **kwargs)
            except Exception as exc:  # reported to the caller; the child goes on
                conn.send(("error", _portable(exc)))
            else:
                conn.send(("ok", result))
    finally:
        store.close()


class IndexProcess:
    """A ContextStore whose embedded Chroma runs in a child process (see the module documentation)."""

    def __init__(self, settings: HydraSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        with self._lock:
            self._start()

    # -- the child ------------------------------------------------------------------------------

    def _start(self) -> None:
        """A fresh interpreter (nothing of the server's state inherited, its own session so a terminal's
        Ctrl-C goes to the server, which then closes it), talking over a socket pair."""
        mine, theirs = socket.socketpair()
        with mine, theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", "hydra_sandbox.index_process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # over stdio, the server's stdout is the MCP channel
                start_new_session=True,
            )
            parent = Connection(mine.detach())
        try:
            parent.send(self._settings.model_dump())  # fields, not the object: secrets stay SecretStr
            if not parent.poll(START_TIMEOUT_S):
                raise StoreError(
                    f"the index process did not open the index within {START_TIMEOUT_S:.0f} s",
                    hint="check the data directory and the embedding model (`hydra doctor`)",
                )
            kind, value = parent.recv()
        except (EOFError, OSError):
            kind, value = "error", None
        except StoreError:
            process.kill()
            _wait(process)
            parent.close()
            raise
        if kind != "ready":
            parent.close()
            code = _wait(process)
            if isinstance(value, BaseException):
                raise value
            raise StoreError(
                f"the index process ended while opening the index (exit code {code})",
                hint="see the server log; `hydra doctor` checks the index",
            )
        self._process, self._conn = process, parent

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert method in _CALLS
        with self._lock:
            if self._conn is None or self._process.poll() is not None:
                self._discard()
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((method, args, kwargs))
                kind, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                code = self._process.poll() if self._process is not None else None
                self._discard()
                raise StoreError(
                    f"the index process ended during {method} (exit code {code}): {type(exc).__name__}",
                    hint="the next call starts it again; nothing recorded is lost: the journal keeps every event",
                ) from None
        if kind == "error":
            raise value
        return value

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            _wait(self._process)
            self._process = None

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` between a child's death and the next call)."""
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        """Stop the child (it closes the store and releases the directory)."""
        with self._lock:
            if self._conn is not None and self._process is not None and self._process.poll() is None:
                try:
                    self._conn.send(("close", (), {}))
                    self._process.wait(STOP_TIMEOUT_S)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    log.warning("the index process did not stop cleanly (%s): killed", exc)
            self._discard()

    # -- ContextStore -----------------------------------------------------------------------------

    def record_events(self, events: Sequence[Event]) -> None:
        self._call("record_events", list(events))

    def record_event(self, event: Event) -> None:
        self._call("record_event", event)

    def finalize_session(self, session_id: str, summary: Event) -> None:
        self._call("finalize_session", session_id, summary)

    def query_by_session(self, session_id: str, limit: int = 1000) -> list[SearchHit]:
        hits: list[SearchHit] = self._call("query_by_session", session_id, limit)
        return hits

    def semantic_search(self, query: str, filters: SearchFilters | None = None, limit: int = 10) -> list[SearchHit]:
        hits: list[SearchHit] = self._call("semantic_search", query, filters, limit)
        return hits

    def delete(self, ids: Sequence[str]) -> None:
        self._call("delete", list(ids))

    def count(self) -> int:
        total: int = self._call("count")
        return total

    def reset(self) -> None:
        self._call("reset")


def _wait(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
