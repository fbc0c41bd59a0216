"""Masking rules as data: every rule's examples, on both engines, whole and streamed; operator rule files;
known values under their encodings; normalisation; code is never masked; the leaks issue 14 listed."""

from __future__ import annotations

import base64
import json
import quopri
import random
import re
import threading
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.masking import (
    LineMasker,
    SecretMasker,
    default_rules,
    hyperscan_available,
    known_forms,
    load_rules,
)
from tests.masking_kit import normalised_pairs

RULES = default_rules()
SECRETS = [(r.id, text) for r in RULES for text in r.examples.secret]
ORDINARY = [(r.id, text) for r in RULES for text in r.examples.ordinary]
ENGINES = ["hyperscan", "fallback"] if hyperscan_available() else ["fallback"]
KNOWN = "hydra/known+value=7f3a9c21Qz"


@pytest.fixture(scope="module", params=ENGINES)
def masker(request: pytest.FixtureRequest) -> SecretMasker:
    return SecretMasker(engine=request.param)


def streamed(masker: SecretMasker, text: str, sizes: list[int]) -> str:
    stream = masker.stream()
    out, i = [], 0
    for size in sizes:
        out.append(stream.feed(text[i : i + size]))
        i += size
    return "".join(out) + stream.feed(text[i:]) + stream.flush()


def test_the_multi_pattern_engine_is_installed() -> None:
    assert hyperscan_available(), "hyperscan is a dependency; without it masking runs on the slower fallback"
    assert SecretMasker().engine == "hyperscan"


def test_every_rule_has_examples_of_both_kinds() -> None:
    assert len(RULES) >= 40
    for rule in RULES:
        assert rule.examples.secret, f"{rule.id}: no secret example"
        assert rule.examples.ordinary, f"{rule.id}: no ordinary example"


@pytest.mark.parametrize(("rule", "text"), SECRETS)
def test_secret_example_is_masked_by_its_rule(masker: SecretMasker, rule: str, text: str) -> None:
    assert f"[MASKED:{rule}]" in masker.mask(text)


@pytest.mark.parametrize(("rule", "text"), SECRETS)
def test_every_match_of_a_secret_example_starts_within_before_hit_of_a_prefilter_hit(rule: str, text: str) -> None:
    """A stream emits text up to ``before_hit`` before a pending hit: a match starting earlier would leak.
    Some prefilter match (its greedy end from each start inside the match) must end inside the match and
    no further than ``before_hit`` from its start."""
    found = next(r for r in RULES if r.id == rule)
    prefilter = re.compile(found.prefilter or found.pattern, re.DOTALL)
    reach = min(found.before_hit or found.max_length, found.max_length)
    for match in found.regex.finditer(text):
        ends = [m.end() for t in range(match.start(), match.end()) if (m := prefilter.match(text, t))]
        assert any(match.start() < end <= match.start() + reach for end in ends), (rule, match.group())


@pytest.mark.parametrize(("rule", "text"), ORDINARY)
def test_ordinary_example_is_left_alone(masker: SecretMasker, rule: str, text: str) -> None:
    assert masker.mask(text) == text


