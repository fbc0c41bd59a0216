"""Embedding throughput: Hydra's MiniLMEmbedding vs Chroma's default ONNXMiniLM_L6_V2 on short events.

Both run the same ONNX model from the same directory; Chroma pads every input to 256 tokens, Hydra pads
each length-sorted batch to its longest input. Prints a markdown table (ratios against Chroma's default)
and the largest absolute difference between the two sets of vectors.

    python benchmarks/bench_embeddings.py [--quick] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra_sandbox.embeddings import MiniLMEmbedding
from hydra_sandbox.settings import load_settings

WORDS = [
    "ran",
    "pytest",
    "failed",
    "passed",
    "build",
    "docker",
    "image",
    "layer",
    "cache",
    "step",
    "apt",
    "install",
    "error",
    "warning",
    "commit",
    "diff",
    "refactor",
    "module",
    "function",
    "class",
    "test",
    "assertion",
    "timeout",
    "network",
    "proxy",
    "token",
    "masked",
    "session",
    "agent",
]


def events(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = WORDS
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 24))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: HYDRA_EMBEDDING_MODEL_DIR")
    args = parser.parse_args()
    model_dir = args.model_dir or load_settings().embedding_model_dir
    n_chroma, n_ours = (32, 256) if args.quick else (128, 2048)

    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    chroma = ONNXMiniLM_L6_V2()
    chroma.DOWNLOAD_PATH = model_dir.parent  # type: ignore[misc]
    ours = MiniLMEmbedding(model_dir)
    texts = events(n_ours)
    chroma(texts[:2])  # load both models before timing
    ours(texts[:2])

    start = time.perf_counter()
    theirs_vecs = np.array(chroma(texts[:n_chroma]))
    chroma_rate = n_chroma / (time.perf_counter() - start)

    start = time.perf_counter()
    our_vecs = ours.embed(texts)
    our_rate = n_ours / (time.perf_counter() - start)

    start = time.perf_counter()
    for t in texts[:n_chroma]:
        ours.embed([t])
    single_rate = n_chroma / (time.perf_counter() - start)

    diff = float(np.abs(our_vecs[:n_chroma] - theirs_vecs).max())
    print(f"# Embedding throughput ({'quick' if args.quick else 'full'} mode, short events of 4-24 words)\n")
    print("| pipeline | docs | docs/s | vs Chroma default |")
    print("|---|---:|---:|---:|")
    print(f"| Chroma default (pad to 256) | {n_chroma} | {chroma_rate:.1f} | 1.0x |")
    single = f"{single_rate:.1f} | {single_rate / chroma_rate:.1f}x"
    print(f"| Hydra MiniLMEmbedding, one call per event | {n_chroma} | {single} |")
    print(f"| Hydra MiniLMEmbedding, batched | {n_ours} | {our_rate:.1f} | {our_rate / chroma_rate:.1f}x |")
    print(f"\nmax |hydra - chroma| over {n_chroma} vectors: {diff:.2e} (target < 1e-5)")
    if diff >= 1e-5:
        raise SystemExit("vectors differ from Chroma's default")


if __name__ == "__main__":
    main()
