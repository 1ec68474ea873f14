"""The one guard against outbound connections to internal addresses (spec §5.4).

"Internal" is every address that is not globally routable: loopback, private,
link-local, unique-local, unspecified, multicast, reserved, shared (CGN) ranges, and the
IPv6 forms that embed such an IPv4 address (IPv4-mapped, NAT64, 6to4). Hosts spelled as
decimal, octal or hex integers are read the way a C resolver reads them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


def literal_address(host: str) -> IPAddress | None:
    """The address a host string spells literally, in any classic spelling; else None."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text) and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def is_internal(addr: IPAddress) -> bool:
    """True when ``addr`` is not a public unicast address."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is None and addr in _6TO4:
            embedded = ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)
        if embedded is not None and is_internal(embedded):
            return True
    return addr.is_multicast or not addr.is_global


async def system_resolver(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class AddressGuard:
    """Decides whether capd may connect to a host.

    ``allow_private`` lifts the rule (operators running proxies on their own network,
    and tests on loopback).
    """

    def __init__(self, allow_private: bool = False, resolver: Resolver = system_resolver,
                 timeout_s: float = 2.0) -> None:
        self.allow_private = allow_private
        self._resolve = resolver
        self._timeout_s = timeout_s

    async def public_addresses(self, host: str) -> list[IPAddress] | None:
        """Every address ``host`` stands for, or None when any is internal or none resolve."""
        literal = literal_address(host)
        if literal is not None:
            addrs: list[IPAddress] = [literal]
        else:
            try:
                names = await asyncio.wait_for(self._resolve(host), self._timeout_s)
                addrs = [ipaddress.ip_address(n.split("%", 1)[0]) for n in names]
            except (OSError, TimeoutError, ValueError, UnicodeError):
                return None
        if not addrs:
            return None
        if not self.allow_private and any(is_internal(a) for a in addrs):
            return None
        return addrs

    async def allows(self, host: str) -> bool:
        return await self.public_addresses(host) is not None
