"""Fast, offline all-MiniLM-L6-v2 embeddings with the same vectors as Chroma's default.

Chroma's default embedding function (``ONNXMiniLM_L6_V2``) pads every input to 256 tokens. Attention
masks make padding irrelevant to the result, so :class:`MiniLMEmbedding` pads each batch only to its
longest input, after sorting the inputs by length so that batches hold similar lengths: the vectors
are the same (to float rounding, < 1e-5) and short events embed far faster.

Long texts. Chroma truncates at 256 tokens, keeping the head. ``__call__`` does the same, so it is a
drop-in replacement. For documents Hydra uses :meth:`MiniLMEmbedding.embed_excerpts` instead: a text
longer than 256 tokens is embedded as its first :data:`HEAD_TOKENS` and last :data:`TAIL_TOKENS`
tokens, because for commands and test runs the end (the error, the summary line) matters as much as
the start. Only the embedding uses the excerpt; the full (masked) text is still stored as the document.
Very long texts are cut to their first and last :data:`TOKENIZE_CHARS` characters before tokenizing,
which bounds the cost and cannot change the excerpt.

The model loads lazily on first use; a missing or incomplete model directory raises
:class:`~hydra_sandbox.errors.EmbeddingModelMissingError` saying how to provide it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space

from hydra_sandbox.errors import EmbeddingModelMissingError

MAX_TOKENS = 256
HEAD_TOKENS = 160
TAIL_TOKENS = MAX_TOKENS - 2 - HEAD_TOKENS  # 94, plus [CLS] and [SEP]
TOKENIZE_CHARS = 4096
REQUIRED_FILES = ("model.onnx", "tokenizer.json")


def install_hint(model_dir: Path) -> str:
    """What to do when ``model_dir`` holds no usable model: the same three ways everywhere."""
    return (
        "run `hydra embeddings install` (it downloads all-MiniLM-L6-v2 the way Chroma does), or copy a folder "
        f"holding its ONNX export (model.onnx, tokenizer.json) to {model_dir}, or set HYDRA_EMBEDDING_MODEL_DIR "
        "to such a folder"
    )


class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 (ONNX) embeddings: mean pooling + L2 norm, batches padded to their longest."""

    def __init__(self, model_dir: Path, *, batch_size: int = 32, threads: int | None = None) -> None:
        self.model_dir = Path(model_dir).expanduser()
        self.batch_size = batch_size
        self.threads = threads
        self._load_lock = threading.Lock()
        self._session: Any = None
        self._truncating: Any = None
        self._full: Any = None

    # -- chromadb EmbeddingFunction protocol ----------------------------------------------------

    @staticmethod
    def name() -> str:
        return "hydra_minilm_l6_v2"

    def get_config(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        return MiniLMEmbedding(Path(config["model_dir"]), batch_size=int(config.get("batch_size", 32)))

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "l2", "ip"]

    def max_tokens(self) -> int:
        return MAX_TOKENS

    def __call__(self, input: Documents) -> Embeddings:
        """Chroma-identical vectors: texts truncated to their first 256 tokens."""
        return list(self.embed(list(input)))

    # -- Hydra API ------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise EmbeddingModelMissingError now if the model directory is unusable."""
        missing = [name for name in REQUIRED_FILES if not (self.model_dir / name).is_file()]
        if missing:
            state = "does not exist" if not self.model_dir.is_dir() else f"lacks {', '.join(missing)}"
            raise EmbeddingModelMissingError(
                f"semantic search needs the embedding model, and {self.model_dir} {state}",
                hint=install_hint(self.model_dir),
            )

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            self.check()
            import onnxruntime as ort
            from tokenizers import Tokenizer

            try:
                truncating = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                truncating.no_padding()
                truncating.enable_truncation(max_length=MAX_TOKENS)
                full = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                full.no_padding()
                full.no_truncation()
                options = ort.SessionOptions()
                options.log_severity_level = 3
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # idle pool threads sleep instead of spinning: the server shares its cores with agents
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                if self.threads:
                    options.intra_op_num_threads = self.threads
                session = ort.InferenceSession(
                    str(self.model_dir / "model.onnx"),
                    sess_options=options,
                    providers=["CPUExecutionProvider"],
                )
            except Exception as exc:  # a corrupt file surfaces as many library-specific errors
                raise EmbeddingModelMissingError(
                    f"embedding model in {self.model_dir} could not be loaded ({type(exc).__name__}: {exc})",
                    hint=f"delete {self.model_dir}, then " + install_hint(self.model_dir),
                ) from exc
            self._truncating, self._full = truncating, full
            self._session = session

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Chroma-identical embeddings (head truncation at 256 tokens), shape (n, 384)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        self._load()
        ids = [e.ids for e in self._truncating.encode_batch(texts)]
        return self._run(ids)

    def embed_excerpts(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Document embeddings: like :meth:`embed`, but a long text keeps its head and its tail."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        self._load()
        bounded = [
            t if len(t) <= 2 * TOKENIZE_CHARS else t[:TOKENIZE_CHARS] + "\n" + t[-TOKENIZE_CHARS:] for t in texts
        ]
        ids = []
        for encoding in self._full.encode_batch(bounded):
            tokens = encoding.ids
            if len(tokens) > MAX_TOKENS:
                tokens = tokens[: 1 + HEAD_TOKENS] + tokens[-(TAIL_TOKENS + 1) :]
            ids.append(tokens)
        return self._run(ids)

    def _run(self, ids: list[list[int]]) -> npt.NDArray[np.float32]:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), 384), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            hidden = self._session.run(
                None,
                {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)},
            )[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1)
            norms[norms == 0] = 1e-12
            out[chunk] = (pooled / norms[:, None]).astype(np.float32)
        return out
