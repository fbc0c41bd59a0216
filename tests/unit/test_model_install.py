"""Installing the embedding model: copied from a folder, or downloaded by Chroma's own code (here from
an HTTP server the test starts on loopback), or an error that says exactly what to copy where."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tenacity
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.errors import EmbeddingModelMissingError
from hydra_sandbox.model_install import chroma_fetcher, has_model, install_model

FILES = ("config.json", "model.onnx", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def fake_model(folder: Path) -> Path:
    """A folder with the layout of Chroma's model archive (contents do not matter to installing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / name).write_text(f"fake {name}\n")
    return folder


@pytest.fixture
def archive_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, sha256) of an onnx.tar.gz like Chroma's, served on loopback."""
    served = tmp_path / "served"
    served.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(fake_model(tmp_path / "pack" / "onnx"), arcname="onnx")
    (served / "onnx.tar.gz").write_bytes(buffer.getvalue())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/onnx.tar.gz", hashlib.sha256(buffer.getvalue()).hexdigest()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetcher_for(download_path: Path, url: str, sha256: str) -> Any:
    fetcher = chroma_fetcher()  # Chroma's class; only where it downloads from and to is changed
    fetcher.DOWNLOAD_PATH = download_path
    fetcher.MODEL_DOWNLOAD_URL = url
    fetcher._MODEL_SHA256 = sha256
    return fetcher


def closed_loopback_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/onnx.tar.gz"


def test_a_model_already_in_place_is_left_alone(tmp_path: Path) -> None:
    dest = fake_model(tmp_path / "model")
    result = install_model(dest, fetcher=object())  # a fetcher that would fail if used
    assert result.how == "present"


def test_copies_the_model_from_a_source_folder(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "offline-copy")
    dest = tmp_path / "deep" / "model"
    result = install_model(dest, source=source)
    assert result.how == "copied" and result.directory == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)  # no partial files left behind


def test_a_source_without_the_model_names_what_it_lacks(tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.mkdir()
    with pytest.raises(EmbeddingModelMissingError, match=r"lacks model\.onnx, tokenizer\.json"):
        install_model(tmp_path / "model", source=source)
    assert not has_model(tmp_path / "model")


def test_downloads_with_chromas_own_code(tmp_path: Path, archive_server: tuple[str, str]) -> None:
    url, sha256 = archive_server
    fetcher = fetcher_for(tmp_path / "chroma-cache", url, sha256)
    dest = tmp_path / "hydra-model"
    result = install_model(dest, fetcher=fetcher)
    assert result.how == "downloaded"
    assert has_model(tmp_path / "chroma-cache" / "onnx")  # Chroma's own cache has it too
    assert (dest / "tokenizer.json").read_text() == "fake tokenizer.json\n"


def test_a_download_with_the_wrong_checksum_is_refused(
    tmp_path: Path, archive_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = archive_server
    fetcher = chroma_fetcher()
    monkeypatch.setattr(type(fetcher)._download.retry, "wait", tenacity.wait_none())  # Chroma retries 3 times
    fetcher = fetcher_for(tmp_path / "chroma-cache", url, "0" * 64)
    with pytest.raises(EmbeddingModelMissingError, match="SHA256"):
        install_model(tmp_path / "model", fetcher=fetcher)
    assert not has_model(tmp_path / "model")


def test_without_network_it_says_what_to_copy_where(tmp_path: Path) -> None:
    fetcher = fetcher_for(tmp_path / "chroma-cache", closed_loopback_url(), "0" * 64)
    dest = tmp_path / "model"
    with pytest.raises(EmbeddingModelMissingError) as info:
        install_model(dest, fetcher=fetcher)
    message = str(info.value)
    assert "could not download" in message
    for needed in (str(dest), "model.onnx", "tokenizer.json", "HYDRA_EMBEDDING_MODEL_SOURCE", "--source"):
        assert needed in message


def test_the_cli_installs_from_a_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_EMBEDDING_MODEL_DIR", str(tmp_path / "model"))
    source = fake_model(tmp_path / "copy")
    result = CliRunner().invoke(app, ["embeddings", "install", "--source", str(source), "--json"])
    assert result.exit_code == 0, result.output
    assert '"how": "copied"' in result.output and has_model(tmp_path / "model")
