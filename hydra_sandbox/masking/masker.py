"""The masker's public surface: :class:`SecretMasker` (``mask``, ``add_secret``, ``stream``, per-rule
``hits``), :class:`MaskingStream` (chunks in, masked text out, equal to masking the whole text) and
:class:`LineMasker` (line by line, holding only the lines a private key may span)."""

from __future__ import annotations

import codecs
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.masking.encodings import MIN_SECRET_LENGTH, known_forms
from hydra_sandbox.masking.engine import make_prefilter
from hydra_sandbox.masking.normalise import INVISIBLE_BYTES
from hydra_sandbox.masking.rules import MaskingRule, default_rules
from hydra_sandbox.masking.scanner import CONTEXT, Compiled, Scanner, find_spans, mask_text

MAX_KEY_BLOCK = 8192
"""Lines a :class:`LineMasker` holds for one private key block, in characters, before masking them anyway."""


class SecretMasker:
    """Masks known secret values (under their encodings) and the rules' patterns. Thread-safe.

    ``engine``: ``auto`` (Vectorscan when the ``hyperscan`` package loads, else the Aho-Corasick
    fallback), ``hyperscan`` or ``fallback``.
    """

    def __init__(
        self,
        known_secrets: Iterable[str] = (),
        *,
        rules: Sequence[MaskingRule] | None = None,
        engine: str = "auto",
    ) -> None:
        self._rules = tuple(default_rules() if rules is None else rules)
        self._engine = engine
        self._known: dict[str, str] = {}  # every form of every value -> the name it is masked as
        self._values: set[str] = set()  # the values themselves (a value may be another's form)
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        for value in known_secrets:
            self._add(value, "known-secret")
        self._compiled = self._compile()

    # -- configuration -------------------------------------------------------------------------

    def add_secret(self, value: str, name: str = "known-secret") -> None:
        """Mask ``value`` (and its encoded forms) wherever it appears from now on (streams already open
        keep what they started with)."""
        with self._lock:
            if value in self._values:
                return
            self._add(value, name)
            self._compiled = self._compile()

    def _add(self, value: str, name: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"secret value of {len(value)} characters is too short to mask safely",
                hint=f"secrets must have at least {MIN_SECRET_LENGTH} characters; check HYDRA_SECRETS",
            )
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise ConfigError(f"secret name {name!r}: use lowercase letters, digits and '-'")
        stripped = value.rstrip("\r\n")  # a value read from a file is printed without its newline
        for form in known_forms(value) | (known_forms(stripped) if len(stripped) >= MIN_SECRET_LENGTH else set()):
            self._known.setdefault(form, name)
        self._values.add(value)

    def _compile(self) -> Compiled:
        known = tuple(self._known)
        prefilter = make_prefilter(self._rules, known, engine=self._engine)
        return Compiled(self._rules, known, tuple(self._known[k] for k in known), prefilter)

    # -- reporting -----------------------------------------------------------------------------

    @property
    def engine(self) -> str:
        """The prefilter in use: ``hyperscan`` or ``aho-corasick fallback``."""
        return self._compiled.prefilter.name

    @property
    def holdback(self) -> int:
        """Characters a stream may hold back: the longest match any rule or known value can make, and the
        context read around it."""
        longest = max([r.max_length for r in self._rules] + [self._compiled.longest_known, 1])
        return 2 * longest + 2 * CONTEXT

    @property
    def known_forms(self) -> int:
        """How many strings are masked by value: every encoded form of every added secret."""
        with self._lock:
            return len(self._known)

    @property
    def hits(self) -> dict[str, int]:
        with self._lock:
            return dict(self._hits)

    @property
    def rule_names(self) -> list[str]:
        return [r.id for r in self._rules]

    @property
    def rules(self) -> tuple[MaskingRule, ...]:
        return self._rules

    def _count(self, counted: Counter[str]) -> None:
        if counted:
            with self._lock:
                self._hits.update(counted)

    # -- masking -------------------------------------------------------------------------------

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``[MASKED:<rule>]``."""
        if not text:
            return text
        out, counted = mask_text(self._compiled, text)
        if counted:
            self._count(counted)
        return out

    def stream(self) -> MaskingStream:
        return MaskingStream(self)

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """What :meth:`mask` would replace in ``text``: (start, end, rule) per mask, not counted as hits."""
        return find_spans(self._compiled, text) if text else []


class MaskingStream:
    """Masks a stream chunk by chunk; ``"".join(feeds) + flush()`` equals masking the whole text."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        compiled = masker._compiled
        self._scanner = Scanner(compiled, compiled.prefilter.stream())
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed_bytes(self, chunk: bytes) -> str:
        # the bytes say at memory speed whether the text can hold an invisible character (with the bytes
        # of a character the decoder holds from the previous chunk); if they can, the scanner looks
        held = self._decoder.getstate()[0]
        invisible = None if any(byte in chunk or byte in held for byte in INVISIBLE_BYTES) else False
        text = self._decoder.decode(chunk)
        return self._collect(self._scanner.feed(text, invisible)) if text else ""

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        return self._collect(self._scanner.feed(chunk))

    def flush(self) -> str:
        tail = self._decoder.decode(b"", final=True)
        out = self._scanner.feed(tail) if tail else ""
        return self._collect(out + self._scanner.flush())

    def _collect(self, out: str) -> str:
        counted = self._scanner.counted
        if counted:  # most chunks mask nothing: no new Counter for them
            self._masker._count(counted)
            self._scanner.counted = Counter()
        return out


