"""Masker throughput on a mixed log, against a plain pass over the same text, plus recall and
false-positive rate on the corpus. Usage: python benchmarks/bench_masking.py [--quick]"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hydra_sandbox.masking import SecretMasker

CORPUS = yaml.safe_load((Path(__file__).resolve().parent.parent / "tests/data/masking_corpus.yaml").read_text())


def mixed_log(size: int, secret_rate: float = 0.001) -> str:
    rng = random.Random(1)
    lines = [
        "2026-11-25T10:00:00Z INFO request handled path=/api/v1/items status=200 duration=12ms user=alice",
        "    return self._session.get(url, timeout=timeout)  # token refresh happens upstream",
        "PASSED tests/test_api.py::test_list_items[params3] in 0.02s",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b Merge pull request #42",
        '{"type":"item.completed","item":{"type":"command_execution","command":"pytest -q","exit_code":0}}',
    ]
    secrets = [t for texts in CORPUS["true_positives"].values() for t in texts]
    out, n = [], 0
    while n < size:
        line = rng.choice(secrets) if rng.random() < secret_rate else rng.choice(lines)
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)[:size]


def main() -> None:
    quick = "--quick" in sys.argv
    size = 5_000_000 if quick else 100_000_000
    text = mixed_log(size)
    masker = SecretMasker(["hydra-benchmark-known-secret-1234"])
    start = time.perf_counter()
    text.encode().decode().replace("hydra-benchmark-known-secret-1234", "[MASKED]")
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    masker.mask(text)
    whole = time.perf_counter() - start
    stream = masker.stream()
    data = text.encode()
    start = time.perf_counter()
    for i in range(0, len(data), 65536):
        stream.feed_bytes(data[i : i + 65536])
    stream.flush()
    streamed = time.perf_counter() - start
    mb = len(data) / 1e6
    print("| measurement | MB/s | ratio to baseline |\n|---|---|---|")
    print(f"| baseline: decode + replace of one known value | {mb / baseline:.0f} | 1.0 |")
    print(f"| mask() whole text | {mb / whole:.1f} | {baseline / whole:.3f} |")
    print(f"| stream, 64 KiB chunks | {mb / streamed:.1f} | {baseline / streamed:.3f} |")
    fresh = SecretMasker()
    print("\n| rule | recall | true positives |\n|---|---|---|")
    for rule, texts in CORPUS["true_positives"].items():
        caught = sum(f"[MASKED:{rule}]" in fresh.mask(t) for t in texts)
        print(f"| {rule} | {caught / len(texts):.0%} | {len(texts)} |")
    false = sum(fresh.mask(t) != t for t in CORPUS["false_positives"])
    print(f"\nfalse positives: {false} of {len(CORPUS['false_positives'])} ordinary lines")
    ordinary = mixed_log(2_000_000, secret_rate=0.0).splitlines()
    changed = sum(1 for line in ordinary if fresh.mask(line) != line)
    print(f"secret-free log lines changed: {changed} of {len(ordinary)}")


if __name__ == "__main__":
    main()
