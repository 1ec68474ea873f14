"""The guard against internal outbound addresses (spec §5)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from capd.outbound.guard import AddressGuard, is_internal, literal_address

INTERNAL = ["127.0.0.1", "127.255.0.9", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
            "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1", "::1", "::",
            "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1",
            "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2130706433", "017700000001",
            "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1", "[::1]"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "134744072"]


@pytest.mark.parametrize("host", INTERNAL)
def test_internal_spellings(host: str) -> None:
    addr = literal_address(host)
    assert addr is not None and is_internal(addr)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses(host: str) -> None:
    addr = literal_address(host)
    assert addr is not None and not is_internal(addr)


def fixed(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]
    return resolve


def test_names_are_resolved_and_every_address_checked() -> None:
    guard = AddressGuard(resolver=fixed({"good.test": ["8.8.8.8"],
                                         "mixed.test": ["8.8.8.8", "10.0.0.1"],
                                         "rebind.test": ["::ffff:127.0.0.1"]}))
    assert asyncio.run(guard.allows("good.test"))
    assert not asyncio.run(guard.allows("mixed.test"))
    assert not asyncio.run(guard.allows("rebind.test"))
    assert not asyncio.run(guard.allows("unknown.test"))


def test_operator_may_allow_private_addresses() -> None:
    guard = AddressGuard(allow_private=True, resolver=fixed({}))
    assert asyncio.run(guard.allows("127.0.0.1"))
    assert not asyncio.run(guard.allows("unknown.test"))  # still has to resolve


@pytest.mark.parametrize(("host", "form"), [
    ("::7f00:1", "IPv4-compatible ::127.0.0.1"), ("::127.0.0.1", "IPv4-compatible, dotted"),
    ("::a00:1", "IPv4-compatible ::10.0.0.1"), ("::808:808", "IPv4-compatible, public v4"),
    ("::ffff:0:7f00:1", "IPv4-translated ::ffff:0:127.0.0.1"),
    ("::ffff:0:127.0.0.1", "IPv4-translated, dotted"),
    ("64:ff9b::7f00:1", "NAT64 well-known prefix, loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 well-known prefix, link-local metadata address"),
    ("64:ff9b:1::7f00:1", "NAT64 local-use prefix"),
    ("64:ff9b:1:7f00:1::", "NAT64 local-use prefix, /48 embedding"),
    ("64:ff9b:1::808:808", "NAT64 local-use prefix, public v4 embedded"),
    ("::2", "reserved ::/8"), ("[::2]", "reserved ::/8, bracketed"),
    ("fec0::1", "deprecated site-local"), ("ff0e::1", "global-scope multicast"),
    ("4000::1", "unallocated, outside 2000::/3"),
])
def test_ipv6_forms_that_reach_inward_are_internal(host: str, form: str) -> None:
    addr = literal_address(host)
    assert addr is not None and is_internal(addr), form
    assert not asyncio.run(AddressGuard(resolver=fixed({})).allows(host)), form


V4_SPECIAL_SAMPLES = [
    "0.1.2.3", "192.0.0.5", "192.0.0.170", "192.0.0.171", "192.0.2.7", "198.18.0.1",
    "198.19.255.254", "198.51.100.1", "203.0.113.9", "100.127.255.254", "239.255.255.250",
    "255.255.255.255"]
V6_SPECIAL_SAMPLES = [
    "100::1", "100::ffff:ffff:ffff:ffff", "2001::1", "2001:0:4136:e378::1", "2001:1::1",
    "2001:1::2", "2001:1::3", "2001:2::1", "2001:3::1", "2001:4:112::1", "2001:10::1",
    "2001:20::1", "2001:30::1", "2001:1ff::1", "2001:db8::1", "2620:4f:8000::1", "3fff::1",
    "3fff:fff::1", "5f00::1", "fc00::1", "fdff::1", "fe80::1", "febf::1"]


@pytest.mark.parametrize("host", V4_SPECIAL_SAMPLES + V6_SPECIAL_SAMPLES)
def test_every_special_purpose_range_is_internal(host: str) -> None:
    addr = literal_address(host)
    assert addr is not None and is_internal(addr), host


def test_every_enforced_registry_entry_is_internal() -> None:
    from capd.outbound.guard import IPV4_SPECIAL, IPV6_SPECIAL, V4_NOT_ENFORCED

    embedding = {"::ffff:0:0/96", "64:ff9b::/96", "2002::/16"}  # decided by the v4 inside
    v4 = [entry for entry in IPV4_SPECIAL
          if entry[3] is not True and entry[0] not in V4_NOT_ENFORCED]
    for block, name, _, _ in v4 + list(IPV6_SPECIAL):
        if block in embedding:
            continue
        net = ipaddress.ip_network(block)
        for addr in (net.network_address, net.broadcast_address):
            assert is_internal(addr), (block, name, addr)


@pytest.mark.parametrize("host", ["192.0.0.9", "192.0.0.10", "192.31.196.1", "192.52.193.1",
                                  "192.175.48.6"])
def test_ipv4_special_entries_the_registry_calls_globally_reachable_pass(host: str) -> None:
    addr = literal_address(host)
    assert addr is not None and not is_internal(addr), host


@pytest.mark.parametrize("host", [
    "64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1", "2001:200::1",
    "2a00:1450:4001:80b::200e", "2620:4f:8001::1", "192.0.1.1", "198.20.0.1", "100.128.0.1"])
def test_public_addresses_next_to_special_ranges_pass(host: str) -> None:
    addr = literal_address(host)
    assert addr is not None and not is_internal(addr), host
    assert asyncio.run(AddressGuard(resolver=fixed({})).allows(host))


@pytest.mark.parametrize("host", ["::7f00:1", "::ffff:0:7f00:1", "64:ff9b:1::7f00:1", "::2",
                                  "198.18.0.1", "2001:db8::1"])
def test_operator_allowing_private_targets_lets_them_through(host: str) -> None:
    assert asyncio.run(AddressGuard(allow_private=True, resolver=fixed({})).allows(host))


def test_a_name_resolving_to_an_ipv4_compatible_loopback_is_refused() -> None:
    guard = AddressGuard(resolver=fixed({"sneaky.test": ["8.8.8.8", "::7f00:1"]}))
    assert not asyncio.run(guard.allows("sneaky.test"))
