"""MiniLMEmbedding: Chroma's vectors, faster batching, head+tail excerpts, clear missing-model errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from hydra_sandbox.embeddings import MAX_TOKENS, MiniLMEmbedding
from hydra_sandbox.errors import EmbeddingModelMissingError
from hydra_sandbox.settings import load_settings


def model_dir() -> Path:
    """Where Hydra reads the embedding model (HYDRA_EMBEDDING_MODEL_DIR; `hydra embeddings install` puts it there)."""
    return load_settings().embedding_model_dir


TEXTS = [
    "pytest: 3 passed, 1 failed in tests/test_api.py::test_login",
    "docker build failed at step 4/9: apt-get could not resolve the mirror",
    "x",
    "",
    "Refactored the session manager to use a priority queue; updated docs and changelog.",
    "long output line " * 120,  # > 256 tokens: truncated like Chroma
    "ünïcödé — 日本語のテキスト and emoji 🚀",
]


@pytest.fixture(scope="module")
def embedding() -> MiniLMEmbedding:
    return MiniLMEmbedding(model_dir())


def test_vectors_equal_chromas_default_within_1e_5(embedding: MiniLMEmbedding) -> None:
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    chroma = ONNXMiniLM_L6_V2()
    # Chroma looks for DOWNLOAD_PATH / "onnx" / {model.onnx, tokenizer.json, ...}; point it at our copy
    chroma.DOWNLOAD_PATH = embedding.model_dir.parent  # type: ignore[misc]
    theirs = np.array(chroma(TEXTS))
    ours = np.array(embedding(TEXTS))
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert float(np.abs(ours - theirs).max()) < 1e-5


def test_batching_and_order_do_not_change_vectors(embedding: MiniLMEmbedding) -> None:
    alone = np.stack([embedding.embed([t])[0] for t in TEXTS])
    together = embedding.embed(list(reversed(TEXTS)))[::-1]
    assert float(np.abs(alone - together).max()) < 1e-5
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_excerpts_equal_plain_vectors_for_short_texts(embedding: MiniLMEmbedding) -> None:
    short = [t for t in TEXTS if len(t) < 200]
    assert float(np.abs(embedding.embed_excerpts(short) - embedding.embed(short)).max()) < 1e-5


def test_long_text_excerpt_keeps_the_tail_that_truncation_drops(embedding: MiniLMEmbedding) -> None:
    filler = "collecting build context and compiling module number one two three. " * 80
    text = filler + "FINAL RESULT: segmentation fault in libpng while decoding the header"
    tail_only = embedding.embed(["segmentation fault in libpng while decoding the header"])[0]
    truncated = embedding.embed([text])[0]
    excerpt = embedding.embed_excerpts([text])[0]
    assert len(embedding._full.encode(text).ids) > MAX_TOKENS
    assert float(excerpt @ tail_only) > float(truncated @ tail_only)


def test_missing_model_directory_error_names_directory_and_remedies(tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    with pytest.raises(EmbeddingModelMissingError) as info:
        MiniLMEmbedding(missing)(["hello"])
    message = str(info.value)
    assert str(missing) in message
    assert "HYDRA_EMBEDDING_MODEL_DIR" in message and "all-MiniLM-L6-v2" in message


def test_incomplete_model_directory_names_the_missing_file(tmp_path: Path) -> None:
    partial = tmp_path / "onnx"
    partial.mkdir()
    shutil.copy2(model_dir() / "tokenizer.json", partial / "tokenizer.json")
    with pytest.raises(EmbeddingModelMissingError, match=r"lacks model\.onnx"):
        MiniLMEmbedding(partial).embed(["hello"])


def test_corrupt_model_file_is_reported_as_unloadable(tmp_path: Path) -> None:
    broken = tmp_path / "onnx"
    broken.mkdir()
    shutil.copy2(model_dir() / "tokenizer.json", broken / "tokenizer.json")
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(EmbeddingModelMissingError, match="could not be loaded"):
        MiniLMEmbedding(broken).embed(["hello"])


def test_model_loads_lazily(tmp_path: Path) -> None:
    lazy = MiniLMEmbedding(tmp_path / "absent")  # constructing must not touch the directory
    assert lazy.get_config()["model_dir"] == str(tmp_path / "absent")
