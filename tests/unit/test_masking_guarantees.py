"""The masker's promises checked at their exact edges: every encoded form of a known value is registered
(URL-safe base64 included), a stream emits as it goes and holds back no more than it says, the value
checks refuse exactly what they name, and the line masker releases a key block at its bounds."""

from __future__ import annotations

import base64
import json
import math
import quopri
import random
import re
import urllib.parse
from pathlib import Path

import pytest
from pydantic import ValidationError

from hydra_sandbox.errors import ConfigError
from hydra_sandbox.masking import (
    MAX_KEY_BLOCK,
    MIN_SECRET_LENGTH,
    LineMasker,
    MaskingRule,
    SecretMasker,
    default_rules,
    hyperscan_available,
    known_forms,
    load_rules,
    shannon_entropy,
)
from hydra_sandbox.masking import engine as engine_module
from hydra_sandbox.masking.checks import is_placeholder, reads_as_code
from hydra_sandbox.masking.encodings import _stable_base64
from hydra_sandbox.masking.engine import (
    KNOWN_BASE,
    HyperscanPrefilter,
    KeywordPrefilter,
    _ahead,
    _char_offsets,
    _reach,
    make_prefilter,
)
from hydra_sandbox.masking.normalise import (
    OffsetMap,
    Utf8,
    _candidates,
    has_invisible,
    split_incomplete,
)
from hydra_sandbox.masking.rules import MAX_RULE_WIDTH
from hydra_sandbox.masking.scanner import CONTEXT, SLACK, accept
from tests.masking_kit import normalised_pairs

# a value whose base64 has '+' and '/' at every alignment, so its URL-safe base64 ('-', '_') differs
URL_SAFE_VALUE = "k>>?~>?>~?hydra~?>>"
KNOWN = "hydra-known-value-7f3a9c21"


# -- known values: every form ------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_the_url_safe_base64_of_a_known_value_is_masked_at_every_alignment(shift: int) -> None:
    masker = SecretMasker([URL_SAFE_VALUE])
    encoded = base64.urlsafe_b64encode(b"pq"[:shift] + URL_SAFE_VALUE.encode() + b"tail!").decode()
    assert "-" in encoded or "_" in encoded
    masked = masker.mask(f"out {encoded} end")
    assert "[MASKED:known-secret]" in masked
    stable = _stable_base64(URL_SAFE_VALUE.encode())[shift].replace("+", "-").replace("/", "_")
    assert stable in encoded and stable not in masked


def test_the_url_safe_forms_are_registered_beside_the_standard_ones() -> None:
    forms = known_forms(URL_SAFE_VALUE)
    for stable in _stable_base64(URL_SAFE_VALUE.encode()):
        assert stable in forms
        assert stable.replace("+", "-").replace("/", "_") in forms


# -- streams emit as they go -----------------------------------------------------------------------


def test_a_stream_emits_text_before_flush_and_holds_back_no_more_than_its_holdback() -> None:
    masker = SecretMasker([KNOWN])
    stream = masker.stream()
    line = "an ordinary line of build output, nothing secret here\n"
    text = line * 400 + f"token {KNOWN} leaked\n" + line * 400
    emitted = ""
    for i in range(0, len(text), 97):
        emitted += stream.feed(text[i : i + 97])
        assert len(text[: i + 97]) - len(emitted) <= masker.holdback + 97
    assert len(emitted) >= len(text) - masker.holdback - 97  # emitted as it went, not at flush
    assert "[MASKED:known-secret]" in emitted  # the mask itself left before the stream ended
    assert emitted + stream.flush() == masker.mask(text)


def test_a_byte_stream_emits_decoded_text_before_flush() -> None:
    masker = SecretMasker([KNOWN])
    stream = masker.stream()
    data = ("wörld ✓ output line\n" * 500).encode()
    emitted = "".join(stream.feed_bytes(data[i : i + 101]) for i in range(0, len(data), 101))
    assert len(emitted) >= len(data.decode()) - masker.holdback - 101
    assert emitted + stream.flush() == data.decode()


def test_an_empty_chunk_emits_nothing_and_changes_nothing() -> None:
    stream = SecretMasker([KNOWN]).stream()
    assert stream.feed("") == ""
    assert stream.feed_bytes(b"") == ""
    assert stream.feed(f"x {KNOWN} y") + stream.flush() == "x [MASKED:known-secret] y"


# -- known values alone: each form masked exactly ------------------------------------------------------

# a value with case, a slash, a plus, quotes, an equals sign, spaces and non-ASCII: every encoding differs
SPECIAL = 'pÄ ss/wörd+"Q"=x é'
NEVER = MaskingRule(id="never", pattern=r"qqzz-never-[0-9]{3}", keywords=("qqzz-never-",))
ENGINES = ["hyperscan", "fallback"] if hyperscan_available() else ["fallback"]


