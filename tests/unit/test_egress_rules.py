"""The pure egress rules: which host names and which addresses an allowlist may ever lead to."""

from __future__ import annotations

import ipaddress

import pytest

from hydra_sandbox.egress_rules import (
    MAX_NAME,
    connect_host_name,
    embedded_ipv4,
    forbidden_address,
    ip_literal,
    policy_domain,
)
from hydra_sandbox.errors import ConfigError, shown
from hydra_sandbox.policy import NetworkPolicy, Policy
from hydra_sandbox.yaml_models import validate_data


def test_policy_domains_are_normalised_to_plain_ldh_names_with_idna_encoded_explicitly() -> None:
    policy = NetworkPolicy(
        mode="allowlist",
        allow_domains=[" PyPI.Example.ORG. ", "bücher.example", "pypi.example.org", "xn--bcher-kva.example"],
    )
    assert policy.allow_domains == ["pypi.example.org", "xn--bcher-kva.example"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("attacker.example\x00.allowed.test", "control character"),
        ("127.0.0.1\x00.allowed.test", "control character"),
        ("allowed.test\n", "control character"),
        ("a b.example", "LDH"),
        ("pypi.example.org/simple", "LDH"),
        ("pypi.example.org:443", "LDH"),
        ("*.example.org", "LDH"),
        ("under_score.example", "LDH"),
        ("-lead.example", "LDH"),
        ("trail-.example", "LDH"),
        ("a..example", "LDH"),
        ("x" * 64 + ".example", "LDH"),
        (("a" * 60 + ".") * 5 + "com", "longer than 253"),
        ("xn--zz.example", "not valid IDNA"),
        ("127.1", "must start with a letter"),
        ("10.0.0.1", "must start with a letter"),
        ("0x7f.0.0.1", "must start with a letter"),
        ("2130706433", "must start with a letter"),
        ("", "empty"),
        (".", "empty"),
    ],
)
def test_policy_domains_refuse_anything_but_an_ldh_name(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as refused:
        policy_domain(value)
    assert str(refused.value).startswith(shown(value)), "the error names the value it refused"
    with pytest.raises(ConfigError, match="not a domain name"):
        validate_data(Policy, {"name": "p", "network": {"mode": "allowlist", "allow_domains": [value]}}, "test")


def test_connect_names_must_arrive_ascii_while_case_and_one_trailing_dot_are_normalised() -> None:
    assert connect_host_name("API.Example.Test.") == "api.example.test"
    assert connect_host_name("xn--bcher-kva.example") == "xn--bcher-kva.example"
    for bad, why in [
        ("bücher.example", "not ASCII"),
        ("\u0430pi.example.test", "not ASCII"),  # a Cyrillic a
        ("api.example.test..", "LDH"),
        ("api.example.test\x00", "control character"),
        ("api%2eexample.test", "LDH"),
    ]:
        with pytest.raises(ValueError, match=why) as refused:
            connect_host_name(bad)
        assert str(refused.value).startswith(shown(bad)), "the error names the value it refused"


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("2002:7f00:1::1", "127.0.0.1"),  # 6to4 of loopback
        ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4 of the metadata address
        ("2002:a00:1::", "10.0.0.1"),  # 6to4 of RFC 1918
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo client (stored inverted)
        ("2001:0:a9fe:a9fe::1", "169.254.169.254"),  # Teredo server
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
        ("64:ff9b:1::a00:1", "10.0.0.1"),  # NAT64 local-use prefix
        ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("::ffff:0:7f00:1", "127.0.0.1"),  # IPv4-translated (SIIT)
        ("2606:4700::5efe:a9fe:a9fe", "169.254.169.254"),  # ISATAP interface identifier
        ("2606:4700::200:5efe:7f00:1", "127.0.0.1"),  # ISATAP, universal/local bit set
    ],
)
def test_ipv6_addresses_carrying_a_forbidden_ipv4_are_forbidden(address: str, embedded: str) -> None:
    ip = ipaddress.IPv6Address(address)
    assert ipaddress.IPv4Address(embedded) in embedded_ipv4(ip)
    assert forbidden_address(address) is True


@pytest.mark.parametrize("address", ["2002:808:808::1", "2606:4700::5efe:808:808", "2606:4700::1111"])
def test_ipv6_addresses_carrying_a_public_ipv4_are_judged_like_it(address: str) -> None:
    assert forbidden_address(address) is False


def test_an_ipv6_scope_id_does_not_hide_a_link_local_address() -> None:
    assert forbidden_address("fe80::1%eth0") is True


def test_an_interface_suffix_never_hides_an_ipv4_address_either() -> None:
    assert forbidden_address("10.0.0.1%eth0") is True and forbidden_address("8.8.8.8%eth0") is False
    assert forbidden_address("10.0.0.1%eth0%1") is True, "everything after the first % is the suffix"


def test_a_name_of_exactly_253_characters_and_single_label_names_are_accepted() -> None:
    longest = ("a" * 62 + ".") * 4 + "b" * (MAX_NAME - 63 * 4)
    assert len(longest) == MAX_NAME and policy_domain(longest) == longest
    with pytest.raises(ValueError, match="longer than 253"):
        policy_domain(longest + "b")
    assert policy_domain("localhost") == connect_host_name("localhost") == "localhost"
    # only the last label must start with a letter; inner labels may start with a digit
    assert connect_host_name("a.1b.example") == "a.1b.example"
    with pytest.raises(ValueError, match="must start with a letter"):
        connect_host_name("example.1a")


def test_a_refused_label_is_shown_cut_to_63_characters() -> None:
    with pytest.raises(ValueError) as refused:
        policy_domain("x" * 70 + ".example")
    assert str(refused.value).endswith(
        f"label {'x' * 63!r} is not a plain LDH label (letters, digits and inner hyphens, 1-63 characters)"
    )


def test_unicode_policy_domains_are_case_folded_before_idna_encoding_and_invalid_ones_refused() -> None:
    assert policy_domain("BÜCHER.Example") == "xn--bcher-kva.example"
    with pytest.raises(ValueError) as bad:
        policy_domain("\u2603.example")
    assert str(bad.value).startswith(f"{shown(chr(0x2603) + '.example')} is not a valid international domain name (")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("[127.0.0.1]", "127.0.0.1"),
        ("[::1", None),
        ("::1]", None),
        ("[]", None),
        ("localhost", None),
    ],
)
def test_ip_literals_are_recognised_with_or_without_ipv6_brackets(text: str, expected: str | None) -> None:
    found = ip_literal(text)
    assert (str(found) if found is not None else None) == expected


@pytest.mark.parametrize(
    "address",
    [
        "ff02::1",  # IPv6 multicast
        "fec0::1",  # IPv6 site-local (deprecated, still routed inside some networks)
        "4000::1",  # IPv6 reserved by the IETF
        "::",  # IPv6 unspecified
        "64:ff9b:1::808:808",  # NAT64 local-use prefix, even when it carries a public IPv4
        "224.0.0.251",  # IPv4 multicast
        "100.127.255.254",  # the top of carrier-grade NAT
    ],
)
def test_addresses_outside_the_public_unicast_space_are_forbidden(address: str) -> None:
    assert forbidden_address(address) is True


def test_an_ipv6_address_carrying_no_ipv4_carries_none() -> None:
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("2002:808:808::1")) == [ipaddress.IPv4Address("8.8.8.8")]
