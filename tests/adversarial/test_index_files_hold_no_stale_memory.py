"""Embedded Chroma saves its HNSW buffers whole, slots it never filled included, and takes them from
``malloc`` without clearing them. In Hydra's process the heap holds what agents printed before masking,
so a CI run found a configured secret and its base64 form in ``data_level0.bin``. ``heap_scrub`` turns
on glibc's scrubbing before the embedded index opens.

Each case runs in its own interpreter, with the heap set up the way a long-running server's ends up
(one arena, large blocks from the heap, freed memory kept): an agent's raw output is freed, then the
embedded store opens and indexes masked documents. The control case skips the scrubbing and must find
the secret in the index files, which shows the heap layout does reproduce the leak.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.adversarial,
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap scrubbing is glibc's M_PERTURB"),
]

SECRET = "hydra-known/secret+value=7f3a9c21Qz"

SCRIPT = r"""
import ctypes, sys
from pathlib import Path

libc = ctypes.CDLL(None)
libc.mallopt(-8, 1)  # M_ARENA_MAX: Chroma's threads allocate from the heap the output was freed to
libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: large blocks come from the heap, as once glibc raised it
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: freed memory stays in the heap
directory, secret, mode = Path(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]


def agent_output_freed() -> None:
    raw_output = [secret * n for n in (6000, 12000, 30000) for _ in range(4)]
    del raw_output  # what an agent printed, freed after masking


agent_output_freed()
import numpy

from hydra_sandbox import chroma_store
from hydra_sandbox.embeddings import MiniLMEmbedding

agent_output_freed()
if mode == "unscrubbed":
    chroma_store.scrub_heap = lambda: False
store = chroma_store.ChromaStore.embedded(directory, MiniLMEmbedding(directory / "no-model"))
events, _ = store._collections()
events.add(
    ids=[f"e{n}" for n in range(30)],
    embeddings=numpy.random.default_rng(0).random((30, 384)).tolist(),
    documents=["[MASKED:known-secret]"] * 30,
)
store.close()
"""


def secret_bytes_in_index(tmp_path: Path, mode: str) -> int:
    directory = tmp_path / mode
    subprocess.run([sys.executable, "-c", SCRIPT, str(directory), SECRET, mode], check=True, timeout=120)
    files = [path for path in directory.rglob("*") if path.is_file()]
    assert any(path.name == "data_level0.bin" for path in files), [p.name for p in files]
    return sum(path.read_bytes().count(SECRET.encode()) for path in files)


def test_the_embedded_index_files_hold_no_freed_agent_output(tmp_path: Path) -> None:
    assert secret_bytes_in_index(tmp_path, "scrubbed") == 0


def test_without_heap_scrubbing_the_same_heap_leaks_into_the_index_files(tmp_path: Path) -> None:
    assert secret_bytes_in_index(tmp_path, "unscrubbed") > 0
