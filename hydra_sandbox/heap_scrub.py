"""Scrub the C heap, so memory a library writes to disk uninitialised never holds an earlier secret.

Embedded Chroma builds its HNSW index in buffers it takes from ``malloc`` and does not clear, and saves
them whole: the slots past the last vector go to ``data_level0.bin`` as they were. In Hydra's process
those bytes can be what an agent printed before masking (the raw log chunks are freed back to the same
heap), so a secret found its way into the index files on disk although every document Chroma was given
was masked. glibc's ``M_PERTURB`` closes this: with it every block ``malloc`` hands out (above the
per-thread cache's 1 KiB) is zeroed, and every freed block is overwritten. It costs a ``memset`` per
large allocation, about a tenth of the masking stream's throughput.

:func:`scrub_heap` is called before the embedded Chroma opens and when the server starts. A Chroma
server runs in its own process and only ever receives masked text, so it needs none of this.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_PERTURB = -6  # glibc's mallopt parameter
FREED_BYTE = 0xFF  # freed blocks are filled with this; new blocks with its complement, zero

_state: dict[str, bool] = {}


def scrub_heap() -> bool:
    """Turn on glibc's heap scrubbing for this process; True when it is on. Idempotent. Without glibc
    (musl, macOS) it logs once that the embedded index may hold stale memory, and answers False."""
    if "on" in _state:
        return _state["on"]
    on = False
    if platform.libc_ver()[0] == "glibc":
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
        on = mallopt is not None and mallopt(M_PERTURB, FREED_BYTE) == 1
    if not on:
        log.warning(
            "this C library cannot scrub freed memory, so embedded Chroma's index files may hold stale "
            "process memory, unmasked agent output included; on this platform run a Chroma server "
            "(HYDRA_CHROMA_URL)"
        )
    _state["on"] = on
    return on
