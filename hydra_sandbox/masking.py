"""Streaming secret masking: every byte of agent output passes through here before it is stored,
logged or returned.

Two kinds of rules: exact values Hydra knows (the model API key, the operator's secret list, and
their base64 and URL-encoded forms) and patterns (provider keys, tokens, JWTs, private key blocks,
passwords in URLs, high-entropy values assigned to secret-looking names). All of them are one
compiled alternation, so masking a text in one piece and streaming it in chunks of any size give
the same result: a stream holds back a tail as long as the longest possible match
(:attr:`SecretMasker.holdback`) and never emits text that a later chunk could turn into a secret.
Matches are replaced by ``[MASKED:<rule>]``.
"""

from __future__ import annotations

import base64
import codecs
import math
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import ahocorasick

from hydra_sandbox.errors import ConfigError

MIN_SECRET_LENGTH = 8
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MAX_KEY_BLOCK = 8192
"""Private key blocks longer than this are not recognised as one block (none real is near it)."""


@dataclass(frozen=True)
class MaskingRule:
    """A pattern rule. ``pattern`` may define a group ``v``: then only that group is masked."""

    name: str
    pattern: str
    max_length: int
    anchors: tuple[str, ...] = ()
    """Literals every match starts with; lowercase ones are matched case-insensitively (ASCII)."""
    min_entropy: float = 0.0
    case_insensitive_anchors: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9-]+", self.name):
            raise ValueError(f"rule name {self.name!r}: use lowercase letters, digits and '-'")
        if self.case_insensitive_anchors and not self.pattern.startswith("(?i:"):
            raise ValueError(f"rule {self.name!r}: case-insensitive anchors need a pattern starting '(?i:'")


_TOKEN = r"[A-Za-z0-9_-]"
# Token rules start where no letter or digit precedes (not ``\b``): a key glued to a name by ``_``
# (``backup_AKIA...``, ``leak_ghp_...`` in a file name) is still a key.
DEFAULT_RULES: tuple[MaskingRule, ...] = (
    MaskingRule(
        "private-key",
        r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY( BLOCK)?-----[\s\S]{0,"
        + str(MAX_KEY_BLOCK)
        + r"}?-----END[A-Z0-9 ]{0,40} PRIVATE KEY( BLOCK)?-----",
        MAX_KEY_BLOCK + 200,
        ("-----BEGIN",),
    ),
    MaskingRule("anthropic-key", rf"(?<![A-Za-z0-9])sk-ant-(?:api|admin)\d{{2}}-{_TOKEN}{{20,200}}", 220, ("sk-",)),
    MaskingRule("openai-key", rf"(?<![A-Za-z0-9])sk-(?:proj-|svcacct-|admin-|None-)?{_TOKEN}{{20,200}}", 220, ("sk-",)),
    MaskingRule(
        "aws-access-key",
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?![A-Za-z0-9])",
        20,
        ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA"),
    ),
    MaskingRule(
        "github-token",
        r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,243})(?![A-Za-z0-9])",
        255,
        ("gh", "github_pat_"),
    ),
    MaskingRule("gitlab-token", rf"(?<![A-Za-z0-9])gl(?:pat|dt|ptt|rt|cbt)-{_TOKEN}{{20,80}}", 90, ("gl",)),
    MaskingRule("slack-token", r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,200}", 210, ("xox",)),
    MaskingRule(
        "slack-webhook",
        r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,200}",
        240,
        ("https://hooks.",),
    ),
    MaskingRule(
        "stripe-key", r"(?<![A-Za-z0-9])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,200}", 210, ("sk_", "rk_", "pk_")
    ),
    MaskingRule("google-api-key", rf"(?<![A-Za-z0-9])AIza{_TOKEN}{{35}}", 39, ("AIza",)),
    MaskingRule(
        "jwt", rf"(?<![A-Za-z0-9])eyJ{_TOKEN}{{8,2000}}\.eyJ{_TOKEN}{{8,4000}}\.{_TOKEN}{{8,2000}}", 8020, ("eyJ",)
    ),
    MaskingRule("url-password", r"://[^\s:/@'\"]{1,64}:(?P<v>[^\s@/'\"]{1,128})@", 200, ("://",)),
    MaskingRule(
        "secret-assignment",
        r"(?i:key|token|secret|passwd|password|pwd|credential)[A-Za-z0-9_]{0,40}[\"']?\s{0,4}[:=]\s{0,4}[\"']?"
        r"(?P<v>[A-Za-z0-9+/=_\-.~!@#$%^&*]{8,200})",
        300,
        ("key", "token", "secret", "passwd", "password", "pwd", "credential"),
        min_entropy=3.0,
        case_insensitive_anchors=True,
    ),
)


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _base64_forms(value: str) -> set[str]:
    """The parts of the base64 encoding of ``value`` that do not depend on its neighbours, for each of
    the three alignments it can have inside a longer encoded text."""
    raw = value.encode()
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        first = math.ceil(8 * shift / 6)
        last = (8 * (shift + len(raw))) // 6
        stable = encoded[first:last]
        if len(stable) >= MIN_SECRET_LENGTH:
            forms.add(stable)
            forms.add(stable.replace("+", "-").replace("/", "_"))
    return forms


