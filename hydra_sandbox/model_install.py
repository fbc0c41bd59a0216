"""Installing the offline embedding model (all-MiniLM-L6-v2 exported to ONNX) where Hydra reads it.

Hydra never downloads the model at run time. This module runs once, from ``hydra embeddings install``
(``scripts/setup`` calls it): it copies the model from a folder the operator names, or downloads it
with Chroma's own code (``ONNXMiniLM_L6_V2``: its archive, checked against its SHA-256, unpacked into
its ``DOWNLOAD_PATH``), then copies it to ``HYDRA_EMBEDDING_MODEL_DIR`` when that is somewhere else.
Chroma's default location and Hydra's default ``embedding_model_dir`` are the same folder, so the
default case copies nothing. Where the network does not allow the download, the error says exactly
what to copy where.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from hydra_sandbox.embeddings import REQUIRED_FILES, MiniLMEmbedding, install_hint
from hydra_sandbox.errors import EmbeddingModelMissingError


class InstalledModel(BaseModel):
    directory: Path
    how: Literal["present", "copied", "downloaded"]
    source: str


def has_model(directory: Path) -> bool:
    return all((directory / name).is_file() for name in REQUIRED_FILES)


def _copy_model(source: Path, dest: Path) -> None:
    """Every file of ``source`` into ``dest``; each lands under its name only when complete, and the
    files Hydra checks for land last, so an interrupted copy never looks installed."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in source.iterdir() if p.is_file()), key=lambda p: (p.name in REQUIRED_FILES, p.name))
    for path in files:
        partial = dest / f".{path.name}.partial"
        shutil.copyfile(path, partial)
        os.replace(partial, dest / path.name)


def chroma_fetcher() -> Any:
    """Chroma's default embedding function, whose download Hydra reuses (its URL, checksum and layout)."""
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    return ONNXMiniLM_L6_V2()


def _download(dest: Path, fetcher: Any) -> Path:
    folder = Path(fetcher.DOWNLOAD_PATH) / fetcher.EXTRACTED_FOLDER_NAME
    try:
        fetcher._download_model_if_not_exists()  # Chroma's own step: download, SHA-256 check, unpack
    except Exception as exc:  # httpx, tarfile and OS errors alike: the remedy is the same
        raise EmbeddingModelMissingError(
            f"could not download the embedding model the way Chroma does ({type(exc).__name__}: {exc})",
            hint=f"copy a folder holding all-MiniLM-L6-v2 as ONNX (model.onnx and tokenizer.json, the `onnx` "
            f"folder of Chroma's model archive) to {dest}; or name that folder with "
            "`hydra embeddings install --source FOLDER` (scripts/setup: HYDRA_EMBEDDING_MODEL_SOURCE=FOLDER); "
            "or set HYDRA_EMBEDDING_MODEL_DIR=FOLDER",
        ) from None
    return folder


def install_model(dest: Path, *, source: Path | None = None, fetcher: Any = None) -> InstalledModel:
    """Make ``dest`` hold the model: already there, copied from ``source``, or downloaded with
    ``fetcher`` (default: :func:`chroma_fetcher`). Raises EmbeddingModelMissingError saying what to do."""
    dest = dest.expanduser()
    if has_model(dest):
        return InstalledModel(directory=dest, how="present", source=str(dest))
    how: Literal["copied", "downloaded"] = "copied"
    if source is None:
        fetcher = fetcher if fetcher is not None else chroma_fetcher()
        source = Path(fetcher.DOWNLOAD_PATH) / fetcher.EXTRACTED_FOLDER_NAME
        if not has_model(source):  # not in Chroma's cache either
            source, how = _download(dest, fetcher), "downloaded"
    source = source.expanduser()
    if not has_model(source):
        missing = ", ".join(name for name in REQUIRED_FILES if not (source / name).is_file())
        raise EmbeddingModelMissingError(f"model folder {source} lacks {missing}", hint=install_hint(dest))
    if source.resolve() != dest.resolve():
        _copy_model(source, dest)
    MiniLMEmbedding(dest).check()
    return InstalledModel(directory=dest, how=how, source=str(source))