@pytest.mark.parametrize(("rule", "text"), SECRETS)
def test_secret_example_streamed_in_random_chunks_equals_masking_it_whole(
    masker: SecretMasker, rule: str, text: str
) -> None:
    framed = f"log line\n{text}\nnext line"
    rng = random.Random(rule)
    for _ in range(5):
        sizes = [rng.randint(1, 50) for _ in range(len(framed) // 10 + 1)]
        assert streamed(masker, framed, sizes) == masker.mask(framed)


def test_both_engines_mask_every_example_the_same_way() -> None:
    if len(ENGINES) < 2:
        pytest.fail("hyperscan is missing: the engines cannot be compared")
    fast, fallback = SecretMasker(engine="hyperscan"), SecretMasker(engine="fallback")
    for _rule, text in SECRETS + ORDINARY:
        assert fast.mask(text) == fallback.mask(text)


# -- operator rules -------------------------------------------------------------------------------

OPERATOR_RULE = """
rules:
  - id: acme-token
    pattern: '(?<![A-Za-z0-9])acme_[a-z0-9]{24}'
    keywords: [acme_]
    examples:
      secret: ["ACME=acme_0123456789abcdefghijklmn"]
      ordinary: ["acme_corp"]
"""


def test_an_operator_rule_file_adds_a_rule_after_the_built_in_ones(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(OPERATOR_RULE)
    rules = load_rules([tmp_path])
    assert rules[-1].id == "acme-token" and len(rules) == len(RULES) + 1
    assert SecretMasker(rules=rules).mask("ACME=acme_0123456789abcdefghijklmn") == "ACME=[MASKED:acme-token]"


def test_an_operator_rule_with_a_built_in_id_replaces_it(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(OPERATOR_RULE.replace("acme-token", "npm-token"))
    rules = load_rules([tmp_path])
    assert [r.id for r in rules].count("npm-token") == 1 and len(rules) == len(RULES)
    assert next(r for r in rules if r.id == "npm-token").keywords == ("acme_",)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rules:\n  - id: x\n    pattern: 'a+'\n", "bound every repeat"),
        ("rules:\n  - id: x\n    pattern: '(unclosed'\n", "not a valid regular expression"),
        ("rules:\n  - id: Bad Id\n    pattern: 'abc'\n", r"rules\[0\]\.id"),
        ("rules:\n  - id: x\n    pattern: 'abc'\n    colour: red\n", "colour"),
        ("rules:\n  - {id: x, pattern: abc}\n  - {id: x, pattern: abd}\n", "appears twice"),
    ],
)
def test_a_bad_operator_rule_file_is_refused_naming_the_file(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as caught:
        load_rules([tmp_path])
    assert "bad.yaml" in str(caught.value)


def test_a_missing_rules_directory_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HYDRA_MASKING_RULES_DIR"):
        load_rules([tmp_path / "nope"])


# -- known values under their encodings -----------------------------------------------------------


def _encodings(value: str) -> dict[str, str]:
    raw = value.encode()
    b64 = base64.b64encode(b"prefix:" + raw + b":suffix").decode()
    long_b64 = base64.b64encode(b"x" * 50 + raw + b"y" * 50).decode()
    return {
        "plain": value,
        "upper": value.upper(),
        "reversed": value[::-1],
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "url": urllib.parse.quote(value, safe=""),
        "url lower-case": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(value, safe="")),
        "url plus": urllib.parse.quote_plus(value),
        "json": json.dumps({"v": value}),
        "json escaped slash": json.dumps({"v": value}).replace("/", "\\/"),
        "quoted-printable": quopri.encodestring(raw).decode(),
        "base64": b64,
        "base64 url-safe": base64.urlsafe_b64encode(b"ab" + raw).decode(),
        "base64 wrapped at 76": "\n".join(long_b64[i : i + 76] for i in range(0, len(long_b64), 76)),
        "base64 wrapped at 64, CRLF": "\r\n".join(long_b64[i : i + 64] for i in range(0, len(long_b64), 64)),
        "double base64": base64.b64encode(b64.encode()).decode(),
    }


@pytest.mark.parametrize("encoding", list(_encodings(KNOWN)))
def test_a_known_value_is_masked_under_each_encoding(masker: SecretMasker, encoding: str) -> None:
    known = SecretMasker([KNOWN], engine="fallback" if masker.engine != "hyperscan" else "hyperscan")
    text = _encodings(KNOWN)[encoding]
    masked = known.mask(f"output: {text} end")
    assert "[MASKED:" in masked  # (a wrapped line of base64 may be masked whole, as key material)
    joined = masked.replace("\r", "").replace("\n", "")
    assert not [form for form in known_forms(KNOWN) if "\n" not in form and form in joined]
    assert masked.startswith("output: ") and masked.endswith(" end")


# -- normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split",
    ["\x1b[31m", "\x1b[0m\x1b[1;32m", "\u200b", "\u00ad", "\ufeff", "\x1b]8;;http://x\x07", "\u2060"],
)
def test_a_value_split_by_invisible_characters_is_masked_and_the_rest_kept(masker: SecretMasker, split: str) -> None:
    key = "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB"
    text = f"\x1b[1mtoken:\x1b[0m {key[:10]}{split}{key[10:]} \x1b[2mdone\x1b[0m"
    assert masker.mask(text) == "\x1b[1mtoken:\x1b[0m [MASKED:github-token] \x1b[2mdone\x1b[0m"
    known = SecretMasker([KNOWN])
    assert known.mask(f"a {KNOWN[:5]}{split}{KNOWN[5:]} b") == "a [MASKED:known-secret] b"


@settings(max_examples=120, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from([t for _r, t in SECRETS[:40]] + ["\x1b[31m", "\u200b", "\u00ad", "\n", " ", "x" * 20, KNOWN]),
        min_size=1,
        max_size=10,
    ),
    seed=st.integers(0, 10_000),
)
def test_streaming_text_with_escapes_in_any_chunks_equals_masking_it_whole(pieces: list[str], seed: int) -> None:
    masker = SecretMasker([KNOWN])
    text = "".join(pieces)
    rng = random.Random(seed)
    sizes = [rng.randint(1, 40) for _ in range(len(text) // 6 + 1)]
    assert streamed(masker, text, sizes) == masker.mask(text)


# -- code is not a secret --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "token = refresh_access_token_for(session)",
        "secret = self.vault.read_secret(path)",
        "password = getpass.getpass()",
        "api_key = config.openai.api_key",
        "const apiKey = process.env.OPENAI_API_KEY;",
        "token: ${{ secrets.GITHUB_TOKEN }}",
        "PASSWORD=<your-password-here>",
        "secret_key = SECRET_KEY_FROM_SETTINGS",
        "auth_token = tokenFromHeaderValue",
        "password: '********'",
        "let token = await getAccessTokenSilently({ audience })",
    ],
)
def test_code_and_placeholders_are_not_masked(masker: SecretMasker, line: str) -> None:
    assert masker.mask(line) == line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('password = "Xy9$kL2#mQ8!vR4z"; connect()', 'password = "[MASKED:secret-assignment]"; connect()'),
        ("PASSWORD=Xy9kL2mQ8vR4zT. Then", "PASSWORD=[MASKED:secret-assignment]. Then"),
        ("curl -u admin:Zq81LmnB7vcX2e4R http://127.0.0.1/", "curl -u admin:[MASKED:curl-user] http://127.0.0.1/"),
    ],
)
def test_the_masked_span_is_the_secret_only(masker: SecretMasker, line: str, expected: str) -> None:
    assert masker.mask(line) == expected


