"""What an egress destination may be: the pure rules, shared by the relays and the policy model.

* **Host names** are plain LDH names (letters, digits, hyphens; labels of 1-63 characters, 253 in
  all). A Unicode name in a *policy* is converted to its IDNA A-labels (``xn--...``) here, explicitly;
  a name arriving at a relay must already be in that form. NULs, control characters, spaces and any
  other byte are refused before anything looks the name up, because the resolver reads a C string and
  would stop at a NUL the allowlist check never saw (``attacker.example\\0.allowed.test``).
* **Numeric look-alikes** such as ``127.1``, ``0x7f.0.0.1`` or ``2130706433`` are not names: the last
  label must start with a letter (top-level domains do), so a resolver's IPv4 shorthand never applies.
* **Addresses** are refused when loopback, private, link-local, multicast, reserved, unspecified or
  carrier-grade NAT, and an IPv6 address that carries an IPv4 address (mapped, compatible, translated,
  6to4, Teredo, NAT64, ISATAP) is refused when the IPv4 it carries would be.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from hydra_sandbox.errors import shown as shown_value

MAX_NAME = 253

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


def _check_ldh(name: str, shown: str) -> str:
    if not name:
        raise ValueError(f"{shown} is empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"{shown} is longer than {MAX_NAME} characters")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{shown}: label {label[:63]!r} is not a plain LDH label (letters, digits and inner hyphens, "
                "1-63 characters)"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError as exc:
                raise ValueError(f"{shown}: label {label!r} is not valid IDNA ({exc})") from None
    if not labels[-1][0].isalpha():
        raise ValueError(f"{shown}: the last label must start with a letter (an IP address is not a name)")
    return name


def connect_host_name(text: str) -> str:
    """A host name as a client sent it to a relay: ASCII LDH only (send ``xn--`` labels for IDNs).
    Case and one trailing dot are normalised away. Raises ``ValueError`` saying what is wrong."""
    shown = shown_value(text)
    if _CONTROL.search(text):
        raise ValueError(f"{shown} contains a control character (NUL, newline, ...)")
    if not text.isascii():
        raise ValueError(f"{shown} is not ASCII; send the IDNA form (xn--...) of an international name")
    name = text.lower()
    name = name[:-1] if name.endswith(".") else name
    return _check_ldh(name, shown)


def policy_domain(text: str) -> str:
    """A domain as a policy names it: surrounding spaces, case and a trailing dot are ignored, and a
    Unicode name is converted to its IDNA A-labels here. Raises ``ValueError``."""
    shown = shown_value(text)
    if _CONTROL.search(text):
        raise ValueError(f"{shown} contains a control character (NUL, newline, ...)")
    name = text.strip()
    name = name[:-1] if name.endswith(".") else name
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"{shown} is not a valid international domain name ({exc})") from None
    return _check_ldh(name.lower(), shown)


def ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address (``[v6]`` brackets allowed), or ``None`` when it is not one."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(inner)
    except ValueError:
        return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries by a transition mechanism (possibly none)."""
    value = int(ip)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _COMPATIBLE or ip in _TRANSLATED or ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(low32)
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip in _TEREDO and ip.teredo is not None:
        found.extend(ip.teredo)  # (server, client): the client is stored inverted; ``teredo`` undoes it
    if ((value >> 32) & 0xFFFFFFFF) in _ISATAP_IDS:
        found.append(low32)
    return found


def _forbidden_v4(ip: ipaddress.IPv4Address) -> bool:
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in _CGNAT
    )


def forbidden_address(address: str) -> bool:
    """Whether a resolved address is one no agent may reach through an allowlist (see module doc)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _forbidden_v4(ip)
    if any(_forbidden_v4(v4) for v4 in embedded_ipv4(ip)):
        return True
    if ip in _NAT64_LOCAL:
        return True
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )
