"""createTask: every error code of spec §5, in the spec's validation order."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from tests.helpers import (
    CHROME_UA,
    SITEKEY,
    LiveServer,
    b64,
    captcha_png,
    image_as,
    image_task,
    png_bomb,
    png_of_size,
)

RECAPTCHA = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/login",
             "websiteKey": SITEKEY}
PROXY = {"proxyType": "http", "proxyAddress": "8.8.8.8", "proxyPort": 3128}


def create(server: LiveServer, key: str, task: Any, **extra: Any) -> dict[str, Any]:
    return server.call("createTask", {"clientKey": key, "task": task, **extra})


def assert_error(answer: dict[str, Any], code: str) -> None:
    assert answer["errorId"] == 1, answer
    assert answer["errorCode"] == code, answer
    assert isinstance(answer["errorDescription"], str) and answer["errorDescription"]
    assert answer["taskId"] == 0


# -- step 1: the body -------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"", b'{"clientKey": "x"'])
def test_body_not_a_json_object_is_task_absent(server: LiveServer, raw: bytes) -> None:
    response = server.client.post("/createTask", content=raw)
    assert response.status_code == 200
    assert_error(response.json(), "ERROR_TASK_ABSENT")


@pytest.mark.parametrize("task", [None, "ImageToTextTask", [], 5])
def test_missing_or_non_object_task_is_task_absent(server: LiveServer, key: str,
                                                   task: Any) -> None:
    body = {"clientKey": key} if task is None else {"clientKey": key, "task": task}
    assert_error(server.call("createTask", body), "ERROR_TASK_ABSENT")


def test_task_absent_is_checked_before_the_key(server: LiveServer) -> None:
    assert_error(server.call("createTask", {"clientKey": "f" * 32}), "ERROR_TASK_ABSENT")


# -- step 2: the key ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["f" * 32, "F" * 32, "abc", "", 12345, None, "0" * 31 + "g"])
def test_unknown_or_malformed_key(server: LiveServer, bad: Any) -> None:
    assert_error(create(server, bad, image_task()), "ERROR_KEY_DOES_NOT_EXIST")


def test_revoked_key_does_not_exist(server: LiveServer, key: str) -> None:
    server.admin(lambda store: store.revoke_key(key, server.clock()))
    assert_error(create(server, key, image_task()), "ERROR_KEY_DOES_NOT_EXIST")


def test_key_is_checked_before_the_task_type(server: LiveServer) -> None:
    assert_error(create(server, "f" * 32, {"type": "Nope"}), "ERROR_KEY_DOES_NOT_EXIST")


# -- step 3: the type ---------------------------------------------------------------------------
@pytest.mark.parametrize("task_type", ["Nope", "imagetotexttask", 7, None])
def test_unknown_type_is_not_supported(server: LiveServer, key: str, task_type: Any) -> None:
    assert_error(create(server, key, {"type": task_type}), "ERROR_TASK_NOT_SUPPORTED")


# -- step 4: fields -----------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("recognizingThreshold", 101), ("recognizingThreshold", -1), ("recognizingThreshold", "70"),
    ("numeric", 3), ("numeric", "1"), ("case", "yes"), ("math", 2), ("capMonsterModule", 5),
])
def test_image_field_out_of_range_names_the_field(server: LiveServer, key: str, field: str,
                                                  value: Any) -> None:
    answer = create(server, key, image_task(**{field: value}))
    assert_error(answer, "ERROR_BAD_PARAMETERS")
    assert field in answer["errorDescription"]


def test_capitalised_field_spelling_is_read(server: LiveServer, key: str) -> None:
    answer = create(server, key, image_task(Numeric=7))
    assert_error(answer, "ERROR_BAD_PARAMETERS")
    assert "numeric" in answer["errorDescription"]
    ok = create(server, key, image_task(Case=False, CapMonsterModule="solvemedia"))
    assert ok["errorId"] == 0


@pytest.mark.parametrize(("task", "field"), [
    ({"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://a.com"}, "websiteKey"),
    ({"type": "RecaptchaV2TaskProxyless", "websiteKey": SITEKEY}, "websiteURL"),
    ({**RECAPTCHA, "type": "RecaptchaV3TaskProxyless", "minScore": 0.95}, "minScore"),
    ({"type": "FunCaptchaTaskProxyless", "websiteURL": "https://a.com"}, "websitePublicKey"),
    ({"type": "GeeTestTaskProxyless", "websiteURL": "https://a.com", "gt": "x"}, "challenge"),
    ({"type": "ComplexImageTask", "class": "nope", "imagesBase64": []}, "class"),
    ({"type": "CustomTask", "class": "altcha"}, "websiteURL"),
    ({"type": "AmazonTask", "websiteURL": "https://a.com", "websiteKey": "k",
      "challengeScript": "c", "captchaScript": "s", "context": "x"}, "iv"),
])
def test_worker_type_required_fields(server: LiveServer, key: str, task: dict[str, Any],
                                     field: str) -> None:
    answer = create(server, key, task)
    assert_error(answer, "ERROR_BAD_PARAMETERS")
    assert field in answer["errorDescription"]


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "https://", "http:///x",
                                 "javascript:alert(1)", "https://host:99999/"])
def test_website_url_must_be_absolute_http(server: LiveServer, key: str, url: str) -> None:
    answer = create(server, key, {**RECAPTCHA, "websiteURL": url})
    assert_error(answer, "ERROR_RECAPTCHA_INVALID_DOMAIN")


@pytest.mark.parametrize("sitekey", ["short", SITEKEY + "x", SITEKEY[:-1] + "!",
                                     SITEKEY[:-1] + " "])
def test_recaptcha_sitekey_must_look_like_one(server: LiveServer, key: str, sitekey: str) -> None:
    answer = create(server, key, {**RECAPTCHA, "websiteKey": sitekey})
    assert_error(answer, "ERROR_RECAPTCHA_INVALID_SITEKEY")


def test_other_types_take_any_nonempty_website_key(server: LiveServer, key: str) -> None:
    task = {"type": "TurnstileTaskProxyless", "websiteURL": "https://a.com", "websiteKey": "0x4"}
    assert_error(create(server, key, task), "ERROR_NO_SLOT_AVAILABLE")
    assert_error(create(server, key, {**task, "websiteKey": ""}), "ERROR_BAD_PARAMETERS")


@pytest.mark.parametrize("proxy", [
    {"proxyType": "http", "proxyAddress": "8.8.8.8"},
    {"proxyAddress": "8.8.8.8", "proxyPort": 8080},
    {**PROXY, "proxyType": "ftp"},
    {**PROXY, "proxyPort": 0},
    {**PROXY, "proxyPort": 70000},
    {**PROXY, "proxyPort": "http"},
    {"proxyLogin": "user"},
])
def test_incomplete_proxy_is_proxy_missing(server: LiveServer, key: str,
                                           proxy: dict[str, Any]) -> None:
    assert_error(create(server, key, {**RECAPTCHA, **proxy}), "ERROR_PROXY_MISSING")


def test_type_that_needs_a_proxy_without_one(server: LiveServer, key: str) -> None:
    task = {"type": "HCaptchaTask", "websiteURL": "https://a.com", "websiteKey": "k"}
    assert_error(create(server, key, task), "ERROR_PROXY_MISSING")
    assert_error(create(server, key, {**task, **PROXY}), "ERROR_NO_SLOT_AVAILABLE")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254",
                                     "::1", "::ffff:127.0.0.1", "fd00::1", "2130706433",
                                     "0177.0.0.1", "0x7f.1", "localhost", "0.0.0.0"])
def test_internal_proxy_address_is_refused(server: LiveServer, key: str, address: str) -> None:
    answer = create(server, key, {**RECAPTCHA, **PROXY, "proxyAddress": address})
    assert_error(answer, "ERROR_PROXY_CONNECT_REFUSED")


def test_private_proxies_allowed_when_the_operator_says_so(make_server: Any) -> None:
    server = make_server(allow_private_proxies=True)
    key = server.new_account("1")
    answer = create(server, key, {**RECAPTCHA, **PROXY, "proxyAddress": "127.0.0.1"})
    assert_error(answer, "ERROR_NO_SLOT_AVAILABLE")


@pytest.mark.parametrize("ua", [
    "curl/8.5.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/90.0.4430.93 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:78.0) Gecko/20100101 Firefox/78.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1)",
])
def test_outdated_or_non_browser_user_agent(server: LiveServer, key: str, ua: str) -> None:
    answer = create(server, key, {**RECAPTCHA, "userAgent": ua})
    assert_error(answer, "ERROR_WRONG_USERAGENT")


def test_current_user_agent_is_accepted(server: LiveServer, key: str) -> None:
    answer = create(server, key, {**RECAPTCHA, "userAgent": CHROME_UA})
    assert_error(answer, "ERROR_NO_SLOT_AVAILABLE")


def test_proxy_is_checked_before_user_agent(server: LiveServer, key: str) -> None:
    task = {**RECAPTCHA, "proxyType": "http", "userAgent": "curl/1"}
    assert_error(create(server, key, task), "ERROR_PROXY_MISSING")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cb", "http://10.0.0.1/cb",
                                 "https://[::1]/cb", "ftp://example.com/cb", "not a url", 5,
                                 "http://localhost/cb"])
def test_callback_url_must_be_public_http(server: LiveServer, key: str, url: Any) -> None:
    answer = create(server, key, image_task(), callbackUrl=url)
    assert_error(answer, "ERROR_BAD_PARAMETERS")
    assert "callbackUrl" in answer["errorDescription"]


# -- step 5: the image --------------------------------------------------------------------------
@pytest.mark.parametrize("body", [None, "", "!!!not base64!!!", b64(b"x" * 99)])
def test_missing_undecodable_or_tiny_image(server: LiveServer, key: str, body: Any) -> None:
    task = {"type": "ImageToTextTask"} if body is None else {"type": "ImageToTextTask",
                                                            "body": body}
    assert_error(create(server, key, task), "ERROR_ZERO_CAPTCHA_FILESIZE")


UNREADABLE_IMAGES = {
    "random bytes": random.Random(12).randbytes(200),
    "truncated png": captcha_png("ab12")[:400],
    "png bomb": png_bomb(100_000, 100_000) + bytes(32),  # padded over the 100-byte minimum
}


@pytest.mark.parametrize("name", sorted(UNREADABLE_IMAGES))
def test_image_that_does_not_decode_is_refused(server: LiveServer, key: str,
                                               name: str) -> None:
    before = server.ledger_consistent(key)
    task = {"type": "ImageToTextTask", "body": b64(UNREADABLE_IMAGES[name])}
    answer = create(server, key, task)
    assert_error(answer, "ERROR_ZERO_CAPTCHA_FILESIZE")
    assert "image" in answer["errorDescription"]
    assert server.ledger_consistent(key) == before


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_image_of_each_common_format_is_accepted(server: LiveServer, key: str,
                                                 fmt: str) -> None:
    answer = create(server, key, {"type": "ImageToTextTask", "body": b64(image_as(fmt))})
    assert answer["errorId"] == 0, answer


def test_unreadable_image_is_checked_before_balance(server: LiveServer) -> None:
    key = server.new_account("0")
    answer = create(server, key, {"type": "ImageToTextTask",
                                  "body": b64(UNREADABLE_IMAGES["random bytes"])})
    assert_error(answer, "ERROR_ZERO_CAPTCHA_FILESIZE")


def test_image_over_50_kb_is_too_big(server: LiveServer, key: str) -> None:
    task = {"type": "ImageToTextTask", "body": b64(b"\x89PNG" + b"x" * 51_200)}
    assert_error(create(server, key, task), "ERROR_TOO_BIG_CAPTCHA_FILESIZE")


def test_image_of_exactly_the_limits_is_accepted(server: LiveServer, key: str) -> None:
    for size in (100, 51_200):
        answer = create(server, key, {"type": "ImageToTextTask",
                                      "body": b64(png_of_size(size))})
        assert answer["errorId"] == 0, (size, answer)


def test_data_uri_prefix_and_line_breaks_are_accepted(server: LiveServer, key: str) -> None:
    encoded = base64.encodebytes(captcha_png("xy12")).decode()  # line breaks every 76 chars
    answer = create(server, key, {"type": "ImageToTextTask",
                                  "body": "data:image/png;base64," + encoded})
    assert answer["errorId"] == 0
    assert server.wait_result(key, answer["taskId"])["solution"]["text"] == "xy12"


def test_fields_are_checked_before_the_image(server: LiveServer, key: str) -> None:
    answer = create(server, key, {"type": "ImageToTextTask", "body": "", "numeric": 9})
    assert_error(answer, "ERROR_BAD_PARAMETERS")


# -- step 6: blocklist, balance, capacity ------------------------------------------------------
def test_blocked_domain_and_its_subdomains(server: LiveServer, key: str) -> None:
    server.admin(lambda store: store.blocklist_add("example.com", server.clock()))
    for url in ("https://example.com/", "https://login.EXAMPLE.com./x", "http://a.b.example.com"):
        assert_error(create(server, key, {**RECAPTCHA, "websiteURL": url}),
                     "ERROR_DOMAIN_NOT_ALLOWED")
    for url in ("https://notexample.com/", "https://example.com.evil.org/"):
        assert_error(create(server, key, {**RECAPTCHA, "websiteURL": url}),
                     "ERROR_NO_SLOT_AVAILABLE")


def test_zero_balance(server: LiveServer) -> None:
    key = server.new_account("0")
    assert_error(create(server, key, image_task()), "ERROR_ZERO_BALANCE")


def test_balance_below_the_price(server: LiveServer) -> None:
    key = server.new_account("0.00029")
    assert_error(create(server, key, image_task()), "ERROR_ZERO_BALANCE")


def test_image_is_checked_before_balance(server: LiveServer) -> None:
    key = server.new_account("0")
    answer = create(server, key, {"type": "ImageToTextTask", "body": b64(b"x" * 10)})
    assert_error(answer, "ERROR_ZERO_CAPTCHA_FILESIZE")


def test_blocklist_is_checked_before_balance(server: LiveServer) -> None:
    key = server.new_account("0")
    server.admin(lambda store: store.blocklist_add("example.com", server.clock()))
    assert_error(create(server, key, RECAPTCHA), "ERROR_DOMAIN_NOT_ALLOWED")


def test_balance_is_checked_before_capacity(server: LiveServer) -> None:
    key = server.new_account("0")
    assert_error(create(server, key, RECAPTCHA), "ERROR_ZERO_BALANCE")


@pytest.mark.parametrize("task", [
    RECAPTCHA,
    {"type": "NoCaptchaTaskProxyless", "websiteURL": "https://a.com", "websiteKey": SITEKEY},
    {"type": "RecaptchaV3TaskProxyless", "websiteURL": "https://a.com", "websiteKey": SITEKEY,
     "minScore": 0.3, "pageAction": "login"},
    {"type": "GeeTestTaskProxyless", "websiteURL": "https://a.com", "gt": "g", "version": 4},
    {"type": "FunCaptchaTaskProxyless", "websiteURL": "https://a.com", "websitePublicKey": "k"},
    {"type": "ComplexImageTask", "class": "recaptcha", "imageUrls": ["https://a.com/1.png"]},
    {"type": "CustomTask", "class": "altcha", "websiteURL": "https://a.com", "metadata": {}},
])
def test_worker_types_are_unserved_without_workers(server: LiveServer, key: str,
                                                   task: dict[str, Any]) -> None:
    assert_error(create(server, key, task), "ERROR_NO_SLOT_AVAILABLE")


def test_full_queue_has_no_slot(make_server: Any, engine: Any) -> None:
    from tests.helpers import GatedRecogniser

    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated, ocr_threads=1, queue_depth_limit=1)
    key = server.new_account("1")
    try:
        first = create(server, key, image_task())
        assert first["errorId"] == 0
        assert gated.entered.acquire(timeout=10)  # the first is being read, not queued
        assert create(server, key, image_task())["errorId"] == 0  # queued: depth 1
        assert_error(create(server, key, image_task()), "ERROR_NO_SLOT_AVAILABLE")
    finally:
        gated.gate.set()


# -- transport details ---------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json",
                                          "application/x-www-form-urlencoded"])
def test_any_content_type_is_read_as_json(server: LiveServer, key: str,
                                          content_type: str | None) -> None:
    import orjson

    headers = {"Content-Type": content_type} if content_type else {}
    response = server.client.post("/createTask", headers=headers, content=orjson.dumps(
        {"clientKey": key, "task": image_task()}))
    assert response.json()["errorId"] == 0


def test_trailing_slash_is_tolerated(server: LiveServer, key: str) -> None:
    response = server.client.post("/createTask/", json={"clientKey": key, "task": image_task()})
    assert response.json()["errorId"] == 0


def test_unknown_fields_are_ignored(server: LiveServer, key: str) -> None:
    answer = create(server, key, image_task(comment="hi", phrase=False, minLength=3),
                    softId=42, languagePool="en")
    assert answer["errorId"] == 0 and isinstance(answer["taskId"], int)


def test_banned_proxy_is_refused_and_counts_as_a_violation(make_server: Any) -> None:
    server = make_server(violation_block_threshold=3)
    key = server.new_account("1")
    server.admin(lambda store: store.ban_proxy("8.8.8.8", 3128, server.clock() + 60))
    for _ in range(2):
        assert_error(create(server, key, {**RECAPTCHA, **PROXY}), "ERROR_PROXY_BANNED")
    assert_error(create(server, key, {**RECAPTCHA, **PROXY, "proxyPort": 3129}),
                 "ERROR_NO_SLOT_AVAILABLE")  # another proxy is fine
    assert_error(create(server, key, {**RECAPTCHA, **PROXY}), "ERROR_PROXY_BANNED")
    assert_error(create(server, key, image_task()), "ERROR_IP_BLOCKED")
    server.clock.advance(3600)  # both the proxy ban and the block have ended
    assert create(server, key, {**RECAPTCHA, **PROXY})["errorCode"] == "ERROR_NO_SLOT_AVAILABLE"


def test_key_revoked_while_in_use_is_refused_at_once(server: LiveServer, key: str) -> None:
    assert server.call("getBalance", {"clientKey": key})["errorId"] == 0
    server.admin(lambda store: store.revoke_key(key, server.clock()))
    assert_error(create(server, key, image_task()), "ERROR_KEY_DOES_NOT_EXIST")