def _lower_percent(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


SPECIAL_FORMS = {
    "plain": SPECIAL,
    "upper": SPECIAL.upper(),
    "lower": SPECIAL.lower(),
    "reversed": SPECIAL[::-1],
    "hex": SPECIAL.encode().hex(),
    "HEX": SPECIAL.encode().hex().upper(),
    "url, nothing safe": urllib.parse.quote(SPECIAL, safe=""),
    "url, slash kept": urllib.parse.quote(SPECIAL),
    "url, plus for space": urllib.parse.quote_plus(SPECIAL, safe=""),
    "url, lower-case escapes": _lower_percent(urllib.parse.quote(SPECIAL, safe="")),
    "url, slash kept, lower-case": _lower_percent(urllib.parse.quote(SPECIAL)),
    "url, plus, lower-case": _lower_percent(urllib.parse.quote_plus(SPECIAL, safe="")),
    "json ascii": json.dumps(SPECIAL)[1:-1],
    "json utf-8": json.dumps(SPECIAL, ensure_ascii=False)[1:-1],
    "json ascii, escaped slash": json.dumps(SPECIAL)[1:-1].replace("/", "\\/"),
    "json utf-8, escaped slash": json.dumps(SPECIAL, ensure_ascii=False)[1:-1].replace("/", "\\/"),
    "quoted-printable": quopri.encodestring(SPECIAL.encode()).decode().removesuffix("\n"),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("form", list(SPECIAL_FORMS))
def test_each_encoding_of_a_known_value_is_masked_whole_and_nothing_else(engine: str, form: str) -> None:
    masker = SecretMasker([SPECIAL], rules=[NEVER], engine=engine)
    encoded = SPECIAL_FORMS[form]
    assert encoded in known_forms(SPECIAL)
    assert masker.mask(f"<<{encoded}>>") == "<<[MASKED:known-secret]>>"
    assert masker.hits == {"known-secret": 1}


@pytest.mark.parametrize("engine", ENGINES)
def test_base64_of_a_known_value_wrapped_at_any_column_is_masked(engine: str) -> None:
    masker = SecretMasker([KNOWN], rules=[NEVER], engine=engine)
    raw = KNOWN.encode()
    for width, newline in ((64, "\n"), (76, "\r\n"), (76, "\n"), (64, "\r\n")):
        for pad in range(0, width, 5):
            encoded = base64.b64encode(b"z" * pad + raw + b"tail").decode()
            wrapped = newline.join(encoded[i : i + width] for i in range(0, len(encoded), width))
            masked = masker.mask(wrapped)
            assert "[MASKED:known-secret]" in masked, (width, repr(newline), pad)
            stable = _stable_base64(raw)[pad % 3]
            assert stable[1:-1] not in masked.replace(newline, ""), (width, repr(newline), pad)


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_base64_of_base64_of_a_known_value_is_masked(shift: int) -> None:
    masker = SecretMasker([KNOWN], rules=[NEVER])
    inner = base64.b64encode(b"ab"[:shift] + KNOWN.encode() + b"--").decode()
    for outer_shift in range(3):
        outer = base64.b64encode(b"xy"[:outer_shift] + inner.encode() + b"..").decode()
        assert "[MASKED:known-secret]" in masker.mask(f"blob {outer} end"), (shift, outer_shift)


def test_the_stable_base64_forms_are_exactly_the_characters_no_neighbour_changes() -> None:
    raw = URL_SAFE_VALUE.encode()
    for shift, stable in enumerate(_stable_base64(raw)):
        # the reference: encode the value among every pair of neighbour bytes; a character is stable when
        # it is the same in all of them
        encodings = [
            base64.b64encode(bytes([a]) * shift + raw + bytes([b]) * 3).decode()
            for a, b in ((0, 0), (255, 255), (0, 255), (255, 0), (0x55, 0xAA))
        ]
        same = [i for i, c in enumerate(encodings[0]) if c != "=" and len({e[i] for e in encodings}) == 1]
        assert same == list(range(same[0], same[0] + len(stable)))  # one run
        assert encodings[0][same[0] : same[-1] + 1] == stable


# -- judging a candidate value -----------------------------------------------------------------------


def test_entropy_is_the_bits_per_character_of_the_value() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("aabb") == 1.0
    assert shannon_entropy("abcd") == 2.0
    assert shannon_entropy("aaab") == pytest.approx(0.8112781244591328)


def test_entropy_from_the_count_table_equals_the_definition_for_values_short_and_long() -> None:
    rng = random.Random(7)
    for n in [1, 2, 7, 40, 200, 1023, 1024, 1500]:
        for alphabet in ["ab", "abcdef0123", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"]:
            value = "".join(rng.choice(alphabet) for _ in range(n))
            n_ = len(value)
            definition = -sum(value.count(c) / n_ * math.log2(value.count(c) / n_) for c in set(value))
            assert shannon_entropy(value) == pytest.approx(definition, abs=1e-9)


@pytest.mark.parametrize(
    "value",
    ["YOUR_API_KEY_HERE", "<Your-Token>", "CHANGEME", "Example123", "PROCESS.ENV.TOKEN", "[Masked:x]", "NONE", "Null"],
)
def test_placeholders_are_recognised_in_any_case(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize(
    ("value", "following", "code"),
    [
        ("abc123", "(", True),  # a call
        ("abc123", "(x)", True),
        ("abc123", "[0]", True),  # an index
        ("abc123", "{", True),
        ("abc123(", "", True),
        ("abc123[", "", True),
        ("abc123", ")", False),
        ("abc123", "", False),
        ("config.api_key", "", True),  # attribute access
        ("config.api_key9", ";", True),
        ("access_token_for_user", "", True),  # words
        ("abCDef", "", True),  # two case changes in six letters: still words (the exact edge)
        ("aBCdeF", "", False),  # three: random case, a secret
        ("AbCdEfGh", "", False),
        ("x1y2z3", "", False),
    ],
)
def test_a_value_reads_as_code_exactly_when_it_is_a_call_attribute_or_words(
    value: str, following: str, code: bool
) -> None:
    assert reads_as_code(value, following) is code


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("abcabc", True),  # three distinct characters: the edge
        ("abab", True),
        ("abcdabcd", False),
        ("${TOKEN}", True),
        ("<your-key>", True),
        ("changeme", True),
        ("Xk9qLm2Zp7Rt", False),
    ],
)
def test_a_value_is_a_placeholder_when_it_is_a_template_or_has_three_characters_or_fewer(
    value: str, placeholder: bool
) -> None:
    assert is_placeholder(value) is placeholder


def _rule(**fields: object) -> MaskingRule:
    return MaskingRule.model_validate({"id": "probe", "pattern": r"k=(?P<v>\S{1,40})", "keywords": ["k="], **fields})


@pytest.mark.parametrize(
    ("fields", "value", "following", "accepted"),
    [
        ({}, "x", "", True),  # one character is a value
        ({}, "", "", False),
        ({}, "ab[MASKED:x]", "", False),  # already masked
        ({"require": [r"[0-9]", r"[a-z]"]}, "abc1", "", True),
        ({"require": [r"[0-9]", r"[a-z]"]}, "abcd", "", False),  # every pattern must be there
        ({"require": [r"[0-9]", r"[a-z]"]}, "1234", "", False),
        ({"allow": [r"test\w*"]}, "testvalue", "", False),  # allowed in full
        ({"allow": [r"test\w*"]}, "mytestvalue", "", True),  # not in full
        ({"entropy": 2.0}, "abcd", "", True),  # exactly the floor
        ({"entropy": 2.0}, "aabbc", "", False),
        ({"generic": True}, "get_token", "", False),  # code
        ({"generic": True}, "Xk9qLm2Zp7", "(", False),  # a call
        ({"generic": True}, "abcabc", "", False),  # a placeholder
        ({"generic": True}, "Xk9qLm2Zp7", "", True),
        ({}, "get_token", "(", True),  # only generic rules judge code
        ({}, "abcabc", "", True),
    ],
)
def test_a_candidate_is_accepted_only_when_every_check_of_its_rule_passes(
    fields: dict[str, object], value: str, following: str, accepted: bool
) -> None:
    assert accept(_rule(**fields), value, following) is accepted


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rule_masks_its_first_matched_value_group_or_the_whole_match(engine: str) -> None:
    groups = MaskingRule(id="pair", pattern=r"a=(?P<v>\d{1,9})|b=(?P<v2>\w{1,9})", keywords=("a=", "b="))
    whole = MaskingRule(id="whole", pattern=r"zz[0-9]{4}", keywords=("zz",))
    masker = SecretMasker(rules=[groups, whole], engine=engine)
    assert masker.mask("x a=123 y") == "x a=[MASKED:pair] y"
    assert masker.mask("x b=hello y") == "x b=[MASKED:pair] y"
    assert masker.mask("x zz1234 y") == "x [MASKED:whole] y"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_generic_value_loses_trailing_punctuation_and_a_specific_one_keeps_it(engine: str) -> None:
    generic = SecretMasker(rules=[_rule(generic=True)], engine=engine)
    specific = SecretMasker(rules=[_rule()], engine=engine)
    assert generic.mask("set k=Xk9qLm2Zp7Rt., next") == "set k=[MASKED:probe]., next"
    assert specific.mask("set k=Xk9qLm2Zp7Rt., next") == "set k=[MASKED:probe] next"
    assert generic.mask("set k=., next") == "set k=., next"  # nothing left once stripped


# -- known values: the edges of what is accepted -----------------------------------------------------


def test_a_secret_of_exactly_the_minimum_length_is_masked_and_one_shorter_is_refused() -> None:
    value = "Zq8#kW2!"[:MIN_SECRET_LENGTH]
    assert SecretMasker([value]).mask(f"a {value} b") == "a [MASKED:known-secret] b"
    with pytest.raises(ConfigError, match=f"{MIN_SECRET_LENGTH - 1} characters is too short"):
        SecretMasker([value[:-1]])


def test_a_secret_added_under_a_name_is_masked_under_that_name() -> None:
    masker = SecretMasker()
    masker.add_secret(KNOWN, "deploy-key-2")
    assert masker.mask(f"x {KNOWN}") == "x [MASKED:deploy-key-2]"
    assert masker.hits == {"deploy-key-2": 1}


@pytest.mark.parametrize("name", ["Deploy", "deploy_key", "key!", ""])
def test_a_secret_name_outside_lowercase_digits_and_dashes_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(name))):
        SecretMasker().add_secret(KNOWN, name)


