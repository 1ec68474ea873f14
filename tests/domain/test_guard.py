"""The guard against internal outbound addresses (spec §5)."""

from __future__ import annotations

import asyncio

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
