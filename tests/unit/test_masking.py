"""The masker: per-rule true and false positives, streaming at every split, encoded known secrets."""

from __future__ import annotations

import base64
import random
import urllib.parse
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.masking import SecretMasker, default_rules

CORPUS = yaml.safe_load((Path(__file__).parent.parent / "data" / "masking_corpus.yaml").read_text())
TRUE = [(rule, text) for rule, texts in CORPUS["true_positives"].items() for text in texts]
KNOWN = "hydra-known-value-7f3a9c21"


def chunked(masker: SecretMasker, text: str, sizes: list[int]) -> str:
    stream = masker.stream()
    out, i = [], 0
    for size in sizes:
        out.append(stream.feed(text[i : i + size]))
        i += size
    out.append(stream.feed(text[i:]))
    return "".join(out) + stream.flush()


def test_every_rule_has_true_positives_in_the_corpus() -> None:
    assert set(CORPUS["true_positives"]) <= {r.id for r in default_rules()}


@pytest.mark.parametrize(("rule", "text"), TRUE)
def test_true_positive_is_masked_by_its_rule(rule: str, text: str) -> None:
    masked = SecretMasker().mask(text)
    assert f"[MASKED:{rule}]" in masked


@pytest.mark.parametrize("text", CORPUS["false_positives"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert SecretMasker().mask(text) == text


@pytest.mark.parametrize(("rule", "text"), TRUE)
def test_secret_split_at_every_position_is_still_masked(rule: str, text: str) -> None:
    masker = SecretMasker()
    whole = masker.mask("prefix " + text + " suffix")
    for cut in range(1, len(text) + 8):
        assert chunked(masker, "prefix " + text + " suffix", [cut]) == whole


def test_known_secret_and_its_encodings_are_masked() -> None:
    masker = SecretMasker([KNOWN])
    for shift in ("", "a", "ab"):
        encoded = base64.b64encode((shift + KNOWN + "tail").encode()).decode()
        assert KNOWN[:8] not in masker.mask(encoded)
        assert "[MASKED:known-secret]" in masker.mask(encoded)
    assert masker.mask(f"x={urllib.parse.quote(KNOWN + '/+', safe='')}").startswith("x=[MASKED:known-secret]")
    assert masker.mask(f"echo {KNOWN}") == "echo [MASKED:known-secret]"


def test_added_secret_applies_to_later_text() -> None:
    masker = SecretMasker()
    assert masker.mask(KNOWN) == KNOWN
    masker.add_secret(KNOWN)
    assert masker.mask(KNOWN) == "[MASKED:known-secret]"


def test_short_secret_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="too short.*HYDRA_SECRETS"):
        SecretMasker(["abc"])


def test_provider_key_in_assignment_is_named_after_the_provider() -> None:
    masked = SecretMasker().mask("OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z")
    assert masked == "OPENAI_API_KEY=[MASKED:openai-key]"


def test_multiline_private_key_split_across_many_chunks() -> None:
    key = CORPUS["true_positives"]["private-key"][0]
    text = "log line\n" * 50 + key + "\nmore\n" * 50
    masker = SecretMasker()
    rng = random.Random(7)
    for _ in range(50):
        sizes = [rng.randint(1, 40) for _ in range(200)]
        out = chunked(masker, text, sizes)
        assert "MIIEpAIBAAKCAQEA" not in out and "[MASKED:private-key]" in out


def test_hits_are_counted_by_rule() -> None:
    masker = SecretMasker()
    masker.mask("AKIAIOSFODNN7EXAMPLE and AKIAIOSFODNN7EXAMPLF")
    assert masker.hits["aws-access-key"] == 2


def test_bytes_split_inside_a_multibyte_character_decode_correctly() -> None:
    stream = SecretMasker().stream()
    data = "héllo ✓ wörld".encode()
    out = "".join(stream.feed_bytes(data[i : i + 1]) for i in range(len(data))) + stream.flush()
    assert out == "héllo ✓ wörld"


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from([t for _r, t in TRUE] + CORPUS["false_positives"] + ["\n", " ", "x" * 30]),
        min_size=1,
        max_size=12,
    ),
    seed=st.integers(0, 10_000),
)
def test_streaming_in_any_chunks_equals_masking_the_whole(pieces: list[str], seed: int) -> None:
    masker = SecretMasker([KNOWN])
    text = " ".join(pieces) + KNOWN
    rng = random.Random(seed)
    sizes = [rng.randint(1, 64) for _ in range(len(text) // 8 + 1)]
    assert chunked(masker, text, sizes) == masker.mask(text)


@pytest.mark.parametrize(
    "text",
    ["leak_ASIAY34FZKBOKMUTVV7A.txt", "x_ghp_1234567890abcdefghijklmnopqrstuvwxyzAB", "v_glpat-xYz123AbC456dEf789gHiJ"],
)
def test_a_key_glued_to_a_name_by_an_underscore_is_masked(text: str) -> None:
    assert "[MASKED:" in SecretMasker().mask(text)
