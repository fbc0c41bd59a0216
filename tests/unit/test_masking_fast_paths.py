"""The streaming masker's fast paths give exactly what the general path gives: escape stripping by one
``re.split``, the invisible-character check made on the bytes, on the generated corpus and on secrets
split by ANSI escapes, zero-width characters and chunk edges."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.masking_corpus import generate
from hydra_sandbox.masking import LineMasker, SecretMasker
from hydra_sandbox.masking.normalise import (
    _REMOVABLE,
    _STARTS,
    INVISIBLE_BYTES,
    has_invisible,
    normalise,
)
from tests.masking_kit import normalised_pairs

KNOWN = "hydra-known-value-7f3a9c21"
TOKEN = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
INVISIBLE = _STARTS[1:]


def reference(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Normalisation by the definition: every ``_REMOVABLE`` match removed, one breakpoint per run."""
    pieces, breaks, cursor, removed = [], [], 0, 0
    for match in _REMOVABLE.finditer(text):
        pieces.append(text[cursor : match.start()])
        removed += match.end() - match.start()
        kept = match.start() - (removed - (match.end() - match.start()))
        if breaks and breaks[-1][0] == kept:
            breaks[-1] = (kept, removed)
        else:
            breaks.append((kept, removed))
        cursor = match.end()
    pieces.append(text[cursor:])
    return "".join(pieces), breaks


def stream_bytes(masker: SecretMasker, data: bytes, sizes: list[int]) -> str:
    stream, out, i = masker.stream(), [], 0
    for size in sizes:
        out.append(stream.feed_bytes(data[i : i + size]))
        i += size
    out.append(stream.feed_bytes(data[i:]))
    return "".join(out) + stream.flush()


def stream_text(masker: SecretMasker, text: str, size: int) -> str:
    stream = masker.stream()
    out = [stream.feed(text[i : i + size]) for i in range(0, len(text), size)]
    return "".join(out) + stream.flush()


ESCAPE_ALPHABET = ["a", "7", " ", "\n", "\x1b", "[", "3", "m", "]", "\x07", "\\", "Z", ";", "(", "#", "é", "✓", "x"]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ESCAPE_ALPHABET + list(INVISIBLE[:3])))
def test_escape_stripping_gives_the_breakpoints_of_the_reference_definition(text: str) -> None:
    assert normalised_pairs(text) == reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=[*ESCAPE_ALPHABET, "\ud800", "\udfff", "\U0001f600"]))
def test_the_utf8_normalising_makes_is_the_normalised_text_encoded_with_true_landmarks(text: str) -> None:
    normalised = normalise(text, invisible=False)
    if normalised.utf8 is not None:
        utf8 = normalised.utf8
        assert utf8.data == normalised.text.encode("utf-8", "surrogatepass")
        assert len(utf8.byte_at) == len(utf8.char_at) and utf8.byte_at[0] == utf8.char_at[0] == 0
        for byte, char in zip(utf8.byte_at, utf8.char_at, strict=True):
            assert len(normalised.text[:char].encode("utf-8", "surrogatepass")) == byte


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ESCAPE_ALPHABET))
def test_text_said_to_hold_no_invisible_character_normalises_as_when_looked_at(text: str) -> None:
    assert normalised_pairs(text, invisible=False) == normalised_pairs(text) == reference(text)


@pytest.mark.parametrize("char", list(INVISIBLE))
def test_every_invisible_character_has_a_byte_the_bytes_check_looks_for(char: str) -> None:
    encoded = char.encode()
    assert any(byte in encoded for byte in INVISIBLE_BYTES), f"U+{ord(char):04X} escapes the bytes check"


@pytest.mark.parametrize("char", list(INVISIBLE))
def test_a_token_split_by_an_invisible_character_is_masked_when_bytes_split_inside_it(char: str) -> None:
    masker = SecretMasker()
    text = "build ✓ ok\ntoken " + TOKEN[:20] + char + TOKEN[20:] + " done\n"
    data = text.encode()
    at = data.index(char.encode())
    expected = masker.mask(text)
    assert TOKEN[:20] not in expected
    for cut in range(at - 2, at + len(char.encode()) + 2):  # every split in and around the character
        assert stream_bytes(masker, data, [cut]) == expected


def test_an_unfinished_osc_carried_to_the_next_chunk_still_has_its_invisible_character_removed() -> None:
    # the ESC ] starts an OSC the first chunk cannot finish: it is carried with the zero-width space in it,
    # and the next chunk (whose bytes hold no invisible character) shows it never ends
    masker = SecretMasker()
    text = "\x1b]" + TOKEN[:20] + "\u200b" + TOKEN[20:] + " " + "x" * 600 + "\n"
    data = text.encode()
    cut = data.index("\u200b".encode()) + 3
    expected = masker.mask(text)
    assert "[MASKED:github-token]" in expected
    assert stream_bytes(masker, data, [cut]) == expected


ESCAPES = ["\x1b[0m", "\x1b[1;31m", "\x1b]0;title\x07", "\x1b]8;;x\x1b\\", "\x1bM", "\x1b7", "\x1b(B", "\x1b#8"]
ESCAPES.append("\x1bc")


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_token_split_by_an_escape_across_a_chunk_edge_is_masked_at_every_split(escape: str) -> None:
    masker = SecretMasker()
    text = "héllo ✓\n\x1b[32mtoken " + TOKEN[:17] + escape + TOKEN[17:] + "\x1b[0m wörld\n"
    expected = masker.mask(text)
    assert TOKEN[:17] not in expected and TOKEN[17:] not in expected
    data = text.encode()
    for cut in range(1, len(data)):
        assert stream_bytes(masker, data, [cut]) == expected


def test_non_ascii_text_before_a_secret_keeps_the_mask_on_the_secret_only() -> None:
    masker = SecretMasker()
    text = "✓ héllo wörld 日本語 \x1b[1m" + TOKEN + "\x1b[0m after"
    expected = "✓ héllo wörld 日本語 \x1b[1m[MASKED:github-token]\x1b[0m after"
    assert masker.mask(text) == expected
    data = text.encode()
    for cut in range(1, len(data)):
        assert stream_bytes(masker, data, [cut]) == expected


def _decorated_corpus(seed: int) -> str:
    """The generated corpus with colour, zero-width characters and non-ASCII text around and inside
    lines, as a coloured terminal and a careless copy-paste would give them."""
    rng = random.Random(seed)
    lines: list[str] = []
    for case in generate():
        for line in case.text.split("\n"):
            roll = rng.random()
            if roll < 0.2:
                line = f"\x1b[3{rng.randint(0, 7)}m{line}\x1b[0m"
            elif roll < 0.3 and len(line) > 4:
                at = rng.randrange(1, len(line))
                line = line[:at] + rng.choice(["\x1b[1m", "\u200b", "\u00ad", "\x1b]8;;u\x07"]) + line[at:]
            elif roll < 0.4:
                line = "✓ é " + line
            lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("chunk", [1000, 4096, 65536])
def test_streamed_bytes_equal_streamed_text_and_the_whole_text_on_the_decorated_corpus(chunk: int) -> None:
    masker = SecretMasker([KNOWN])
    text = _decorated_corpus(chunk) + KNOWN + "\n"
    data = text.encode()
    expected = masker.mask(text)
    assert KNOWN not in expected
    rng = random.Random(chunk)
    sizes = [rng.randint(chunk // 2, chunk) for _ in range(len(data) // (chunk // 2) + 1)]
    assert stream_bytes(masker, data, sizes) == expected
    assert stream_text(masker, text, chunk) == expected
    assert re.search(r"ghp_[A-Za-z0-9]{36}", expected) is None


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from([TOKEN[:12], TOKEN[12:24], TOKEN[24:], "token ", KNOWN[:9], KNOWN[9:], *ESCAPES]),
            st.text(alphabet=[*ESCAPE_ALPHABET, "\u200b"], max_size=6),
        ),
        max_size=16,
    ),
    seed=st.integers(0, 10_000),
)
def test_escape_heavy_text_streamed_as_bytes_in_any_chunks_equals_masking_it_whole(
    pieces: list[str], seed: int
) -> None:
    masker = SecretMasker([KNOWN])
    text = "".join(pieces)
    data = text.encode()
    rng = random.Random(seed)
    sizes = [rng.randint(1, 24) for _ in range(len(data) // 4 + 1)]
    assert stream_bytes(masker, data, sizes) == masker.mask(text)


TYPOGRAPHY = "it\u2019s \u2014 \u201cquoted\u201d \u2026 "
"""Quotes, dashes and an ellipsis: their UTF-8 (E2 80 ..) shares a byte with the zero-width marks."""


@pytest.mark.parametrize("char", list(INVISIBLE))
def test_an_invisible_character_among_typographic_punctuation_is_seen(char: str) -> None:
    assert has_invisible(TYPOGRAPHY + char + " ✓")
    assert normalised_pairs("a\u2019" + char + "b")[0] == "a\u2019b"


def test_typographic_punctuation_that_shares_bytes_with_invisible_characters_is_not_one() -> None:
    text = TYPOGRAPHY + " ✓ «ok» é"
    assert not has_invisible(text)
    assert normalised_pairs(text) == (text, [])


@pytest.mark.parametrize("batch", [1, 7, 50, 400])
def test_line_runs_checked_whole_are_masked_as_when_each_line_is_looked_at(batch: int) -> None:
    masker = SecretMasker([KNOWN])
    lines = (_decorated_corpus(batch) + KNOWN).split("\n")
    fast, each = LineMasker(masker), LineMasker(masker)
    got: list[str] = []
    want: list[str] = []
    for i in range(0, len(lines), batch):
        got += fast.feed_lines(lines[i : i + batch])
        want += each._feed_each(lines[i : i + batch])
    got += fast.flush()
    want += each.flush()
    assert got == want
    assert not any(KNOWN in line for line in got)


def test_the_decorated_corpus_normalises_as_the_reference_definition_says() -> None:
    text = _decorated_corpus(3)
    assert has_invisible(text) == any(char in text for char in INVISIBLE)
    assert normalised_pairs(text) == reference(text)
    plain = _REMOVABLE.sub("", text)
    assert not has_invisible(plain)
    assert normalised_pairs(plain, invisible=False) == reference(plain)