# -- the leaks issue 14 listed ---------------------------------------------------------------------


def _pem(kind: str = "PRIVATE KEY", lines: int = 8) -> tuple[str, list[str]]:
    rng = random.Random(kind)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = ["".join(rng.choice(alphabet) for _ in range(64)) for _ in range(lines)] + ["AbCd1234efGH=="]
    return f"-----BEGIN {kind}-----\n" + "\n".join(body) + f"\n-----END {kind}-----\n", body


def test_a_gcp_service_account_file_leaves_no_key_material(masker: SecretMasker) -> None:
    pem, body = _pem()
    account = {
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "bot@demo.iam.gserviceaccount.com",
    }
    for text in (json.dumps(account, indent=2), json.dumps(account), f"PRIVATE_KEY={json.dumps(pem)}"):
        masked = masker.mask(text)
        assert not any(line in masked for line in body), masked
        assert "0123456789abcdef0123456789abcdef01234567" not in masked
        assert '"client_email"' in masked or "PRIVATE_KEY=" in masked


@pytest.mark.parametrize("view", ["head", "tail", "sed", "whole"])
def test_a_partial_private_key_leaves_no_key_line_through_mask_and_line_masker(
    masker: SecretMasker, view: str
) -> None:
    pem, body = _pem("RSA PRIVATE KEY")
    lines = pem.splitlines()
    shown = {"head": lines[:5], "tail": lines[-4:], "sed": lines[3:7], "whole": lines}[view]
    text = "\n".join(["$ cat key.pem", *shown, "$ echo done"])
    line_masker = LineMasker(masker)
    out = [masked for line in text.split("\n") for masked in line_masker.feed_line(line)] + line_masker.flush()
    for result in (masker.mask(text), "\n".join(out)):
        leaked = [line for line in body if line in result]
        assert not leaked, result
        assert result.startswith("$ cat key.pem") and result.endswith("$ echo done")


