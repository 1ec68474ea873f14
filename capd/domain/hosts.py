"""Host names and IP addresses in one canonical spelling, so that a rule written for
``example.com`` or ``127.0.0.1`` (the domain blocklist, websiteURL checks, proxy bans)
matches every other way a client can write the same host.

Two pure functions; neither resolves anything:

- ``normalise_host(raw)``: a host name as a browser would look it up: percent-decoded,
  mapped by IDNA UTS-46 (full-width letters, the ideographic full stops 。 ． ｡ become
  ``.``, upper case becomes lower case), one trailing dot dropped, non-ASCII labels in
  their ``xn--`` (A-label) form. A host that spells an IP address comes back as
  ``normalise_ip`` gives it. None when the result is not a valid host name.
- ``normalise_ip(raw)``: the canonical text of an IP address in any spelling a C
  resolver accepts (``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, IPv4-mapped
  IPv6, uncompressed IPv6); None when ``raw`` is not an IP address (it is then a host
  name).

``url_host(url)`` applies ``normalise_host`` to the host of an absolute http(s) URL.

Store and compare only normalised values: normalise the blocklist entry when it is added
and the request's host when it is checked.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote, urlsplit

import idna

MAX_HOST_CHARS = 253  # RFC 1035 §2.3.4, without the trailing dot
MAX_LABEL_CHARS = 63  # RFC 1035 §2.3.4
MAX_URL_CHARS = 4096

# an ASCII label after mapping: letters, digits, hyphens (not at either end) and, as
# browsers accept them in host names, underscores
_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def normalise_ip(raw: str) -> str | None:
    """The canonical text of the IP address ``raw`` spells, or None when it spells none.

    IPv4 in any ``inet_aton`` form (1 to 4 parts, each decimal, octal with a leading 0
    or hex with 0x; the last part fills the remaining bytes): ``127.1``, ``2130706433``,
    ``0x7f.1`` and ``0177.0.0.1`` all give ``127.0.0.1``. IPv6 in brackets or not, a zone
    (``%eth0``) dropped, compressed the RFC 5952 way; an IPv4-mapped address
    (``::ffff:127.0.0.1``) gives its IPv4 address."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            v6 = ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
        return str(v6.ipv4_mapped) if v6.ipv4_mapped is not None else str(v6)
    v4 = _inet_aton(text)
    return str(v4) if v4 is not None else None


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.fullmatch(p) for p in parts):
        return None
    numbers = [int(p, 16) if p[:2] in ("0x", "0X") else int(p, 8) if p.startswith("0")
               else int(p) for p in parts]
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def normalise_host(raw: str) -> str | None:
    """The canonical spelling of the host name ``raw`` (the host part of a URL, without
    port or user), or None when it is not a valid host name once decoded and mapped.

    ``ｅxample.com``, ``example%2ecom``, ``example。com``, ``EXAMPLE.com.`` and
    ``example.com%2e`` all give ``example.com``; ``bücher.de`` gives
    ``xn--bcher-kva.de``; ``127.1`` gives ``127.0.0.1``. Spaces, empty labels (``a..b``,
    two trailing dots), labels that start or end with a hyphen, over-long names and
    anything IDNA forbids give None."""
    if not isinstance(raw, str) or len(raw) > MAX_URL_CHARS:
        return None
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    if text.startswith("[") and text.endswith("]"):
        return normalise_ip(text)
    try:
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (idna.IDNAError, ValueError):
        return None
    if mapped.endswith("."):
        mapped = mapped[:-1]
    ip = normalise_ip(mapped)
    if ip is not None:
        return ip
    labels = []
    if _INET_ATON_PART.fullmatch(mapped.rsplit(".", 1)[-1]):
        return None  # ends in a number but is no IP address (as browsers decide, WHATWG URL)
    for label in mapped.split("."):
        ascii_label = _label(label)
        if ascii_label is None:
            return None
        labels.append(ascii_label)
    host = ".".join(labels)
    return host if len(host) <= MAX_HOST_CHARS else None


def _label(label: str) -> str | None:
    """One mapped label in ASCII, or None when it is not a valid one."""
    if label.isascii():
        if not _ASCII_LABEL.fullmatch(label) or len(label) > MAX_LABEL_CHARS:
            return None
        if label.startswith("xn--"):  # an A-label must decode to a valid U-label
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                return None
        return label
    try:
        encoded = idna.alabel(label).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    return encoded if len(encoded) <= MAX_LABEL_CHARS else None


def url_host(url: str) -> str | None:
    """``normalise_host`` of the host of an absolute http(s) URL; None when ``url`` is not
    one or its host is not valid. The host is taken before percent-decoding, so an
    encoded ``/``, ``@`` or ``:`` cannot move the URL's boundaries."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        return None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    if ":" in host:  # an IPv6 literal: urlsplit has taken off the brackets
        return normalise_ip(host)
    return normalise_host(host)
