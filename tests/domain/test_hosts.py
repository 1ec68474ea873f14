"""Host and address normalisation (capd/domain/hosts.py): every spelling of a host or an
address that a browser or a resolver treats as the same gives the same text."""

from __future__ import annotations

import pytest

from capd.domain.hosts import normalise_host, normalise_ip, url_host


@pytest.mark.parametrize("url", [
    "https://example.com/", "https://ｅxample.com/", "https://example%2ecom/",
    "https://example%2Ecom/", "https://example。com/", "https://example．com/",
    "https://example｡com/", "https://example.com%2e/", "https://example.com./",
    "https://EXAMPLE.COM/", "https://ＥＸＡＭＰＬＥ．ＣＯＭ/", "https://user:pw@example.com:8443/a",
    "http://example.com",
])
def test_every_spelling_of_a_blocked_host_normalises_to_it(url: str) -> None:
    assert url_host(url) == "example.com"


@pytest.mark.parametrize(("raw", "expected"), [
    ("example.com", "example.com"), ("Example.COM.", "example.com"),
    ("example%2ecom", "example.com"), ("example%2Ecom%2E", "example.com"),
    ("sub.example。com", "sub.example.com"), ("bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.de", "xn--bcher-kva.de"), ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("a_b.example", "a_b.example"), ("ⅻ.example", "xii.example"),
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("[::ffff:7f00:1]", "127.0.0.1"),
])
def test_normalise_host(raw: str, expected: str) -> None:
    assert normalise_host(raw) == expected


@pytest.mark.parametrize("raw", [
    "", ".", "exa mple.com", "example.com ", "example%20.com", "a..b", "example.com..",
    ".example.com", "-example.com", "example-.com", "ex!ample.com", "example.com%2f",
    "a" * 64 + ".com", ".".join(["a" * 60] * 5), "%ff.com", "xn--zz.com", "1.2.3.4.5",
    "host.0x1f", "example.com/path", "ex@mple.com",
])
def test_invalid_hosts_normalise_to_none(raw: str) -> None:
    assert normalise_host(raw) is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("0x7F000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("10.0x10.0377.1", "10.16.255.1"),
    ("4294967295", "255.255.255.255"), ("::ffff:127.0.0.1", "127.0.0.1"),
    ("[::ffff:7f00:1]", "127.0.0.1"), ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"), ("fe80::1%eth0", "fe80::1"), ("::7f00:1", "::7f00:1"),
    (" 8.8.8.8 ", "8.8.8.8"),
])
def test_normalise_ip(raw: str, expected: str) -> None:
    assert normalise_ip(raw) == expected


@pytest.mark.parametrize("raw", [
    "example.com", "", "256.0.0.1", "1.2.3.4.5", "4294967296", "1.16777216", "0x", "08.1",
    "1..2", "1.2.3.", "::ffff::1::", "[::1", "127.0.0.1 x", "0x7g.1", "-1",
])
def test_what_is_not_an_ip_gives_none(raw: str) -> None:
    assert normalise_ip(raw) is None


@pytest.mark.parametrize("url", [
    "ftp://example.com/", "example.com", "https://", "https://example.com:port/",
    "https://exa mple.com/", "https://a..b/", 42,
])
def test_url_host_refuses_what_is_no_http_url_with_a_valid_host(url: object) -> None:
    assert url_host(url) is None  # type: ignore[arg-type]


def test_an_encoded_slash_cannot_move_the_host() -> None:
    # the host of this URL is evil.com ('example.com%2f' is its user name)
    assert url_host("http://example.com%2f@evil.com/") == "evil.com"
    assert normalise_host("example.com%2f@evil.com") is None
