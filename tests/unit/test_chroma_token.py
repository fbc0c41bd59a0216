"""A Chroma server behind the Helm chart's token gate: Hydra sends HYDRA_CHROMA_TOKEN as a bearer token
on every request, and nothing when none is set. The server is a loopback listener of the test's own."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydra_sandbox.chroma_store import ChromaStore
from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.errors import StoreError
from hydra_sandbox.settings import load_settings


class Gate(http.server.BaseHTTPRequestHandler):
    """Answers 401 to everything, recording the Authorization header of each request."""

    seen: list[str | None] = []

    def do_GET(self) -> None:
        Gate.seen.append(self.headers.get("Authorization"))
        body = b'{"error": "Unauthorized"}'
        self.send_response(401)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gate_url() -> Iterator[str]:
    Gate.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_chroma_token_setting_is_sent_as_a_bearer_header(
    gate_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("HYDRA_CHROMA_URL", gate_url)
    monkeypatch.setenv("HYDRA_CHROMA_TOKEN", "gate-token-123")
    with pytest.raises(StoreError, match="Unauthorized"):
        ChromaStore.from_settings(load_settings())
    assert Gate.seen and set(Gate.seen) == {"Bearer gate-token-123"}


def test_no_token_no_authorization_header(gate_url: str) -> None:
    with pytest.raises(StoreError):
        ChromaStore.http(gate_url, MiniLMEmbedding(Path("/nonexistent")))
    assert Gate.seen and set(Gate.seen) == {None}