def test_adding_the_same_secret_twice_keeps_its_first_name() -> None:
    masker = SecretMasker([KNOWN])
    masker.add_secret(KNOWN, "other-name")
    assert masker.mask(KNOWN) == "[MASKED:known-secret]"


def test_a_stream_opened_before_a_secret_is_added_keeps_what_it_started_with() -> None:
    masker = SecretMasker()
    before = masker.stream()
    masker.add_secret(KNOWN)
    after = masker.stream()
    assert before.feed(f"x {KNOWN} y") + before.flush() == f"x {KNOWN} y"
    assert after.feed(f"x {KNOWN} y") + after.flush() == "x [MASKED:known-secret] y"


def test_the_holdback_is_twice_the_longest_match_plus_twice_the_context() -> None:
    masker = SecretMasker([KNOWN], rules=[NEVER])
    longest = max(NEVER.max_length, *(len(f) for f in known_forms(KNOWN)))
    assert masker.holdback == 2 * longest + 2 * CONTEXT
    plain = SecretMasker(rules=[NEVER])
    assert plain.holdback == 2 * NEVER.max_length + 2 * CONTEXT
    assert SecretMasker().holdback == 2 * max(r.max_length for r in default_rules()) + 2 * CONTEXT


# -- stream edges ------------------------------------------------------------------------------------


