"""Prefilters: where in a text a rule may match, found in one pass for every rule at once.

:class:`HyperscanPrefilter` compiles every rule (its ``prefilter`` pattern, or its pattern) into one
Vectorscan database in prefilter mode, block mode for whole texts and stream mode for streams, and the
known values into a literal database. A hit is ``(pattern id, end offset)``: some match of the rule may
end there; the masker then extracts the exact match with ``re`` in a bounded window around it.
:class:`KeywordPrefilter` is the fallback where the ``hyperscan`` package cannot load: an Aho-Corasick
pass over the rules' keywords (a hit at each keyword's end) and over the known values, and a hit every
``GRID`` characters for rules without keywords, so they are searched everywhere.

Pattern ids: rule ``i`` is ``i``; known literal ``j`` is ``KNOWN_BASE + j``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Protocol

import ahocorasick

from hydra_sandbox.masking.normalise import Utf8
from hydra_sandbox.masking.rules import MaskingRule

KNOWN_BASE = 1 << 20
GRID = 4096
Hit = tuple[int, int]
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_hs: Any
try:  # an optional accelerator: the masker works without it
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised by the fallback tests through KeywordPrefilter
    _hs = None


def hyperscan_available() -> bool:
    return _hs is not None


class PrefilterStream(Protocol):
    def scan(self, text: str, base: int, utf8: Utf8 | None = None) -> list[Hit]:
        """Hits whose end lies in ``text``, which starts at absolute offset ``base`` (``utf8``: its UTF-8,
        when the caller has it)."""
        ...

    def close(self, end: int) -> list[Hit]:
        """Hits only the end of the stream reveals; releases the stream."""
        ...


class Prefilter(Protocol):
    name: str
    reach: tuple[int, ...]
    """Per rule: how far before a hit a match of the rule may start."""
    ahead: tuple[int, ...]
    """Per rule: how far after a hit a match of the rule may end."""

    def scan(self, text: str, utf8: Utf8 | None = None) -> list[Hit]: ...

    def stream(self) -> PrefilterStream: ...


_CONTINUATION = bytes(range(0x80, 0xC0))


def _char_offsets(text: str, data: bytes, hits: list[Hit], base: int, landmarks: Utf8 | None = None) -> list[Hit]:
    """Byte offsets (relative to ``data``, the UTF-8 of ``text``) turned into absolute character offsets:
    a character is one byte that is not a UTF-8 continuation byte. With ``landmarks`` (from normalising),
    each offset is counted from the start of its piece; without, from the nearer end of ``data`` (hits in
    the second half backwards from its end), so the bytes counted over are at most half of ``data`` once
    per side. Hits come back in ascending order of their ends."""
    if len(data) == len(text):
        return [(i, base + end) for i, end in hits]
    out: list[Hit] = []
    ordered = sorted(hits, key=lambda h: h[1])
    half = len(data) // 2
    byte_cursor = char_cursor = 0
    later: list[Hit] = []
    for i, end in ordered:
        while 0 < end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # inside a multi-byte character: count it from its first byte
        if landmarks is not None:
            k = bisect.bisect_right(landmarks.byte_at, end) - 1
            piece = landmarks.byte_at[k]
            out.append((i, base + landmarks.char_at[k] + len(data[piece:end].translate(None, _CONTINUATION))))
            continue
        if end > half:
            later.append((i, end))
            continue
        if end > byte_cursor:
            char_cursor += len(data[byte_cursor:end].translate(None, _CONTINUATION))
            byte_cursor = end
        out.append((i, base + char_cursor))
    backwards: list[Hit] = []
    byte_cursor, char_cursor = len(data), len(text)
    for i, end in reversed(later):
        if end < byte_cursor:
            char_cursor -= len(data[end:byte_cursor].translate(None, _CONTINUATION))
            byte_cursor = end
        backwards.append((i, base + char_cursor))
    return out + backwards[::-1]


def _reach(rules: Sequence[MaskingRule]) -> tuple[int, ...]:
    return tuple(min(r.before_hit or r.max_length, r.max_length) for r in rules)


def _ahead(rules: Sequence[MaskingRule]) -> tuple[int, ...]:
    return tuple(min(r.max_length if r.after_hit is None else r.after_hit, r.max_length) for r in rules)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@lru_cache(maxsize=16)
def _rule_database(patterns: tuple[str, ...], stream: bool) -> Any:
    """A block- or stream-mode database for ``patterns``, compiled once per process (a second or two)."""
    assert _hs is not None
    db = _hs.Database(mode=_hs.HS_MODE_STREAM if stream else _hs.HS_MODE_BLOCK)
    db.compile(
        expressions=[_encode(p) for p in patterns],
        ids=list(range(len(patterns))),
        flags=_hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_DOTALL,
    )
    return db


class _Collector:
    """A match callback the C extension holds: kept referenced by its owner for as long as it is used."""

    def __init__(self, offset: int = 0) -> None:
        self.hits: list[Hit] = []
        self.offset = offset

    def __call__(self, pattern_id: int, _start: int, end: int, _flags: int, _context: object) -> None:
        self.hits.append((pattern_id + self.offset, end))


class _HyperscanStream:
    def __init__(self, owner: HyperscanPrefilter) -> None:
        self._owner = owner
        self._parts: list[tuple[Any, Any, _Collector]] = []
        self._bytes = 0  # bytes scanned so far: the stream reports offsets from its start
        for db, offset in owner.stream_databases():
            collector = _Collector(offset)
            manager = db.stream(match_event_handler=collector)
            self._parts.append((manager, manager.__enter__(), collector))

    def scan(self, text: str, base: int, utf8: Utf8 | None = None) -> list[Hit]:
        data = _encode(text) if utf8 is None else utf8.data
        hits: list[Hit] = []
        for _manager, stream, collector in self._parts:
            collector.hits = []
            stream.scan(data, scratch=self._owner.scratch(stream.database))
            hits += [(i, max(0, end - self._bytes)) for i, end in collector.hits]
        self._bytes += len(data)
        return _char_offsets(text, data, hits, base, utf8)

    def close(self, end: int) -> list[Hit]:
        # a sentinel newline makes end-of-line assertions report now; their ends are clamped to the text
        hits = [(i, min(e, end)) for i, e in self.scan("\n", end)]
        with self._owner.close_lock:  # closing uses the database's own scratch
            for manager, _stream, _collector in self._parts:
                manager.__exit__(None, None, None)
        self._parts = []
        return hits


class HyperscanPrefilter:
    name = "hyperscan"

    def __init__(self, rules: Sequence[MaskingRule], known: Sequence[str]) -> None:
        assert _hs is not None
        self._patterns = tuple(r.prefilter or r.pattern for r in rules)
        self.reach = _reach(rules)
        self.ahead = _ahead(rules)
        self._known_block = self._known_stream = None
        if known:
            self._known_block = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            self._known_stream = _hs.Database(mode=_hs.HS_MODE_STREAM)
            for db in (self._known_block, self._known_stream):
                db.compile(expressions=[_encode(k) for k in known], ids=list(range(len(known))), literal=True)
        self._local = threading.local()
        self.close_lock = threading.Lock()

    def scratch(self, db: Any) -> Any:
        """This thread's scratch space for ``db`` (scratch may not be shared between threads)."""
        spaces = self._local.__dict__.setdefault("spaces", {})
        if id(db) not in spaces:
            spaces[id(db)] = db.scratch.clone()
        return spaces[id(db)]

    def stream_databases(self) -> list[tuple[Any, int]]:
        out: list[tuple[Any, int]] = [(_rule_database(self._patterns, True), 0)] if self._patterns else []
        if self._known_stream is not None:
            out.append((self._known_stream, KNOWN_BASE))
        return out

    def _block_plan(self) -> list[tuple[Any, Any, _Collector]]:
        """This thread's (database, scratch, callback) for block scans, made once: ``mask`` is called for
        every small string an agent emits, so per-call setup counts."""
        plan = getattr(self._local, "plan", None)
        if plan is None:
            plan = []
            rules = _rule_database(self._patterns, False) if self._patterns else None  # Vectorscan: no empty DB
            for db, offset in ((rules, 0), (self._known_block, KNOWN_BASE)):
                if db is not None:
                    plan.append((db, self.scratch(db), _Collector(offset)))
            self._local.plan = plan
        return plan

    def scan(self, text: str, utf8: Utf8 | None = None) -> list[Hit]:
        data = _encode(text) if utf8 is None else utf8.data
        hits: list[Hit] = []
        for db, scratch, collector in self._block_plan():
            collector.hits = []
            db.scan(data, match_event_handler=collector, scratch=scratch)
            if collector.hits:
                hits += collector.hits
        return _char_offsets(text, data, hits, 0, utf8) if hits else hits

    def stream(self) -> PrefilterStream:
        return _HyperscanStream(self)


