"""The index process: embedded Chroma in a child process behind the ContextStore protocol. What the
contract tests cannot show: errors crossing the pipe as themselves, the directory lock, a child that
dies, and a server that dies (the contract itself runs over it in ``test_context_store``)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.errors import EmbeddingModelMissingError, StoreError, UnindexableEventError
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.index_process import IndexProcess
from hydra_sandbox.limits import MAX_INDEX_TAGS
from hydra_sandbox.services import _default_store
from hydra_sandbox.settings import HydraSettings


def event(counter: int, text: str, **kw: object) -> Event:
    return Event.from_draft(EventDraft(type="command", text=text, **kw), SessionRef(session_id="s1"), counter)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, embedding: MiniLMEmbedding) -> HydraSettings:
    return HydraSettings(data_home=tmp_path, embedding_model_dir=embedding.model_dir)


def within(predicate: Callable[[], bool], seconds: float = 20.0) -> bool:
    """Whether ``predicate`` holds within the deadline (polled)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (or is a zombie nobody reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_hydra_errors_cross_a_pickle_with_their_fields() -> None:
    error = pickle.loads(pickle.dumps(UnindexableEventError("ev-1", "over the tag limit")))
    assert isinstance(error, UnindexableEventError)
    assert (error.event_id, error.reason) == ("ev-1", "over the tag limit")
    assert str(error) == str(UnindexableEventError("ev-1", "over the tag limit"))
    assert error.hint == UnindexableEventError("ev-1", "over the tag limit").hint
    plain = pickle.loads(pickle.dumps(StoreError("disk full", hint="free space")))
    assert (type(plain), plain.message, plain.hint) == (StoreError, "disk full", "free space")


def test_the_server_runs_embedded_chroma_in_an_index_process_and_a_chroma_server_in_process(
    settings: HydraSettings,
) -> None:
    store = _default_store(settings)
    try:
        assert isinstance(store, IndexProcess)
        assert store.pid is not None and store.pid != os.getpid()
    finally:
        store.close()


def test_an_event_over_an_index_limit_comes_back_as_the_error_the_indexer_sets_aside(settings: HydraSettings) -> None:
    store = IndexProcess(settings)
    try:
        too_many = event(0, "tags", tags=[f"t{i}" for i in range(MAX_INDEX_TAGS + 1)])
        with pytest.raises(UnindexableEventError) as caught:
            store.record_events([event(1, "fine"), too_many])
        assert caught.value.event_id == too_many.id
        assert store.count() == 0  # nothing of the batch was written
    finally:
        store.close()


def test_a_second_opener_of_the_directory_is_refused_naming_the_index_process(settings: HydraSettings) -> None:
    first = IndexProcess(settings)
    try:
        with pytest.raises(StoreError, match=f"already open in process {first.pid}"):
            IndexProcess(settings)
    finally:
        first.close()
    IndexProcess(settings).close()  # closing released the directory


def test_an_index_process_killed_between_calls_is_started_again_by_the_next_call(settings: HydraSettings) -> None:
    store = IndexProcess(settings)
    try:
        store.record_events([event(0, "apt could not fetch packages")])
        first = store.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert within(lambda: store._process.poll() is not None)  # dead, as the store sees it
        assert store.count() == 1  # a new child, the same directory
        assert store.pid not in (None, first)
        assert store.semantic_search("package download failure", limit=1)[0].text == "apt could not fetch packages"
    finally:
        store.close()


def test_an_index_process_that_dies_during_a_call_fails_that_call_with_a_store_error(settings: HydraSettings) -> None:
    store = IndexProcess(settings)
    try:
        pid = store.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the call below waits for an answer that cannot come
        failed: list[BaseException] = []

        def count() -> None:
            try:
                store.count()
            except StoreError as exc:
                failed.append(exc)

        caller = threading.Thread(target=count)
        caller.start()
        assert within(store._lock.locked)  # the call is under way
        os.kill(pid, signal.SIGKILL)
        caller.join(30)
        assert not caller.is_alive()
        assert len(failed) == 1 and "index process ended during count" in str(failed[0])
        assert store.count() == 0  # and the next call has a new child
    finally:
        store.close()


def test_the_index_process_ends_when_the_server_dies_and_releases_the_directory(
    settings: HydraSettings, tmp_path: Path
) -> None:
    script = (
        "import os, sys\n"
        "from hydra_sandbox.index_process import IndexProcess\n"
        "from hydra_sandbox.settings import HydraSettings\n"
        f"store = IndexProcess(HydraSettings.model_validate_json({settings.model_dump_json()!r}))\n"
        "print(store.pid, flush=True)\n"
        "sys.stdin.read()\n"
        "os._exit(0)\n"  # no close(): a server killed or crashing
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path, text=True
    )
    assert server.stdout is not None and server.stdin is not None
    child = int(server.stdout.readline())
    server.kill()
    server.wait(30)
    assert within(lambda: ended(child)), "the index process outlived its server"
    IndexProcess(settings).close()  # its lock went with it


def test_a_missing_embedding_model_is_reported_by_the_call_that_needs_it_as_in_process(tmp_path: Path) -> None:
    settings = HydraSettings(data_home=tmp_path, embedding_model_dir=tmp_path / "no-model")
    store = IndexProcess(settings)
    try:
        with pytest.raises(EmbeddingModelMissingError, match="no-model"):
            store.record_events([event(0, "text")])
        assert store.count() == 0  # the same child still answers
    finally:
        store.close()