class LineMasker:
    """Masks text line by line, so each line can be emitted as soon as it is complete.

    A private key is the one secret that spans lines. From a line that opens a key block, lines are held
    until the block closes; a run of lines that look like key material (base64 only) is held until a
    line that does not, so ``tail`` of a key file is masked with its END line. Held lines are masked
    together once :data:`MAX_KEY_BLOCK` characters are held, or at :meth:`flush`.
    """

    _OPEN = re.compile(r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY")
    _CLOSE = re.compile(r"-----END[A-Z0-9 ]{0,40} PRIVATE KEY")
    # possessive: a long base64 line fails at once instead of backtracking through every length
    _BODY = re.compile(r"[ \t\"']*+[A-Za-z0-9+/=]{16,100}+(?:\\n)?[\"',+ \t]*+\r?")
    _MAYBE_KEY = re.compile(r"-----BEGIN|[A-Za-z0-9+/=]{16}")
    """What any line that :attr:`_OPEN` or :attr:`_BODY` matches contains."""
    _MORE_BODY = re.compile(r"[ \t\"']*+[A-Za-z0-9+/=]{1,100}+(?:\\n)?[\"',+ \t]*+\r?")

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._held: list[str] = []
        self._held_size = 0
        self._in_block = False

    @property
    def holding(self) -> bool:
        """Whether lines of a possible private key are held."""
        return bool(self._held)

    def feed_line(self, line: str) -> list[str]:
        """Masked lines ready to emit (none while a key block is open)."""
        if self._in_block:
            self._hold(line)
            if self._CLOSE.search(line) or self._held_size > MAX_KEY_BLOCK:
                return self._release()
            return []
        if self._OPEN.search(line) and not self._CLOSE.search(line):
            released = self._release() if self._held else []
            self._in_block = True
            self._hold(line)
            return released
        if (self._MORE_BODY if self._held else self._BODY).fullmatch(line):
            self._hold(line)
            return self._release() if self._held_size > MAX_KEY_BLOCK else []
        if self._held:  # a run of key-like lines ends here: mask it with this line (maybe its END)
            self._hold(line)
            return self._release()
        return [self._masker.mask(line)]

    def feed_lines(self, lines: Sequence[str]) -> list[str]:
        """Masked lines ready to emit, for a run of complete lines: lines that cannot start or continue a
        key block are masked together in one call (one prefilter pass for the run instead of one per
        line); the others go through :meth:`feed_line` in order. When nothing is held and no line can
        open a key block (that needs -----BEGIN) or be key material (the body pattern matches it whole),
        _feed_each would mask them all as one run, so the run is masked at once: a flood of short lines
        is ruled out by one search for what any such line contains, other runs line by line in C."""
        if not self._held and lines:
            joined = "\n".join(lines)
            if not self._MAYBE_KEY.search(joined) or (
                "-----BEGIN" not in joined and not any(map(self._BODY.fullmatch, lines))
            ):
                return [self._masker.mask(joined)] if len(lines) == 1 else self._masker.mask(joined).split("\n")
        return self._feed_each(lines)

    def _feed_each(self, lines: Sequence[str]) -> list[str]:
        """:meth:`feed_lines` deciding line by line."""
        out: list[str] = []
        run: list[str] = []
        for line in lines:
            if not self._held and not self._OPEN.search(line) and not self._BODY.fullmatch(line):
                run.append(line)
                continue
            if run:
                out += self._mask_run(run)
                run = []
            out += self.feed_line(line)
        if run:
            out += self._mask_run(run)
        return out

    def _mask_run(self, run: list[str]) -> list[str]:
        if len(run) == 1:
            return [self._masker.mask(run[0])]
        return self._masker.mask("\n".join(run)).split("\n")

    def _hold(self, line: str) -> None:
        self._held.append(line)
        self._held_size += len(line) + 1

    def _release(self) -> list[str]:
        block = self._masker.mask("\n".join(self._held))
        self._held, self._held_size, self._in_block = [], 0, False
        return block.split("\n")

    def flush(self) -> list[str]:
        return self._release() if self._held else []