def test_a_byte_stream_cut_inside_a_character_ends_with_a_replacement_character() -> None:
    masker = SecretMasker([KNOWN])
    stream = masker.stream()
    out = stream.feed_bytes(f"x {KNOWN} ✓".encode()[:-1]) + stream.flush()
    assert out == "x [MASKED:known-secret] \ufffd"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_secret_inside_an_escape_left_unfinished_at_the_end_of_a_stream_is_masked(engine: str) -> None:
    masker = SecretMasker([KNOWN], engine=engine)
    text = f"done \x1b]0;title {KNOWN}"  # an OSC title never terminated: held back until flush
    stream = masker.stream()
    out = stream.feed(text)
    assert KNOWN not in out
    out += stream.flush()
    assert out == masker.mask(text) == "done \x1b]0;title [MASKED:known-secret]"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_secret_at_the_very_start_of_a_text_with_escapes_after_it_is_masked_in_place(engine: str) -> None:
    masker = SecretMasker([KNOWN], engine=engine)
    text = f"{KNOWN}\x1b[31m red\x1b[0m and \u200bmore"
    assert masker.mask(text) == "[MASKED:known-secret]\x1b[31m red\x1b[0m and \u200bmore"
    assert masker.spans(text) == [(0, len(KNOWN), "known-secret")]


def test_the_fallback_engine_finds_a_secret_fed_one_character_at_a_time() -> None:
    masker = SecretMasker([KNOWN], engine="fallback")
    token = "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB"
    text = f"a {KNOWN} b token={token} c"
    stream = masker.stream()
    out = "".join(stream.feed(ch) for ch in text) + stream.flush()
    assert out == masker.mask(text)
    assert out.count("[MASKED:") == 2 and KNOWN not in out and token not in out


def test_the_fallback_stream_keeps_only_the_longest_literal_between_chunks() -> None:
    prefilter = SecretMasker([KNOWN], engine="fallback")._compiled.prefilter
    assert isinstance(prefilter, KeywordPrefilter)
    stream = prefilter.stream()
    base = 0
    for chunk in ("short", "x" * 5000, "y" * 3):
        stream.scan(chunk, base)
        base += len(chunk)
        assert len(stream._tail) <= prefilter.overlap  # type: ignore[attr-defined]
    assert stream._tail.endswith("yyy")  # type: ignore[attr-defined]
    nothing_literal = KeywordPrefilter([NO_KEYWORDS], [])  # no keyword, no known value: nothing to carry
    assert nothing_literal.overlap == 0
    bare = nothing_literal.stream()
    bare.scan("abc" * 100, 0)
    assert bare._tail == ""  # type: ignore[attr-defined]


def test_a_missing_rules_directory_is_refused_saying_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules([tmp_path / "absent"])
    assert caught.value.hint == "create it or unset HYDRA_MASKING_RULES_DIR"
    assert str(tmp_path / "absent") in caught.value.message


# -- the line masker's holding bounds ----------------------------------------------------------------

OPEN_LINE = "-----BEGIN RSA PRIVATE KEY-----"  # 31 characters, 32 held
BODY_LINE = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2"  # 64 characters, 65 held


def test_a_key_block_is_held_up_to_exactly_the_block_limit_and_released_past_it() -> None:
    line_masker = LineMasker(SecretMasker([KNOWN]))
    for _block in range(2):  # the second block counts from zero again
        assert line_masker.feed_line(OPEN_LINE) == [] and line_masker.holding
        for _ in range(125):  # 32 + 125 * 65 = 8157 held
            assert line_masker.feed_line(BODY_LINE) == []
        last = "Q" * (MAX_KEY_BLOCK - 8157 - 1)  # brings the held size to exactly MAX_KEY_BLOCK: still held
        assert line_masker.feed_line(last) == [] and line_masker.holding
        released = line_masker.feed_line(BODY_LINE)  # one past the limit: masked and released together
        assert released and not line_masker.holding
        assert BODY_LINE not in "\n".join(released) and "[MASKED:" in released[0]
        assert line_masker.feed_line("after") == ["after"]


def test_a_run_of_key_like_lines_is_held_up_to_exactly_the_block_limit() -> None:
    line_masker = LineMasker(SecretMasker([KNOWN]))
    for _ in range(126):  # 126 * 65 = 8190 held
        assert line_masker.feed_line(BODY_LINE) == []
    assert line_masker.feed_line("Q") == []  # 8192: still held, and a short line continues a run
    released = line_masker.feed_line("QQ")
    assert len(released) == 128 and not line_masker.holding


def test_a_short_base64_line_is_held_only_as_the_continuation_of_a_run() -> None:
    line_masker = LineMasker(SecretMasker([KNOWN]))
    assert line_masker.feed_line("abc=") == ["abc="]  # alone: ordinary text, emitted at once
    assert line_masker.feed_line(BODY_LINE) == [] and line_masker.holding
    assert line_masker.feed_line("abc=") == []  # after key material: the end of a base64 body
    released = line_masker.feed_line("$ done")
    assert len(released) == 3 and released[-1] == "$ done" and not line_masker.holding
    assert line_masker.flush() == []


def test_a_key_on_one_line_is_masked_at_once_and_a_new_block_releases_the_held_run() -> None:
    line_masker = LineMasker(SecretMasker())
    one_line = f"{OPEN_LINE}{BODY_LINE}-----END RSA PRIVATE KEY-----"
    assert line_masker.feed_line(one_line) == ["[MASKED:private-key]"]
    assert not line_masker.holding
    assert line_masker.feed_line(BODY_LINE) == []
    released = line_masker.feed_line(OPEN_LINE)  # a block opens: the run before it is released alone
    assert len(released) == 1 and line_masker.holding
    assert len(line_masker.flush()) == 1 and not line_masker.holding