class _KeywordStream:
    """Scans each chunk with the end of the previous one in front, so a keyword or known value split
    between chunks is found; hits are reported once, in the chunk where they end."""

    def __init__(self, owner: KeywordPrefilter) -> None:
        self._owner = owner
        self._tail = ""

    def scan(self, text: str, base: int, utf8: Utf8 | None = None) -> list[Hit]:
        joined = self._tail + text
        start = base - len(self._tail)
        hits = [h for h in self._owner.literal_hits(joined, start) if h[1] > base]
        self._tail = joined[-self._owner.overlap :] if self._owner.overlap else ""
        return hits + self._owner.grid_hits(base, base + len(text))

    def close(self, end: int) -> list[Hit]:
        return [(i, end) for i in self._owner.everywhere]


class KeywordPrefilter:
    name = "aho-corasick fallback"

    def __init__(self, rules: Sequence[MaskingRule], known: Sequence[str]) -> None:
        self._keywords = _automaton(((w, i) for i, r in enumerate(rules) for w in r.keywords), lower=True)
        self._known = _automaton(((k, KNOWN_BASE + j) for j, k in enumerate(known)), lower=False)
        self.everywhere = [i for i, r in enumerate(rules) if not r.keywords]
        # rules without keywords: a hit every GRID characters, each searched back to the previous one
        self._grid = {i: max(GRID, rules[i].max_length) for i in self.everywhere}
        self.reach = tuple(self._grid.get(i, reach) for i, reach in enumerate(_reach(rules)))
        self.ahead = _ahead(rules)
        longest = max([len(w) for r in rules for w in r.keywords] + [len(k) for k in known] + [1])
        self.overlap = longest - 1

    def literal_hits(self, text: str, base: int) -> list[Hit]:
        out: list[Hit] = []
        if self._keywords is not None:
            haystack = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
            out += [(i, base + end + 1) for end, ids in self._keywords.iter(haystack) for i in ids]
        if self._known is not None:
            out += [(i, base + end + 1) for end, ids in self._known.iter(text) for i in ids]
        return out

    def grid_hits(self, start: int, stop: int) -> list[Hit]:
        """Rules without keywords: a hit every ``GRID`` characters in (start, stop]."""
        out: list[Hit] = []
        for i, step in self._grid.items():
            out += [(i, at) for at in range((start // step + 1) * step, stop + 1, step)]
        return out

    def scan(self, text: str, utf8: Utf8 | None = None) -> list[Hit]:
        return self.literal_hits(text, 0) + self.grid_hits(0, len(text)) + [(i, len(text)) for i in self.everywhere]

    def stream(self) -> PrefilterStream:
        return _KeywordStream(self)


def _automaton(entries: Any, *, lower: bool) -> Any:
    words: dict[str, list[int]] = {}
    for word, ident in entries:
        words.setdefault(word.lower() if lower else word, []).append(ident)
    if not words:
        return None
    automaton = ahocorasick.Automaton()
    for word, ids in words.items():
        automaton.add_word(word, tuple(ids))
    automaton.make_automaton()
    return automaton


def make_prefilter(rules: Sequence[MaskingRule], known: Sequence[str], *, engine: str = "auto") -> Prefilter:
    """``engine``: ``auto`` (hyperscan when it loads), ``hyperscan`` or ``fallback``."""
    factory: Callable[[Sequence[MaskingRule], Sequence[str]], Prefilter]
    if engine == "fallback" or (engine == "auto" and _hs is None):
        factory = KeywordPrefilter
    else:
        if _hs is None:
            raise RuntimeError("the hyperscan package is not installed")
        factory = HyperscanPrefilter
    return factory(rules, known)
