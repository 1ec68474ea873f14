"""Property tests for the parsers that face the world (issue 7 §1): whatever a client sends,
they answer a value or a CapdError, never anything else."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capd.api import twocaptcha
from capd.domain.keys import parse_client_key
from capd.domain.tasks import ValidationRules, decode_image, url_host
from capd.errors import CapdError
from capd.outbound.guard import AddressGuard, is_internal, literal_address
from capd.service import parse_task_id
from tests.hardening.conftest import budget

RULES = ValidationRules(min_image_bytes=100, max_image_bytes=51_200, min_browser_major=100,
                        min_safari_major=15)
HEX_KEY = st.text("0123456789abcdef", min_size=32, max_size=32)
MODULE = st.from_regex(r"[a-z][a-z0-9\-]{0,20}", fullmatch=True).filter(
    lambda w: w != "nocache" and not w.startswith("recognizingthreshold_"))
ANY_TEXT = st.text(max_size=80)  # every Unicode category, surrogates excluded
PROFILE = settings(settings.get_profile("capd-hardening"), max_examples=budget(300))


# -- clientKey and its __options (spec §3) -----------------------------------------------------
@PROFILE
@given(HEX_KEY, st.booleans(), st.none() | st.integers(0, 100), st.none() | MODULE,
       st.randoms(use_true_random=False), st.sampled_from([str.lower, str.upper, str.title]))
def test_key_options_in_any_order_round_trip(key: str, nocache: bool, threshold: int | None,
                                             module: str | None, rnd: Any, case: Any) -> None:
    opts = []
    if nocache:
        opts.append(case("nocache"))
    if threshold is not None:
        opts.append(case("recognizingthreshold_") + str(threshold))
    if module is not None:
        opts.append(module)
    rnd.shuffle(opts)
    parsed = parse_client_key("__".join([key, *opts]))
    assert parsed is not None
    assert (parsed.key, parsed.nocache, parsed.recognizing_threshold, parsed.module) == (
        key, nocache, threshold, module)


@PROFILE
@given(st.one_of(ANY_TEXT, st.integers(), st.none(), st.lists(st.integers()),
                 HEX_KEY.map(lambda k: k + "__") .flatmap(lambda k: ANY_TEXT.map(lambda t: k + t))))
@example("0" * 32 + "__recognizingthreshold_²")  # str.isdigit() is True, int() refuses it
@example("0" * 32 + "__recognizingthreshold_٣")
def test_client_key_parser_never_raises(raw: Any) -> None:
    parsed = parse_client_key(raw)
    if parsed is not None:
        assert len(parsed.key) == 32 and all(c in string.hexdigits for c in parsed.key)
        assert parsed.recognizing_threshold is None or 0 <= parsed.recognizing_threshold <= 100


@PROFILE
@given(st.one_of(ANY_TEXT, st.integers(), st.floats(), st.booleans(), st.none()))
@example("²")
@example("1" * 40)
def test_task_id_parser_never_raises(raw: Any) -> None:
    value = parse_task_id(raw)
    assert value is None or 0 < value <= 2**63 - 1


# -- base64 / data-URI images (spec §5.5) ------------------------------------------------------
def _wrap(text: str, width: int, sep: str) -> str:
    return sep.join(text[i:i + width] for i in range(0, len(text), width))


@PROFILE
@given(st.binary(min_size=100, max_size=2_000), st.booleans(),
       st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"]),
       st.integers(4, 120), st.sampled_from(["\n", "\r\n", " ", "\t"]), st.booleans())
def test_image_round_trips_with_prefix_and_line_breaks(data: bytes, uri: bool, mime: str,
                                                       width: int, sep: str,
                                                       urlsafe: bool) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    text = _wrap(text, width, sep)
    if uri:
        text = f"data:{mime};base64,{text}"
    assert decode_image(text, RULES) == data


@pytest.mark.parametrize(("size", "code"), [
    (99, "ERROR_ZERO_CAPTCHA_FILESIZE"), (100, None), (51_200, None),
    (51_201, "ERROR_TOO_BIG_CAPTCHA_FILESIZE")])
@pytest.mark.parametrize("padded", [True, False])
def test_image_size_limits_are_exact(size: int, code: str | None, padded: bool) -> None:
    text = base64.b64encode(b"\x89" * size).decode()
    if not padded:
        text = text.rstrip("=")
    if code is None:
        assert len(decode_image(text, RULES)) == size
    else:
        with pytest.raises(CapdError) as caught:
            decode_image(text, RULES)
        assert caught.value.code == code


@PROFILE
@given(st.one_of(ANY_TEXT, st.text(string.printable, max_size=400), st.binary(max_size=50),
                 st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=3),
                 st.text("ABCDEFabcdef0123456789+/=-_\n data:;,", max_size=600)))
def test_image_decoder_raises_only_capd_errors(raw: Any) -> None:
    try:
        data = decode_image(raw, RULES)
    except CapdError as exc:
        assert exc.code in ("ERROR_ZERO_CAPTCHA_FILESIZE", "ERROR_TOO_BIG_CAPTCHA_FILESIZE",
                            "ERROR_BAD_PARAMETERS")
    else:
        assert 100 <= len(data) <= 51_200


def test_image_decoder_refuses_huge_text_without_decoding_it() -> None:
    with pytest.raises(CapdError) as caught:
        decode_image("A" * 5_000_000, RULES)
    assert caught.value.code == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


# -- URLs ------------------------------------------------------------------------------------
@PROFILE
@given(st.one_of(ANY_TEXT, st.integers(), st.none(),
                 st.builds(lambda s, h, rest: f"{s}://{h}{rest}",
                           st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", ""]),
                           st.text(max_size=30), st.text(max_size=30))))
@example("http://[::1")
@example("http://host:99999/")
@example("http://host:²/")
def test_url_host_never_raises(url: Any) -> None:
    host = url_host(url)
    if host is not None:
        assert host == host.lower() and not host.endswith(".")
        assert url.strip().lower().startswith(("http://", "https://"))


@PROFILE
@given(st.from_regex(r"[a-z][a-z0-9\-]{0,20}(\.[a-z][a-z0-9\-]{0,20}){1,3}", fullmatch=True),
       st.sampled_from(["http", "https", "HTTPS"]), st.none() | st.integers(1, 65535),
       st.text(string.ascii_letters + "/?&=#", max_size=30))
def test_url_host_reads_the_host(host: str, scheme: str, port: int | None, rest: str) -> None:
    url = f"{scheme}://{host.upper()}{f':{port}' if port else ''}/{rest}"
    assert url_host(url) == host


# -- the guard against internal addresses (spec §5.4) ----------------------------------------
INTERNAL_V4 = st.one_of(
    st.ip_addresses(v=4, network="127.0.0.0/8"), st.ip_addresses(v=4, network="10.0.0.0/8"),
    st.ip_addresses(v=4, network="172.16.0.0/12"), st.ip_addresses(v=4, network="192.168.0.0/16"),
    st.ip_addresses(v=4, network="169.254.0.0/16"), st.ip_addresses(v=4, network="100.64.0.0/10"),
    st.ip_addresses(v=4, network="0.0.0.0/8"), st.ip_addresses(v=4, network="224.0.0.0/4"),
    st.ip_addresses(v=4, network="240.0.0.0/4"))


def spellings(addr: ipaddress.IPv4Address) -> list[str]:
    """Every classic way to write an IPv4 address that a C resolver reads as it."""
    n = int(addr)
    o = [int(x) for x in str(addr).split(".")]
    return [
        str(addr), str(n), hex(n), hex(n).upper().replace("0X", "0x"), "0" + oct(n)[2:],
        ".".join(f"0{x:o}" for x in o), ".".join(hex(x) for x in o),
        f"{o[0]}.{(o[1] << 16) | (o[2] << 8) | o[3]}", f"{o[0]}.{o[1]}.{(o[2] << 8) | o[3]}",
        f"::ffff:{addr}", f"[::ffff:{addr}]", f"::ffff:{n >> 16:x}:{n & 0xFFFF:x}",
        f"64:ff9b::{addr}", f"2002:{n >> 16:x}:{n & 0xFFFF:x}::1", f"[::ffff:{addr}]",
    ]


@PROFILE
@given(INTERNAL_V4)
def test_every_spelling_of_an_internal_address_is_refused(addr: ipaddress.IPv4Address) -> None:
    guard = AddressGuard(resolver=_no_dns)
    for text in spellings(addr):
        literal = literal_address(text)
        assert literal is not None, text
        assert is_internal(literal), text
        assert not asyncio.run(guard.allows(text)), text


@PROFILE
@given(st.one_of(st.ip_addresses(v=6, network="::1/128"), st.ip_addresses(v=6, network="fe80::/10"),
                 st.ip_addresses(v=6, network="fc00::/7"), st.ip_addresses(v=6, network="ff00::/8"),
                 st.ip_addresses(v=6, network="::/128")))
def test_internal_ipv6_is_refused(addr: ipaddress.IPv6Address) -> None:
    assert is_internal(addr)
    assert not asyncio.run(AddressGuard(resolver=_no_dns).allows(f"[{addr}]"))


@PROFILE
@given(st.ip_addresses(v=4).filter(lambda a: a.is_global and not a.is_multicast))
def test_public_addresses_pass_in_any_spelling(addr: ipaddress.IPv4Address) -> None:
    for text in spellings(addr)[:9]:  # the IPv4 spellings; NAT64/6to4 forms are their own nets
        literal = literal_address(text)
        assert literal == addr, text
        assert not is_internal(literal)


@PROFILE
@given(ANY_TEXT)
@example("1.2.3.4.5")
@example("0x")
@example("9" * 100)
def test_literal_address_never_raises(text: str) -> None:
    literal_address(text)


async def _no_dns(host: str) -> list[str]:
    raise OSError("no DNS in this test")


# -- the 2captcha form (spec §9) -------------------------------------------------------------
PARAM_NAMES = st.sampled_from([
    "key", "method", "body", "file", "regsense", "numeric", "calc", "phrase", "min_len",
    "max_len", "language", "json", "header_acao", "soft_id", "googlekey", "pageurl", "version",
    "enterprise", "invisible", "min_score", "action", "proxy", "proxytype", "sitekey",
    "gt", "challenge", "captcha_id", "api_server", "data-s", "userAgent", "domain"])
METHOD_NAMES = st.sampled_from(["base64", "post", "userrecaptcha", "hcaptcha", "turnstile",
                                "geetest", "geetest_v4", "nope", ""])


@PROFILE
@given(st.dictionaries(PARAM_NAMES, st.one_of(ANY_TEXT, st.sampled_from(
    ["1", "0", "²", "v3", "v2", "nan", "inf", "-1", "1e999", "user:pw@1.2.3.4:８０", ":", "@"]))),
    METHOD_NAMES)
@example({"numeric": "²"}, "base64")
@example({"proxy": "a:b@host:²", "pageurl": "https://x.org", "googlekey": "k"}, "userrecaptcha")
@example({"soft_id": "²"}, "base64")
def test_form_translation_raises_only_capd_errors(params: dict[str, str], method: str) -> None:
    try:
        body = twocaptcha.create_request({**params, "method": method}, "203.0.113.7")
    except CapdError:
        return
    assert isinstance(body.task, dict) and isinstance(body.task.get("type"), str)


@PROFILE
@given(st.binary(max_size=300))
def test_file_parts_survive_either_text_decoding(data: bytes) -> None:
    assert twocaptcha.file_bytes(data.decode("latin-1")) == data
    try:
        utf8 = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    if any(ord(c) > 255 for c in utf8):
        assert twocaptcha.file_bytes(utf8) == data
