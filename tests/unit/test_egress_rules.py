"""The pure egress rules: which host names and which addresses an allowlist may ever lead to."""

from __future__ import annotations

import ipaddress

import pytest

from hydra_sandbox.egress_rules import connect_host_name, embedded_ipv4, forbidden_address, policy_domain
from hydra_sandbox.errors import ConfigError
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
    with pytest.raises(ValueError, match=why):
        policy_domain(value)
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
        with pytest.raises(ValueError, match=why):
            connect_host_name(bad)


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