@pytest.mark.parametrize(
    "lines", [["one"], ["one", "two", f"k {KNOWN}"], ["a", f"k {KNOWN}", OPEN_LINE, BODY_LINE, "b"]]
)
def test_line_runs_come_out_in_order_with_every_secret_masked(lines: list[str]) -> None:
    line_masker = LineMasker(SecretMasker([KNOWN]))
    out = line_masker.feed_lines(lines) + line_masker.flush()
    assert out[0] == lines[0] and out[-1] == lines[-1].replace(KNOWN, "[MASKED:known-secret]")
    assert KNOWN not in "\n".join(out) and BODY_LINE not in "\n".join(out)
    if OPEN_LINE not in lines:  # without a key block every line is its own line
        assert len(out) == len(lines)


# -- the fallback engine: rules without keywords are searched everywhere -------------------------------

NO_KEYWORDS = MaskingRule(id="digits", pattern=r"(?<![0-9])[0-9]{12}(?![0-9])")


@pytest.mark.parametrize("chunk", [1, 7, 4096, 5000])
def test_a_rule_without_keywords_is_found_anywhere_in_a_long_text_by_both_engines(chunk: int) -> None:
    filler = "text " * 900  # 4500 characters: matches land on both sides of each 4096 grid line
    text = "".join(f"{filler}{n:012d}" for n in range(1, 4)) + " end"
    expected = "".join(f"{filler}[MASKED:digits]" for _n in range(1, 4)) + " end"
    for engine in ENGINES:
        masker = SecretMasker(rules=[NO_KEYWORDS], engine=engine)
        assert masker.mask(text) == expected, engine
        stream = masker.stream()
        out = "".join(stream.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)) + stream.flush()
        assert out == expected, engine


def test_the_fallback_grid_puts_a_hit_on_every_multiple_of_its_step_in_the_range() -> None:
    prefilter = KeywordPrefilter([NO_KEYWORDS], [])
    assert prefilter.grid_hits(0, 4096) == [(0, 4096)]
    assert prefilter.grid_hits(4096, 8191) == []
    assert prefilter.grid_hits(4095, 12288) == [(0, 4096), (0, 8192), (0, 12288)]
    assert sorted(prefilter.scan("x" * 5000)) == [(0, 4096), (0, 5000)]
    assert prefilter.stream().close(77) == [(0, 77)]


def test_the_fallback_finds_keywords_in_any_case_and_known_values_in_their_exact_case() -> None:
    prefilter = KeywordPrefilter([MaskingRule(id="kw", pattern=r"tok_[0-9]{4}", keywords=("TOK_",))], [KNOWN])
    assert prefilter.literal_hits("a TOK_1234 ß tok_", 10) == [(0, 16), (0, 27)]
    assert prefilter.literal_hits(f"x{KNOWN}", 0) == [(KNOWN_BASE, len(KNOWN) + 1)]
    assert prefilter.literal_hits(KNOWN.upper(), 0) == []
    assert prefilter.overlap == len(KNOWN) - 1


# -- normalisation: exact results --------------------------------------------------------------------


def test_normalising_removes_escapes_and_invisible_characters_with_one_breakpoint_per_removal() -> None:
    text = "a\x1b[31mb\u200bc\x1b]0;t\x07d\x1b[0m\x1b[1m"
    assert normalised_pairs(text) == ("abcd", [(1, 5), (2, 6), (3, 12), (4, 20)])
    assert normalised_pairs("a\x1b[31mb\x1b[0m\x1b[1mc", invisible=False) == ("abc", [(1, 5), (2, 13)])
    assert normalised_pairs("\u200b\u200bab\u00ad") == ("ab", [(0, 2), (2, 3)])
    assert normalised_pairs("a\u200bb", invisible=False) == ("a\u200bb", [])  # the caller said there is none
    assert normalised_pairs("plain text") == ("plain text", [])


@pytest.mark.parametrize(
    ("text", "kept", "carried"),
    [
        ("abc\x1b[3", "abc", "\x1b[3"),
        ("abc\x1b[31m", "abc\x1b[31m", ""),
        ("x\x1b]0;title", "x", "\x1b]0;title"),  # an OSC title is carried whole
        ("x\x1b]0;t\x1b", "x", "\x1b]0;t\x1b"),  # its terminator cut after the ESC: from the OSC's own ESC
        ("a\x1b", "a", "\x1b"),
        ("a\x1b(", "a", "\x1b("),
        ("\x1b[1mab\x1b[", "\x1b[1mab", "\x1b["),  # a complete escape first, then an unfinished one
        ("\x1b[" + "1;" * 299, "", "\x1b[" + "1;" * 299),  # an ESC exactly 600 characters from the end
        ("\x1b[" + "1;" * 299 + "1", "\x1b[" + "1;" * 299 + "1", ""),  # 601: too far back to be carried
    ],
)
def test_only_an_unfinished_escape_at_the_end_of_a_chunk_is_carried_to_the_next(
    text: str, kept: str, carried: str
) -> None:
    assert split_incomplete(text) == (kept, carried)


@pytest.mark.parametrize(
    ("text", "invisible"),
    [
        ("plain ascii", False),
        ("a\u200bb", True),
        ("\u201cquoted\u201d \u2014 dash", False),  # shares the E2 80 bytes with the zero-width marks
        ("\u201ca\u200d\u201d", True),
        ("\u00e9\u00ad", True),
        ("\u00e9\u00e0", False),
        ("x\ufeff", True),
        ("\u2061", True),
    ],
)
def test_invisible_characters_are_told_apart_from_punctuation_that_shares_their_bytes(
    text: str, invisible: bool
) -> None:
    assert has_invisible(text) is invisible


