"""Fixtures for the ContextStore contract: one store per implementation, same tests over each.

``context_store`` is parametrised over the in-memory fake, embedded Chroma, embedded Chroma in the
index process the server runs it in, and a Chroma server in a container built from ``images/chroma``
(marked ``docker``; run with ``-m docker``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydra_sandbox.chroma_store import ChromaStore
from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.index_process import IndexProcess
from hydra_sandbox.settings import HydraSettings, load_settings
from hydra_sandbox.store import ContextStore, InMemoryStore

TEST_LABELS = {"hydra.test": "1", "hydra.role": "chroma"}


def model_dir() -> Path:
    """Where Hydra reads the embedding model (HYDRA_EMBEDDING_MODEL_DIR; `hydra embeddings install` puts it there)."""
    return load_settings().embedding_model_dir


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def embedding() -> MiniLMEmbedding:
    return MiniLMEmbedding(model_dir())


@pytest.fixture(scope="session")
def chroma_server_url() -> Iterator[str]:
    """A Chroma server container on a loopback port; removed afterwards, and checked to be gone."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image cannot be pulled here
    import docker
    from testcontainers.core.container import DockerContainer

    from hydra_sandbox.chroma_image import DEFAULT_BASE_IMAGE, build_chroma_image, wait_for_chroma

    client = docker.from_env()
    tag = build_chroma_image(client, os.environ.get("HYDRA_BASE_IMAGE", DEFAULT_BASE_IMAGE))
    port = free_loopback_port()
    container = DockerContainer(tag).with_kwargs(labels=TEST_LABELS)
    container.ports["8000/tcp"] = ("127.0.0.1", port)
    container.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_chroma(url)
        yield url
    finally:
        container.stop()
        left = client.containers.list(all=True, filters={"label": "hydra.test=1"})
        assert [c for c in left if c.labels.get("hydra.role") == "chroma"] == []


@pytest.fixture(
    params=["memory", "embedded", "index-process", pytest.param("server", marks=pytest.mark.docker)],
)
def context_store(request: pytest.FixtureRequest, tmp_path: Path, embedding: MiniLMEmbedding) -> Iterator[ContextStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    store: ChromaStore | IndexProcess
    if request.param in ("embedded", "index-process"):
        settings = HydraSettings(data_home=tmp_path, embedding_model_dir=embedding.model_dir)
        store = ChromaStore.from_settings(settings) if request.param == "embedded" else IndexProcess(settings)
    else:
        store = ChromaStore.http(request.getfixturevalue("chroma_server_url"), embedding)
        store.reset()  # the server is shared by the session's tests
    try:
        yield store
    finally:
        store.close()