def _encoded_forms(value: str) -> set[str]:
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value, safe="")}
    forms |= _base64_forms(value)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class SecretMasker:
    """Masks known secret values and secret-looking patterns. Thread-safe."""

    def __init__(self, known_secrets: Iterable[str] = (), *, rules: Sequence[MaskingRule] | None = None) -> None:
        self._rules = tuple(DEFAULT_RULES if rules is None else rules)
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._compiled: re.Pattern[str]
        self._group_rule: dict[str, MaskingRule | None] = {}
        self._holdback = 0
        for value in known_secrets:
            self._add(value, "known-secret")
        self._compile()

    # -- configuration -----------------------------------------------------------------------

    def add_secret(self, value: str, name: str = "known-secret") -> None:
        """Mask ``value`` (and its base64 and URL-encoded forms) wherever it appears from now on."""
        with self._lock:
            if value in self._known:
                return
            self._add(value, name)
            self._compile()

    def _add(self, value: str, name: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"secret value of {len(value)} characters is too short to mask safely",
                hint=f"secrets must have at least {MIN_SECRET_LENGTH} characters; check HYDRA_SECRETS",
            )
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise ConfigError(f"secret name {name!r}: use lowercase letters, digits and '-'")
        for form in _encoded_forms(value):
            self._known[form] = name

    def _compile(self) -> None:
        parts: list[str] = []
        group_rule: dict[str, MaskingRule | None] = {}
        holdback = 1
        if self._known:
            # longest first, so a value that contains another is masked whole
            by_name: dict[str, list[str]] = {}
            for value, name in self._known.items():
                by_name.setdefault(name, []).append(value)
            for i, (name, values) in enumerate(sorted(by_name.items())):
                group = f"k{i}"
                values.sort(key=len, reverse=True)
                parts.append(f"(?P<{group}>" + "|".join(re.escape(v) for v in values) + ")")
                group_rule[group] = MaskingRule(name, "", max(len(v) for v in values))
                holdback = max(holdback, max(len(v) for v in values))
        for i, rule in enumerate(self._rules):
            group = f"r{i}"
            pattern = rule.pattern.replace("(?P<v>", f"(?P<{group}v>")
            parts.append(f"(?P<{group}>{pattern})")
            group_rule[group] = rule
            holdback = max(holdback, rule.max_length)
        anchors = set(self._known)
        ci_anchors: set[str] = set()
        for rule in self._rules:
            if not rule.anchors:
                raise ValueError(f"rule {rule.name!r} needs anchors: the literals its matches start with")
            (ci_anchors if rule.case_insensitive_anchors else anchors).update(
                a.lower() if rule.case_insensitive_anchors else a for a in rule.anchors
            )
        automaton = ahocorasick.Automaton()
        entries: dict[str, list[tuple[str, bool]]] = {}
        for anchor in anchors:
            entries.setdefault(anchor.lower(), []).append((anchor, True))
        for anchor in ci_anchors:
            entries.setdefault(anchor, []).append((anchor, False))
        for key, variants in entries.items():
            # one key may stand for several anchors (e.g. "sk-" from two rules): keep the least strict
            case_sensitive = all(cs for _a, cs in variants)
            original = next(a for a, cs in variants if cs == case_sensitive)
            automaton.add_word(key, (original, case_sensitive))
        automaton.make_automaton()
        self._automaton = automaton
        self._compiled = re.compile("|".join(parts))
        self._group_rule = group_rule
        self._holdback = holdback

    # -- masking -----------------------------------------------------------------------------

    @property
    def holdback(self) -> int:
        """Characters a stream holds back: the longest match any rule can make."""
        return self._holdback

    @property
    def hits(self) -> dict[str, int]:
        with self._lock:
            return dict(self._hits)

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self._rules]

    def _anchor_positions(self, text: str, pos: int, endpos: int) -> list[int]:
        """Every position in [pos, endpos) where some rule could start a match, ascending: one
        Aho-Corasick pass over an ASCII-lowercased copy; case-sensitive anchors are confirmed on the text."""
        window = text[pos:endpos]
        haystack = window.lower() if window.isascii() else window.translate(_ASCII_LOWER)
        found: set[int] = set()
        for end, (anchor, case_sensitive) in self._automaton.iter(haystack):
            start = end - len(anchor) + 1
            if case_sensitive and not window.startswith(anchor, start):
                continue
            found.add(pos + start)
        return sorted(found)

    def _matches(self, text: str, pos: int, endpos: int) -> Iterator[re.Match[str]]:
        """The same matches as ``finditer``, found by trying the pattern only at anchor positions."""
        pattern = self._compiled
        last_end = pos
        for start in self._anchor_positions(text, pos, endpos):
            if start < last_end:
                continue
            match = pattern.match(text, start, endpos)
            if match is not None:
                last_end = match.end()
                yield match

    def _spans(self, text: str, pos: int, endpos: int) -> list[tuple[int, int, str, int, int]]:
        """Matches as (start, end, rule name, masked start, masked end), found from ``pos``."""
        out = []
        pattern = self._compiled
        group_rule = self._group_rule
        for match in self._matches(text, pos, endpos):
            group = match.lastgroup
            if group is None:
                continue
            rule = group_rule[group]
            assert rule is not None
            value_group = f"{group}v"
            if value_group in pattern.groupindex and match.group(value_group) is not None:
                vs, ve = match.span(value_group)
                if rule.min_entropy and shannon_entropy(match.group(value_group)) < rule.min_entropy:
                    out.append((match.start(), match.end(), "", vs, vs))
                    continue
                if match.group(value_group).startswith("[MASKED"):
                    out.append((match.start(), match.end(), "", vs, vs))
                    continue
                specific = pattern.match(text, vs, ve)
                if specific is not None and specific.end() == ve and specific.lastgroup is not None:
                    inner = group_rule[specific.lastgroup]
                    if inner is not None and f"{specific.lastgroup}v" not in pattern.groupindex:
                        rule = inner
            else:
                vs, ve = match.span()
            out.append((match.start(), match.end(), rule.name, vs, ve))
        return out

    def _replace(self, text: str, spans: list[tuple[int, int, str, int, int]], start: int, end: int) -> str:
        pieces = []
        cursor = start
        counted: Counter[str] = Counter()
        for _s, _e, name, ms, me in spans:
            if not name:
                continue
            pieces.append(text[cursor:ms])
            pieces.append(f"[MASKED:{name}]")
            cursor = me
            counted[name] += 1
        pieces.append(text[cursor:end])
        if counted:
            with self._lock:
                self._hits.update(counted)
        return "".join(pieces)

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``[MASKED:<rule>]``."""
        if not text:
            return text
        return self._replace(text, self._spans(text, 0, len(text)), 0, len(text))

    def stream(self) -> MaskingStream:
        return MaskingStream(self)


class MaskingStream:
    """Masks a stream chunk by chunk; ``"".join(feeds) + flush()`` equals masking the whole text."""

    _CONTEXT = 64  # characters kept before the emit point for lookbehinds and word boundaries

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._buffer = ""
        self._scan_from = 0  # chars of _buffer before this were already emitted (kept as context)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed_bytes(self, chunk: bytes) -> str:
        return self.feed(self._decoder.decode(chunk))

    def feed(self, chunk: str) -> str:
        if not chunk:
            return ""
        self._buffer += chunk
        buffer = self._buffer
        cut = len(buffer) - self._masker.holdback
        if cut <= self._scan_from:
            return ""
        spans = self._masker._spans(buffer, self._scan_from, len(buffer))
        for start, end, _name, _ms, _me in spans:
            if start < cut < end:
                cut = start
                break
        if cut <= self._scan_from:
            return ""
        emitted = [s for s in spans if s[1] <= cut]
        out = self._masker._replace(buffer, emitted, self._scan_from, cut)
        keep_from = max(0, cut - self._CONTEXT)
        self._buffer = buffer[keep_from:]
        self._scan_from = cut - keep_from
        return out

    def flush(self) -> str:
        self._buffer += self._decoder.decode(b"", final=True)
        buffer = self._buffer
        spans = self._masker._spans(buffer, self._scan_from, len(buffer))
        out = self._masker._replace(buffer, spans, self._scan_from, len(buffer))
        self._buffer = ""
        self._scan_from = 0
        return out


class LineMasker:
    """Masks text line by line, so each line can be emitted as soon as it is complete.

    A private key block is the one secret that spans lines: from a line that opens one, lines are held
    until the block closes (or :data:`MAX_KEY_BLOCK` characters have been held), then masked together.
    """

    _OPEN = re.compile(r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY")
    _CLOSE = re.compile(r"-----END[A-Z0-9 ]{0,40} PRIVATE KEY")

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker
        self._held: list[str] = []
        self._held_size = 0

    @property
    def holding(self) -> bool:
        """Whether lines of an open private key block are held."""
        return bool(self._held)

    def feed_line(self, line: str) -> list[str]:
        """Masked lines ready to emit (none while a key block is open)."""
        if self._held:
            self._held.append(line)
            self._held_size += len(line)
            if self._CLOSE.search(line) or self._held_size > MAX_KEY_BLOCK:
                return self._release()
            return []
        if self._OPEN.search(line) and not self._CLOSE.search(line):
            self._held, self._held_size = [line], len(line)
            return []
        return [self._masker.mask(line)]

    def _release(self) -> list[str]:
        block = self._masker.mask("\n".join(self._held))
        self._held, self._held_size = [], 0
        return block.split("\n")

    def flush(self) -> list[str]:
        return self._release() if self._held else []
