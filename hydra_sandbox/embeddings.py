"""Sentence embeddings with all-MiniLM-L6-v2 (ONNX), loaded from a directory on disk, never downloaded.

The vectors are the ones Chroma's default embedding function computes (same tokenizer settings, mean
pooling, L2 normalisation), but each batch is padded only to its longest input instead of to 256
tokens, and inputs are batched by length: identical results, many times faster on short events.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hydra_sandbox.errors import EmbeddingModelMissingError

REQUIRED_FILES = ("model.onnx", "tokenizer.json")
MAX_TOKENS = 256
EXCERPT_HEAD = 1500
EXCERPT_TAIL = 500


def excerpt(text: str) -> str:
    """A bounded, meaningful part of a long text to embed: its head and its tail."""
    if len(text) <= EXCERPT_HEAD + EXCERPT_TAIL:
        return text
    return text[:EXCERPT_HEAD] + "\n…\n" + text[-EXCERPT_TAIL:]


def check_model_dir(model_dir: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise EmbeddingModelMissingError(
            f"embedding model directory {model_dir} lacks {', '.join(missing)}",
            hint="copy all-MiniLM-L6-v2's onnx/ folder (model.onnx, tokenizer.json, ...) there, or point "
            "HYDRA_EMBEDDING_MODEL_DIR at a directory that has it; scripts/setup installs it from "
            "../shared/models/all-MiniLM-L6-v2/onnx",
        )


class MiniLMEmbedder:
    """Thread-safe; loads the model on first use."""

    dimensions = 384

    def __init__(self, model_dir: Path, *, batch_size: int = 32) -> None:
        self.model_dir = model_dir
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._session is not None:
            return
        check_model_dir(self.model_dir)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(self.model_dir / "model.onnx"), sess_options=options, providers=ort.get_available_providers()
        )
        self._tokenizer = tokenizer

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalised 384-dimensional vector per text, in the given order."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            self._load()
            encoded = self._tokenizer.encode_batch([excerpt(t) for t in texts])
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(encoded[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encoded[i].ids)
                ids[row, :n] = encoded[i].ids
                mask[row, :n] = encoded[i].attention_mask
            hidden = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            weights = np.broadcast_to(np.expand_dims(mask, -1), hidden.shape)
            pooled = np.sum(hidden * weights, 1) / np.clip(weights.sum(1), a_min=1e-9, a_max=None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            norms[norms == 0] = 1e-12
            out[idx] = (pooled / norms).astype(np.float32)
        return out