def test_removable_sequences_are_looked_for_at_every_esc_and_invisible_character_in_order() -> None:
    assert _candidates("a\x1bb\u200bc\x1bd\ufeff") == [1, 3, 5, 7]
    assert _candidates("nothing here") == []


def test_the_offset_map_sends_normalised_offsets_back_to_the_original_text() -> None:
    offsets = OffsetMap()
    offsets.extend(0, 0, ([3, 5], [2, 6]))
    assert [offsets.original(i) for i in range(8)] == [0, 1, 2, 5, 6, 11, 12, 13]
    offsets.extend(10, 20, ([], []))  # a piece appended further on, with its own shift
    assert offsets.original(10) == 20 and offsets.original(12) == 22
    offsets.trim(11)
    assert offsets.original(12) == 22 and offsets.original(11) == 21
    leading = OffsetMap()
    leading.extend(0, 0, ([0, 2], [4, 5]))  # removed characters at the very start
    assert [leading.original(i) for i in range(4)] == [4, 5, 7, 8]


# -- engines: offsets, windows, choice ---------------------------------------------------------------


def test_byte_offsets_of_hits_become_character_offsets_counted_from_the_start_of_their_character() -> None:
    text = "\u2713x\u00e9!"  # 3 + 1 + 2 + 1 bytes
    hits = [(1, 7), (0, 3), (2, 2), (3, 4)]  # (2, 2) ends inside the check mark: it counts from its start
    assert _char_offsets(text, text.encode(), hits, 10) == [(2, 10), (0, 11), (3, 12), (1, 14)]
    assert _char_offsets("abc", b"abc", [(1, 3), (0, 1)], 5) == [(1, 8), (0, 6)]


def test_byte_offsets_counted_from_either_end_give_the_characters_before_them() -> None:
    rng = random.Random(11)
    for _ in range(300):
        text = "".join(rng.choice("ab \u2713\u00e9\U0001f600") for _ in range(rng.randint(1, 60)))
        data = text.encode()
        hits = [(j, rng.randint(0, len(data))) for j in range(rng.randint(1, 8))]
        expected = []
        for j, end in sorted(hits, key=lambda h: h[1]):
            while 0 < end < len(data) and data[end] & 0xC0 == 0x80:
                end -= 1
            expected.append((j, 100 + len(data[:end].decode())))
        got = _char_offsets(text, data, hits, 100)
        assert sorted(got) == sorted(expected)
        if not text.isascii():  # (ASCII text keeps the engine's own order, ascending per database)
            assert got == expected
        cuts = sorted({0, *rng.sample(range(len(text) + 1), min(3, len(text) + 1))})  # pieces, as normalising cuts
        landmarks = Utf8(data, [len(text[:c].encode()) for c in cuts], cuts)
        with_landmarks = _char_offsets(text, data, hits, 100, landmarks)
        assert with_landmarks == expected if not text.isascii() else sorted(with_landmarks) == sorted(expected)


def test_a_rules_search_window_is_its_hit_bounds_capped_at_its_widest_match() -> None:
    rules = [
        MaskingRule(id="a", pattern=r"x[0-9]{10}"),
        MaskingRule(id="b", pattern=r"x[0-9]{10}", before_hit=3, after_hit=0),
        MaskingRule(id="c", pattern=r"x[0-9]{10}", before_hit=50, after_hit=50),
    ]
    assert _reach(rules) == (11, 3, 11)
    assert _ahead(rules) == (11, 0, 11)


def test_the_engine_is_chosen_by_name_and_auto_falls_back_without_hyperscan(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_prefilter([NEVER], [KNOWN], engine="fallback"), KeywordPrefilter)
    if hyperscan_available():
        assert isinstance(make_prefilter([NEVER], [KNOWN], engine="hyperscan"), HyperscanPrefilter)
        assert isinstance(make_prefilter([NEVER], [KNOWN]), HyperscanPrefilter)
    monkeypatch.setattr(engine_module, "_hs", None)
    assert not hyperscan_available()
    assert SecretMasker([KNOWN]).engine == "aho-corasick fallback"  # the default engine is auto
    assert isinstance(make_prefilter([NEVER], [KNOWN], engine="auto"), KeywordPrefilter)
    with pytest.raises(RuntimeError, match="hyperscan package is not installed"):
        make_prefilter([NEVER], [KNOWN], engine="hyperscan")


@pytest.mark.parametrize("engine", ENGINES)
def test_the_engines_report_every_known_literal_at_its_end(engine: str) -> None:
    other = "second-known-value-0a1b2c"
    prefilter = make_prefilter([NEVER], [KNOWN, other], engine=engine)
    text = f"{other} and {KNOWN}"
    hits = {h for h in prefilter.scan(text) if h[0] >= KNOWN_BASE}
    assert hits == {(KNOWN_BASE + 1, len(other)), (KNOWN_BASE, len(text))}
    stream = prefilter.stream()
    streamed = stream.scan(text[:30], 0) + stream.scan(text[30:], 30) + stream.close(len(text))
    assert {h for h in streamed if h[0] >= KNOWN_BASE} == hits