@pytest.mark.parametrize("view", ["head", "tail", "sed", "whole"])
def test_a_run_of_lines_masked_together_equals_masking_them_one_by_one(masker: SecretMasker, view: str) -> None:
    pem, _body = _pem("RSA PRIVATE KEY")
    lines = pem.splitlines()
    shown = {"head": lines[:5], "tail": lines[-4:], "sed": lines[3:7], "whole": lines}[view]
    plain = [f"log line {n} with {t}" for n, (_r, t) in enumerate(SECRETS) if "\n" not in t]
    text_lines = ["$ cat key.pem", *plain[:3], *shown, "$ echo done", *plain[3:]]
    one_by_one, together = LineMasker(masker), LineMasker(masker)
    expected = [m for line in text_lines for m in one_by_one.feed_line(line)] + one_by_one.flush()
    got = together.feed_lines(text_lines[:4]) + together.feed_lines(text_lines[4:]) + together.flush()
    assert got == expected
    assert sum("[MASKED:" in line for line in got) >= len(plain) // 2  # the run holds real secrets


def test_a_flood_of_base64_lines_is_masked_in_one_call_per_run() -> None:
    masker = SecretMasker([KNOWN])
    calls: list[str] = []
    real = masker.mask
    masker.mask = lambda text: calls.append(text) or real(text)  # type: ignore[method-assign]
    flood = [base64.b64encode(bytes([n % 251]) * 90).decode() for n in range(500)]  # 120-character lines
    out = LineMasker(masker).feed_lines([*flood, f"token {KNOWN}", *flood])
    assert len(out) == 1001 and KNOWN not in "\n".join(out)
    assert len(calls) == 1


def test_a_long_base64_line_is_not_taken_for_key_material_without_backtracking() -> None:
    # the key-body test used to backtrack through every length of a long base64 run, once per line
    line_masker = LineMasker(SecretMasker([KNOWN]))
    assert not line_masker._BODY.fullmatch("A" * 10_000)
    assert line_masker.feed_lines(["A1b2" * 30]) == ["A1b2" * 30]


def test_masking_from_many_threads_at_once_is_consistent() -> None:
    masker = SecretMasker([KNOWN])
    texts = [t for _r, t in SECRETS] + [KNOWN]
    expected = [masker.mask(t) for t in texts]
    failures: list[str] = []

    def work() -> None:
        for _ in range(3):
            for text, want in zip(texts, expected, strict=True):
                if masker.mask(text) != want:
                    failures.append(text)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=["a", " ", "\x1b", "[", "3", "m", "]", "\x07", "\\", "Z", ";", "\u200b", "\u00ad", "é"]))
def test_the_fast_escape_stripper_removes_exactly_what_the_reference_expression_does(text: str) -> None:
    from hydra_sandbox.masking.normalise import _REMOVABLE

    expected_text = _REMOVABLE.sub("", text)
    stripped, breaks = normalised_pairs(text)
    assert stripped == expected_text
    removed = [m.end() - m.start() for m in _REMOVABLE.finditer(text)]
    assert (breaks[-1][1] if breaks else 0) == sum(removed)
