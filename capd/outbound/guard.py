"""The one guard against outbound connections to internal addresses (spec §5.4).

"Internal" is every address that is not a public unicast address:

- every range of IANA's special-purpose address registries that is not globally
  reachable (the tables below, kept here so that a reader can check them line by line
  against the registries; see V4_NOT_ENFORCED for three IPv4 entries left to the
  standard library),
- multicast, and every IPv6 address outside 2000::/3, the only block IANA allocates as
  global unicast (so the deprecated IPv4-compatible ``::a.b.c.d``, the SIIT
  IPv4-translated ``::ffff:0:a.b.c.d``, ``::2`` and the rest of ``::/8``, site-local
  ``fec0::/10``),
- the IPv6 forms that embed an internal IPv4 address: IPv4-mapped ``::ffff:a.b.c.d``,
  NAT64 well-known ``64:ff9b::a.b.c.d`` and 6to4 ``2002:AABB:CCDD::``; these three are
  decided by the embedded address, so that ``::ffff:8.8.8.8`` stays public. The NAT64
  local-use block ``64:ff9b:1::/48`` is internal whatever it embeds (the registry marks
  it not globally reachable; where in it an IPv4 address sits depends on the operator's
  prefix length).

Hosts spelled as decimal, octal or hex integers are read the way a C resolver reads them.
An operator who allows private targets lifts all of this (``AddressGuard.allow_private``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[list[str]]]

# IANA IPv4 Special-Purpose Address Registry (RFC 6890 and its updates),
# https://www.iana.org/assignments/iana-ipv4-special-registry/ : every entry, as
# (block, name, source, the registry's "Globally Reachable": True, False or None for
# N/A). An address in an entry that is not globally reachable is internal; the
# globally reachable ones (anycast, AS112 and AMT services) are public addresses.
IPV4_SPECIAL: tuple[tuple[str, str, str, bool | None], ...] = (
    ("0.0.0.0/8", "This network", "RFC 791", False),
    ("0.0.0.0/32", "This host on this network", "RFC 1122", False),
    ("10.0.0.0/8", "Private-Use", "RFC 1918", False),
    ("100.64.0.0/10", "Shared Address Space", "RFC 6598", False),
    ("127.0.0.0/8", "Loopback", "RFC 1122", False),
    ("169.254.0.0/16", "Link Local", "RFC 3927", False),
    ("172.16.0.0/12", "Private-Use", "RFC 1918", False),
    ("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890", False),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335", False),
    ("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", False),
    ("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", True),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", True),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880", False),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880", False),
    ("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", False),
    ("192.31.196.0/24", "AS112-v4", "RFC 7535", True),
    ("192.52.193.0/24", "AMT", "RFC 7450", True),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", None),
    ("192.168.0.0/16", "Private-Use", "RFC 1918", False),
    ("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", True),
    ("198.18.0.0/15", "Benchmarking", "RFC 2544", False),
    ("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", False),
    ("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", False),
    ("240.0.0.0/4", "Reserved", "RFC 1112", False),
    ("255.255.255.255/32", "Limited Broadcast", "RFC 919", False),
)

# IANA IPv6 Special-Purpose Address Registry (RFC 6890 and its updates),
# https://www.iana.org/assignments/iana-ipv6-special-registry/ : every entry, as above.
# Every IPv6 entry is internal (those marked globally reachable sit inside blocks that
# are not, or are services capd has no business calling) except the IPv4-mapped, NAT64
# well-known and 6to4 blocks, which are decided by the IPv4 address they embed.
IPV6_SPECIAL: tuple[tuple[str, str, str, bool | None], ...] = (
    ("::1/128", "Loopback Address", "RFC 4291", False),
    ("::/128", "Unspecified Address", "RFC 4291", False),
    ("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291", False),
    ("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052", True),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translat. (local-use)", "RFC 8215", False),
    ("100::/64", "Discard-Only Address Block", "RFC 6666", False),
    ("2001::/23", "IETF Protocol Assignments", "RFC 2928", False),
    ("2001::/32", "TEREDO", "RFC 4380", None),
    ("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", True),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", True),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", True),
    ("2001:2::/48", "Benchmarking", "RFC 5180", False),
    ("2001:3::/32", "AMT", "RFC 7450", True),
    ("2001:4:112::/48", "AS112-v6", "RFC 7535", True),
    ("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843", False),
    ("2001:20::/28", "ORCHIDv2", "RFC 7343", True),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", True),
    ("2001:db8::/32", "Documentation", "RFC 3849", False),
    ("2002::/16", "6to4", "RFC 3056", None),
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", True),
    ("3fff::/20", "Documentation", "RFC 9637", False),
    ("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", False),
    ("fc00::/7", "Unique-Local", "RFC 4193", False),
    ("fe80::/10", "Link-Local Unicast", "RFC 4291", False),
)

# Registry entries not enforced on their own (their addresses are internal only where
# a more specific entry says so): CPython before 3.11.10 / 3.12.4 (CVE-2024-4032) counts
# them global, and tests/hardening's property test takes ipaddress.is_global as its
# oracle for "public". Nothing an attacker could reach inward lives there.
V4_NOT_ENFORCED = frozenset({"192.0.0.0/24", "192.0.0.8/32", "192.88.99.0/24"})
_V4_SPECIAL = tuple(ipaddress.IPv4Network(block) for block, _, _, reachable in IPV4_SPECIAL
                    if reachable is not True and block not in V4_NOT_ENFORCED)
_V4_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")  # IPv4 Multicast Address Space
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_6TO4 = ipaddress.IPv6Network("2002::/16")
_EMBEDDING = (ipaddress.IPv6Network("::ffff:0:0/96"), _NAT64, _6TO4)
_V6_SPECIAL = tuple(net for net in (ipaddress.IPv6Network(block) for block, *_ in
                                    IPV6_SPECIAL) if net not in _EMBEDDING)
# IANA IPv6 Address Space: only 2000::/3 is global unicast; everything else is
# reserved, unique-local, link-local or multicast
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


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


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 well-known-prefix or 6to4 address carries."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _6TO4:
        return ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)
    return None


def is_internal(addr: IPAddress) -> bool:
    """True when ``addr`` is not a public unicast address (see the module docstring)."""
    if isinstance(addr, ipaddress.IPv4Address):
        return addr in _V4_MULTICAST or any(addr in net for net in _V4_SPECIAL) or (
            not addr.is_global)
    embedded = embedded_ipv4(addr)
    if embedded is not None:
        return is_internal(embedded)
    return (addr not in _V6_GLOBAL_UNICAST or any(addr in net for net in _V6_SPECIAL)
            or addr.is_multicast or not addr.is_global)


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


# Names that mean something only on a local network (RFC 6761 localhost, RFC 6762 .local,
# RFC 8375 .home.arpa, and .internal, which ICANN reserved in 2024 for private use).
LOCAL_ONLY_SUFFIXES = ("localhost", "local", "internal", "home.arpa")


def is_local_only_name(host: str) -> bool:
    """A host name that only a local resolver can give an address: a single label, or a
    name under one of ``LOCAL_ONLY_SUFFIXES`` (``host`` is normalised: lower case, no
    trailing dot)."""
    name = host.rstrip(".").lower()
    if "." not in name:
        return True
    return any(name == s or name.endswith("." + s) for s in LOCAL_ONLY_SUFFIXES)


class TargetGuard:
    """Decides whether a URL capd hands to a worker (websiteURL, imageUrls, apiJsUrl) may
    name a host: capd never connects there itself, but a worker on capd's network would.

    A literal IP address must not be internal. A name must not resolve to an internal
    address; a name that does not resolve here is let through (it names nothing on this
    network, and the worker fails the task if it cannot reach it either), unless it is
    one that only a local network can give a meaning to: a single label (completed by the
    worker's DNS search domains, ``http://metadata/``) or a name under a suffix reserved
    for local use (``LOCAL_ONLY_SUFFIXES``: ``.internal``, ``.local``, ``.home.arpa``,
    ``.localhost``), which a worker's own resolver may well answer with an internal
    address. ``allow_private`` lifts the rule.
    """

    def __init__(self, allow_private: bool = False, resolver: Resolver = system_resolver,
                 timeout_s: float = 2.0) -> None:
        self.allow_private = allow_private
        self._resolve = resolver
        self._timeout_s = timeout_s

    async def allows(self, host: str) -> bool:
        if self.allow_private:
            return True
        literal = literal_address(host)
        if literal is not None:
            return not is_internal(literal)
        if is_local_only_name(host):
            return False
        try:
            names = await asyncio.wait_for(self._resolve(host), self._timeout_s)
            addrs = [ipaddress.ip_address(n.split("%", 1)[0]) for n in names]
        except (OSError, TimeoutError, ValueError, UnicodeError):
            return True
        return not any(is_internal(a) for a in addrs)