# -- counting and reporting --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_counts_each_mask_once_by_rule(engine: str) -> None:
    masker = SecretMasker([KNOWN], engine=engine)
    stream = masker.stream()
    text = f"a {KNOWN} b AKIAIOSFODNN7EXAMPLE c {KNOWN} d " + "filler " * 300
    for i in range(0, len(text), 50):
        stream.feed(text[i : i + 50])
    stream.feed("more text after the secrets " * 50)
    stream.flush()
    assert masker.hits == {"known-secret": 2, "aws-access-key": 1}


def test_spans_name_what_masking_would_replace_in_the_original_offsets_without_counting() -> None:
    masker = SecretMasker([KNOWN], rules=[NEVER])
    text = f"\x1b[1m{KNOWN}\x1b[0m x"
    assert masker.spans(text) == [(4, 4 + len(KNOWN), "known-secret")]
    assert masker.spans("") == [] and masker.spans("nothing") == []
    assert masker.mask("") == ""
    assert masker.hits == {}


def test_a_masker_reports_its_engine_and_rules_in_order() -> None:
    rules = [NEVER, NO_KEYWORDS]
    masker = SecretMasker(rules=rules, engine="fallback")
    assert masker.engine == "aho-corasick fallback"
    assert masker.rule_names == ["never", "digits"] and masker.rules == tuple(rules)
    if hyperscan_available():
        assert SecretMasker(rules=rules, engine="hyperscan").engine == "hyperscan"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 13])
def test_known_values_streamed_in_small_chunks_are_masked_exactly_as_the_whole_text(engine: str, size: int) -> None:
    other = "second-known-value-0a1b2c"
    masker = SecretMasker([KNOWN, other], rules=[NEVER], engine=engine)
    text = (
        f"start {KNOWN}{other} \x1b[1m{KNOWN[:9]}\x1b[0m{KNOWN[9:]} x {KNOWN.encode().hex()} "
        f"end {'z' * 80}{KNOWN}"
    )
    masker_whole = SecretMasker([KNOWN, other], rules=[NEVER], engine=engine)
    stream = masker.stream()
    pieces = [stream.feed(text[i : i + size]) for i in range(0, len(text), size)]
    out = "".join(pieces) + stream.flush()
    assert out == masker_whole.mask(text)
    assert KNOWN not in out and other not in out and out.count("[MASKED:known-secret]") == 5
    assert "".join(pieces).startswith("start [MASKED:known-secret]")  # emitted before the end


# -- rules as data -----------------------------------------------------------------------------------


def test_a_rule_may_match_exactly_the_widest_allowed_and_one_more_is_refused_with_the_width() -> None:
    assert MaskingRule(id="w", pattern=f"a{{{MAX_RULE_WIDTH}}}").max_length == MAX_RULE_WIDTH
    with pytest.raises(ValidationError, match=f"rule 'w' can match {MAX_RULE_WIDTH + 1} characters"):
        MaskingRule(id="w", pattern=f"a{{{MAX_RULE_WIDTH + 1}}}")
    with pytest.raises(ValidationError, match="rule 'w' can match unboundedly many characters"):
        MaskingRule(id="w", pattern="a+")


def test_keywords_of_two_characters_are_kept_lower_case_and_one_character_is_refused_naming_it() -> None:
    assert MaskingRule(id="k", pattern="abc", keywords=("AbC", "xY")).keywords == ("abc", "xy")
    with pytest.raises(ValidationError, match="keyword 'a' is shorter than 2 characters"):
        MaskingRule(id="k", pattern="abc", keywords=("ab", "a"))


def test_each_allow_pattern_excuses_a_value_only_when_it_matches_the_whole_value() -> None:
    rule = _rule(allow=["abc", "def"])
    assert not accept(rule, "abc", "") and not accept(rule, "def", "")
    assert accept(rule, "abcdef", "") and accept(rule, "xabc", "")
    assert _rule().allow_regex is None


def test_a_rules_value_groups_are_found_in_order() -> None:
    assert _rule().value_groups == ("v",)
    both = MaskingRule(id="g", pattern=r"a=(?P<v>\d{1,9})|b=(?P<v2>\w{1,9})")
    assert both.value_groups == ("v", "v2")
    assert MaskingRule(id="g", pattern=r"zz[0-9]{4}").value_groups == ()


def test_operator_rule_files_are_read_in_name_order_and_a_later_file_replaces_an_earlier_rule(tmp_path: Path) -> None:
    def rule_file(rule_id: str, keyword: str) -> str:
        return f"rules:\n  - id: {rule_id}\n    pattern: '{keyword}[0-9]{{8}}'\n    keywords: ['{keyword}']\n"

    (tmp_path / "b.yaml").write_text(rule_file("beta", "bbq_") + "  - id: alpha\n    pattern: 'zz[0-9]{8}'\n")
    (tmp_path / "a.yaml").write_text(rule_file("alpha", "aaq_"))
    (tmp_path / "c.yml").write_text("not: [a rule file")  # only *.yaml files are rule files
    rules = load_rules([tmp_path])
    assert [r.id for r in rules[-2:]] == ["alpha", "beta"]
    assert rules[-2].pattern == "zz[0-9]{8}"  # b.yaml came after a.yaml and replaced its rule in place
    assert [r.id for r in rules[: len(default_rules())]] == [r.id for r in default_rules()]


def test_rule_ids_are_unique_in_the_built_in_rules() -> None:
    ids = [r.id for r in default_rules()]
    assert len(ids) == len(set(ids))


# -- long streams: the buffers are trimmed as text is emitted -----------------------------------------

