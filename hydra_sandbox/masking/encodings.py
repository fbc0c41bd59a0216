"""The forms a known secret value takes in text: plain (and in either case, and reversed), hex, URL
encoding, JSON escaping, quoted-printable, and base64 (standard and URL-safe, wrapped at 64 or 76
columns or not, and base64 of base64).

A value inside a longer base64 text has three possible alignments; for each, only the characters that do
not depend on the neighbours are a fixed form. Every form is a literal the engine looks for.
"""

from __future__ import annotations

import base64
import json
import math
import quopri
import re
import urllib.parse

MIN_SECRET_LENGTH = 8
"""Values shorter than this are refused: masking them would hit ordinary text."""

_WRAP_WIDTHS = (64, 76)
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _stable_base64(raw: bytes) -> list[str]:
    """For each of the three alignments ``raw`` can have inside a longer base64 text, the encoded
    characters that depend on ``raw`` alone."""
    out = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        first = math.ceil(8 * shift / 6)
        last = (8 * (shift + len(raw))) // 6
        out.append(encoded[first:last])
    return out


def _wrapped(form: str) -> set[str]:
    """``form`` with line breaks where a wrapped base64 text may put them: every phase of every width."""
    out: set[str] = set()
    for width in _WRAP_WIDTHS:
        for phase in range(1, min(width, len(form))):
            for newline in ("\n", "\r\n"):
                pieces = [form[:phase]] + [form[i : i + width] for i in range(phase, len(form), width)]
                out.add(newline.join(pieces))
    return out


def _url_forms(raw: bytes) -> set[str]:
    forms = {urllib.parse.quote(raw, safe=""), urllib.parse.quote(raw), urllib.parse.quote_plus(raw, safe="")}
    return forms | {_PERCENT.sub(lambda m: m.group(0).lower(), f) for f in forms}


def _json_forms(value: str) -> set[str]:
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return forms | {f.replace("/", "\\/") for f in forms}


def known_forms(value: str) -> set[str]:
    """Every literal under which ``value`` is masked, each at least :data:`MIN_SECRET_LENGTH` long."""
    # a value read from the environment holds an undecodable byte as a lone surrogate (surrogateescape):
    # its encoded forms are of that byte; any other lone surrogate is kept as UTF-8 would carry it
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    forms = {value, value.upper(), value.lower(), value[::-1], raw.hex(), raw.hex().upper()}
    forms |= _url_forms(raw) | _json_forms(value)
    forms.add(quopri.encodestring(raw).decode("ascii").removesuffix("\n"))
    for stable in _stable_base64(raw):
        forms.add(stable)
        forms.add(stable.replace("+", "-").replace("/", "_"))
        forms |= _wrapped(stable)
        for inner in _stable_base64(stable.encode()):  # base64 of a text that holds the base64 form
            forms.add(inner)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
