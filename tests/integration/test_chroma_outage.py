"""Fault test: the Chroma server goes away while events flow; nothing is lost or indexed twice."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hydra_sandbox.chroma_image import DEFAULT_BASE_IMAGE, build_chroma_image, wait_for_chroma
from hydra_sandbox.chroma_store import ChromaStore
from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.indexer import Indexer
from hydra_sandbox.journal import Journal
from hydra_sandbox.settings import load_settings

pytestmark = [pytest.mark.docker, pytest.mark.adversarial]

LABELS = {"hydra.test": "1", "hydra.role": "chroma", "hydra.session": "outage-test"}


def model_dir() -> Path:
    """Where Hydra reads the embedding model (HYDRA_EMBEDDING_MODEL_DIR; `hydra embeddings install` puts it there)."""
    return load_settings().embedding_model_dir


def poll(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def chroma_container() -> Iterator[tuple[object, str]]:
    """A Chroma server on a fixed loopback port (so it keeps its address across stop/start)."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    import docker
    from testcontainers.core.container import DockerContainer

    client = docker.from_env()
    tag = build_chroma_image(client, os.environ.get("HYDRA_BASE_IMAGE", DEFAULT_BASE_IMAGE))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    container = DockerContainer(tag).with_kwargs(labels=LABELS)
    container.ports["8000/tcp"] = ("127.0.0.1", port)
    container.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_chroma(url)
        yield container.get_wrapped_container(), url
    finally:
        container.stop()
        assert client.containers.list(all=True, filters={"label": "hydra.session=outage-test"}) == []


def test_events_written_during_a_chroma_outage_are_all_searchable_exactly_once(
    chroma_container: tuple[object, str], tmp_path: Path
) -> None:
    docker_container, url = chroma_container
    journal = Journal(tmp_path / "journal.sqlite3")
    store = ChromaStore.http(url, MiniLMEmbedding(model_dir()))
    indexer = Indexer(journal, store, batch_size=16, poll_interval_s=0.05, max_backoff_s=0.5)
    indexer.start()
    produced: list[str] = []
    stop_producing = threading.Event()

    def produce() -> None:
        n = 0
        while not stop_producing.is_set() and n < 400:
            ref = SessionRef(session_id=f"sess{n % 4}")
            event = journal.append(ref, EventDraft(type="note", text=f"event number {n} marker{n}"))
            produced.append(event.id)
            indexer.notify()
            n += 1
            stop_producing.wait(0.01)  # about 100 events per second

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        poll(lambda: len(produced) >= 40 and store.count() > 0, 60, "indexing to start")
        docker_container.stop(timeout=5)  # type: ignore[attr-defined]
        at_outage = len(produced)
        poll(lambda: indexer.failures > 0 and len(produced) >= at_outage + 60, 60, "failures during the outage")
        assert indexer.lag() > 0
        docker_container.start()  # type: ignore[attr-defined]
        wait_for_chroma(url)
        stop_producing.set()
        producer.join(30)
        poll(lambda: indexer.lag() == 0, 120, "the indexer to catch up")
    finally:
        stop_producing.set()
        producer.join(30)
        indexer.stop()

    assert journal.count() == len(produced) == store.count()
    for session in ("sess0", "sess1", "sess2", "sess3"):
        hit_ids = [h.id for h in store.query_by_session(session, limit=10_000)]
        assert hit_ids == [e.id for e in journal.events(session)]
    for n in (0, at_outage + 5, len(produced) - 1):
        event_id = produced[n]
        text = journal.get(event_id).text  # type: ignore[union-attr]
        assert [h.id for h in store.semantic_search(text, limit=1)] == [event_id]
    journal.close()