SHORT_RULES = [r for r in default_rules() if r.max_length <= 300]  # a small holdback: trimming starts early


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(6))
def test_a_long_stream_trimmed_as_it_goes_is_masked_exactly_as_the_whole_text(engine: str, seed: int) -> None:
    rng = random.Random(seed)
    decorations = ["\x1b[31m", "\x1b[0m", "\u200b", "\u00ad", " ", "\n", "x" * 40, "caf\u00e9 ", KNOWN]
    pieces = [t for r in SHORT_RULES for t in r.examples.secret if "\n" not in t]
    text = "".join(rng.choice(pieces) + rng.choice(decorations) for _ in range(60))
    masker = SecretMasker([KNOWN], rules=SHORT_RULES, engine=engine)
    stream = masker.stream()
    out, i = [], 0
    while i < len(text):
        size = rng.randint(1, 90)
        out.append(stream.feed(text[i : i + size]))
        i += size
    assert "".join(out) + stream.flush() == masker.mask(text)


def test_a_stream_holds_back_no_more_than_the_longest_literal_and_the_slack() -> None:
    masker = SecretMasker([KNOWN], rules=[NEVER])
    longest = max(len(f) for f in known_forms(KNOWN))
    stream = masker.stream()
    emitted = stream.feed("z" * 300)
    assert 300 - len(emitted) <= longest + SLACK
    assert emitted + stream.feed(KNOWN) + stream.flush() == "z" * 300 + "[MASKED:known-secret]"


def test_the_quoted_printable_form_of_a_value_ending_in_a_newline_is_masked_without_it() -> None:
    value = "pass=word1\n"  # a secret read from a file keeps its newline
    assert SecretMasker([value], rules=[NEVER]).mask("q: pass=3Dword1 end") == "q: [MASKED:known-secret] end"


def test_a_rule_file_with_a_repeated_id_is_refused_saying_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / "dup.yaml").write_text("rules:\n  - {id: x, pattern: abc}\n  - {id: x, pattern: abd}\n")
    with pytest.raises(ConfigError) as caught:
        load_rules([tmp_path])
    assert caught.value.message == f"{tmp_path / 'dup.yaml'}: rule id 'x' appears twice"
    assert caught.value.hint == "give every rule its own id"


@pytest.mark.parametrize("engine", ENGINES)
def test_text_holding_lone_surrogates_is_masked_and_kept(engine: str) -> None:
    # a JSON string may carry "\udcff"; the masker must not fail on it or drop it
    masker = SecretMasker([KNOWN], engine=engine)
    assert masker.mask(f"\udcff {KNOWN} \udcfe") == "\udcff [MASKED:known-secret] \udcfe"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_known_value_that_a_rule_also_matches_is_named_as_the_known_secret(engine: str) -> None:
    token = "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB"
    assert SecretMasker(engine=engine).mask(f"tok {token} end") == "tok [MASKED:github-token] end"
    assert SecretMasker([token], engine=engine).mask(f"tok {token} end") == "tok [MASKED:known-secret] end"


def test_a_hit_ending_inside_the_first_character_counts_from_the_start_of_the_text() -> None:
    assert _char_offsets("\u2713x", "\u2713x".encode(), [(0, 1)], 0) == [(0, 0)]


# -- gaps mutation testing found, fixed -------------------------------------------------------------


def test_a_secret_that_is_another_secrets_upper_case_still_gets_its_own_encodings() -> None:
    masker = SecretMasker(["abcdefghij-token"])
    masker.add_secret("ABCDEFGHIJ-TOKEN")
    assert "[MASKED:known-secret]" in masker.mask(base64.b64encode(b"ABCDEFGHIJ-TOKEN").decode())


def test_a_secret_holding_an_undecodable_byte_from_the_environment_is_masked_in_every_form() -> None:
    value = "abc\udcffdefgh"  # what os.environ gives for the bytes b"abc\xffdefgh"
    masker = SecretMasker([value])
    assert masker.mask(f"x {value} y") == "x [MASKED:known-secret] y"
    assert masker.mask("x abc%FFdefgh y") == "x [MASKED:known-secret] y"
    assert "[MASKED:known-secret]" in masker.mask("x " + base64.b64encode(b"abc\xffdefgh").decode() + " y")


def test_a_secret_read_with_a_trailing_newline_is_masked_when_printed_without_it() -> None:
    masker = SecretMasker(["hunter2-secret-value\n"])  # e.g. read from a file that ends with a newline
    assert masker.mask("echo hunter2-secret-value;") == "echo [MASKED:known-secret];"
    # the base64 characters that depend on the value alone are masked (the last ones depend on padding)
    assert masker.mask(base64.b64encode(b"hunter2-secret-value").decode()) == "[MASKED:known-secret]U="


@pytest.mark.parametrize("engine", ["hyperscan", "fallback"])
def test_a_masker_without_rules_still_masks_known_values(engine: str) -> None:
    masker = SecretMasker(["abcdefghij-token"], rules=[], engine=engine)
    assert masker.mask("x abcdefghij-token AKIAIOSFODNN7EXAMPLE") == "x [MASKED:known-secret] AKIAIOSFODNN7EXAMPLE"


def test_a_key_block_opened_inside_a_run_of_lines_is_held_until_it_closes() -> None:
    line_masker = LineMasker(SecretMasker([KNOWN]))
    assert line_masker.feed_lines(["$ cat key.pem", OPEN_LINE, "Proc-Type: 4,ENCRYPTED"]) == ["$ cat key.pem"]
    assert line_masker.holding
    released = line_masker.feed_lines([BODY_LINE, "-----END RSA PRIVATE KEY-----", "$ done"])
    assert BODY_LINE not in "\n".join(released) and released[-1] == "$ done" and not line_masker.holding
