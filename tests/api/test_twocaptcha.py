"""The 2captcha / rucaptcha front door, /in.php and /res.php (spec §9), over real HTTP."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    CHROME_UA,
    SITEKEY,
    GatedRecogniser,
    LiveServer,
    b64,
    blank_png,
    captcha_png,
    image_task,
    png_bomb,
)

PNG = captcha_png("aB3k9")
BIG = 1024 * 1024 + 1


def submit(server: LiveServer, key: str, **fields: Any) -> str:
    """POST /in.php as a url-encoded form; the answer text."""
    response = server.client.post("/in.php", data={"key": key, **fields})
    assert response.status_code == 200, response.text
    return response.text


def submit_image(server: LiveServer, key: str, png: bytes = PNG, **fields: Any) -> str:
    return submit(server, key, method="base64", body=b64(png), **fields)


def res(server: LiveServer, key: str, **params: Any) -> str:
    """GET /res.php, as 2captcha clients send it; the answer text."""
    response = server.client.get("/res.php", params={"key": key, **params})
    assert response.status_code == 200, response.text
    return response.text


def res_json(server: LiveServer, key: str, **params: Any) -> Any:
    response = server.client.get("/res.php", params={"key": key, "json": 1, **params})
    assert response.headers["content-type"] == "application/json"
    return response.json()


def task_id_of(answer: str) -> str:
    assert answer.startswith("OK|") and answer[3:].isdigit(), answer
    return answer[3:]


def wait_answer(server: LiveServer, key: str, task_id: str, action: str = "get") -> str:
    """Poll like a 2captcha client (within the default rate) until the task is final."""
    deadline = time.monotonic() + 20
    while (answer := res(server, key, action=action, id=task_id)) == "CAPCHA_NOT_READY":
        assert time.monotonic() < deadline, f"task {task_id} still not ready"
        time.sleep(0.11)
    return answer


def solved(server: LiveServer, key: str, **fields: Any) -> str:
    task_id = task_id_of(submit_image(server, key, **fields))
    assert wait_answer(server, key, task_id).startswith("OK|")
    return task_id


def multipart(key: str, file_headers: str, png: bytes = PNG, **fields: str) -> tuple[bytes, str]:
    """A hand-made multipart body, so that the file part's headers are exactly as given."""
    boundary = "capdtestboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             .encode() for name, value in {"key": key, "method": "post", **fields}.items()]
    parts.append(f"--{boundary}\r\n{file_headers}\r\n\r\n".encode() + png + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def post_multipart(server: LiveServer, body: bytes, boundary: str) -> str:
    response = server.client.post("/in.php", content=body, headers={
        "content-type": f"multipart/form-data; boundary={boundary}"})
    return response.text


# -- in.php: images -----------------------------------------------------------------------------
def test_base64_image_is_answered_ok_and_id(server: LiveServer, key: str) -> None:
    answer = submit_image(server, key)
    assert answer.startswith("OK|") and int(answer[3:]) >= 1_000_000


def test_answer_is_ok_and_text(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key, regsense=1))
    assert wait_answer(server, key, task_id) == "OK|aB3k9"


def test_regsense_0_answers_case_insensitively(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key))
    assert wait_answer(server, key, task_id) == "OK|ab3k9"


def test_numeric_1_answers_digits_only(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key, numeric=1))
    answer = wait_answer(server, key, task_id)
    assert answer.startswith("OK|") and answer[3:].isdigit()


def test_numeric_2_answers_letters_only(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key, numeric=2))
    answer = wait_answer(server, key, task_id)
    assert answer.startswith("OK|") and not any(c.isdigit() for c in answer[3:])


def test_min_len_and_max_len_bound_the_answer(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key, min_len=6, max_len=6))
    answer = wait_answer(server, key, task_id)
    assert answer.startswith("OK|") and len(answer[3:]) == 6  # the image shows 5
    task_id = task_id_of(submit_image(server, key, min_len=0, max_len=5))
    assert wait_answer(server, key, task_id) == "OK|ab3k9"


def test_calc_answers_the_result(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key, captcha_png("7+3="), calc=1))
    assert wait_answer(server, key, task_id) == "OK|10"


def test_multipart_file_part_without_content_type(server: LiveServer, key: str) -> None:
    body, boundary = multipart(
        key, 'Content-Disposition: form-data; name="file"; filename="captcha.png"', regsense="1")
    task_id = task_id_of(post_multipart(server, body, boundary))
    assert wait_answer(server, key, task_id) == "OK|aB3k9"


def test_multipart_file_part_without_filename(server: LiveServer, key: str) -> None:
    body, boundary = multipart(key, 'Content-Disposition: form-data; name="file"',
                               regsense="1")
    task_id = task_id_of(post_multipart(server, body, boundary))
    assert wait_answer(server, key, task_id) == "OK|aB3k9"


def test_multipart_as_httpx_sends_it(server: LiveServer, key: str) -> None:
    response = server.client.post("/in.php", data={"key": key, "method": "post"},
                                  files={"file": ("c.png", PNG, "image/png")})
    task_id_of(response.text)


def test_get_request_is_accepted(server: LiveServer, key: str) -> None:
    response = server.client.get("/in.php", params={"key": key, "method": "base64",
                                                    "body": b64(PNG)})
    task_id_of(response.text)


def test_unencoded_plus_in_base64_survives(server: LiveServer, key: str) -> None:
    body = b64(PNG)
    assert "+" in body
    raw = f"key={key}&method=base64&regsense=1&body={body}".encode()  # '+' not %2B
    response = server.client.post("/in.php", content=raw, headers={
        "content-type": "application/x-www-form-urlencoded"})
    assert wait_answer(server, key, task_id_of(response.text)) == "OK|aB3k9"


def test_form_without_content_type_is_read(server: LiveServer, key: str) -> None:
    raw = f"key={key}&method=base64&body={b64(PNG).replace('+', '%2B')}".encode()
    response = server.client.post("/in.php", content=raw)
    task_id_of(response.text)


def test_in_php_json_answer(server: LiveServer, key: str) -> None:
    response = server.client.post("/in.php", data={"key": key, "method": "base64",
                                                   "body": b64(PNG), "json": 1})
    answer = response.json()
    assert answer["status"] == 1 and answer["request"].isdigit()


def test_header_acao(server: LiveServer, key: str) -> None:
    response = server.client.post("/in.php", data={"key": key, "method": "base64",
                                                   "body": b64(PNG), "header_acao": 1})
    assert response.headers["access-control-allow-origin"] == "*"


def test_soft_id_and_text_options_are_accepted(server: LiveServer, key: str) -> None:
    task_id_of(submit_image(server, key, soft_id=4580, phrase=0, min_len=5, max_len=5,
                            language=2, lang="en", textinstructions="type the letters"))


# -- in.php: errors -----------------------------------------------------------------------------
def test_unknown_key(server: LiveServer) -> None:
    assert submit_image(server, "f" * 32) == "ERROR_KEY_DOES_NOT_EXIST"


@pytest.mark.parametrize("bad", ["", "abc", "F" * 32, "0" * 31])
def test_malformed_key_is_wrong_user_key(server: LiveServer, bad: str) -> None:
    assert submit_image(server, bad) == "ERROR_WRONG_USER_KEY"


def test_zero_balance(server: LiveServer) -> None:
    assert submit_image(server, server.new_account("0")) == "ERROR_ZERO_BALANCE"


def test_image_too_small(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="base64", body=b64(b"\x89PNG" * 10)) == \
        "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_image_missing(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="post") == "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_image_too_big(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="base64", body=b64(b"\x00" * 51_201)) == \
        "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


def test_oversized_body_is_too_big_in_plain_text(server: LiveServer, key: str) -> None:
    response = server.client.post("/in.php", content=b"x" * BIG, headers={
        "content-type": "application/x-www-form-urlencoded"})
    assert (response.status_code, response.text) == (200, "ERROR_TOO_BIG_CAPTCHA_FILESIZE")


def test_oversized_streamed_multipart_is_too_big(server: LiveServer, key: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(17):
            yield b"\x00" * 65536

    response = server.client.post("/in.php", content=chunks(), headers={
        "content-type": "multipart/form-data; boundary=b"})
    assert response.text == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


def test_unreadable_multipart_is_upload_error(server: LiveServer) -> None:
    response = server.client.post("/in.php", content=b"--x\r\n", headers={
        "content-type": "multipart/form-data"})  # no boundary
    assert (response.status_code, response.text) == (200, "ERROR_UPLOAD")


def test_unreadable_image_is_refused_at_upload(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="base64", body=b64(b"\x01" * 200)) == \
        "ERROR_ZERO_CAPTCHA_FILESIZE"


@pytest.mark.parametrize("image", [random.Random(12).randbytes(200),
                                   captcha_png("ab12")[:400],
                                   png_bomb(100_000, 100_000) + bytes(32)],
                         ids=["random bytes", "truncated png", "png bomb"])
def test_image_that_does_not_decode_is_zero_filesize(server: LiveServer, key: str,
                                                     image: bytes) -> None:
    assert submit(server, key, method="base64", body=b64(image)) == \
        "ERROR_ZERO_CAPTCHA_FILESIZE"
    body, boundary = multipart(key, 'Content-Disposition: form-data; name="file"; '
                               'filename="c.png"\r\nContent-Type: image/png', image)
    assert post_multipart(server, body, boundary) == "ERROR_ZERO_CAPTCHA_FILESIZE"
    answer = json.loads(submit(server, key, method="base64", body=b64(image), json="1"))
    assert (answer["status"], answer["request"]) == (0, "ERROR_ZERO_CAPTCHA_FILESIZE")


def test_picture_with_nothing_to_read_fails_unsolvable(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit(server, key, method="base64", body=b64(blank_png())))
    assert wait_answer(server, key, task_id) == "ERROR_CAPTCHA_UNSOLVABLE"


def test_unknown_method(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="audio") == "ERROR_NO_SUCH_METHOD"


@pytest.mark.parametrize(("name", "value"), [("regsense", "2"), ("numeric", "5"),
                                             ("calc", "x"), ("min_len", "21"),
                                             ("max_len", "-1"), ("phrase", "yes")])
def test_out_of_range_option_is_bad_parameters(server: LiveServer, key: str, name: str,
                                               value: str) -> None:
    assert submit_image(server, key, **{name: value}) == "ERROR_BAD_PARAMETERS"


def test_the_key_answers_before_a_bad_option(server: LiveServer) -> None:
    assert submit_image(server, "f" * 32, regsense=9) == "ERROR_KEY_DOES_NOT_EXIST"


def test_json_error_shape(server: LiveServer) -> None:
    response = server.client.post("/in.php", data={"key": "f" * 32, "method": "base64",
                                                   "body": b64(PNG), "json": 1})
    answer = response.json()
    assert (answer["status"], answer["request"]) == (0, "ERROR_KEY_DOES_NOT_EXIST")
    assert isinstance(answer["error_text"], str)


def test_ip_not_allowed(server: LiveServer, key: str) -> None:
    async def add(store: Any) -> None:
        account = await store.account_for_key(key)
        await store.whitelist_add(account.id, "10.0.0.0/8")

    server.admin(add)
    assert submit_image(server, key) == "ERROR_IP_NOT_ALLOWED"


# -- in.php: token methods ----------------------------------------------------------------------
TOKEN_METHODS = {
    "userrecaptcha": {"googlekey": SITEKEY, "pageurl": "https://example.com/login"},
    "hcaptcha": {"sitekey": "10000000-ffff-ffff-ffff-000000000001",
                 "pageurl": "https://example.com/"},
    "turnstile": {"sitekey": "0x4AAAAAAAC3DHQFLr1GavRN", "pageurl": "https://example.com/"},
    "geetest": {"gt": "81388ea1fc187e0c335c0a8907ff2625", "challenge": "2e2f0f65240058b6",
                "pageurl": "https://example.com/"},
}


@pytest.mark.parametrize("method", sorted(TOKEN_METHODS))
def test_token_method_without_a_worker_has_no_slot(server: LiveServer, key: str,
                                                   method: str) -> None:
    assert submit(server, key, method=method, **TOKEN_METHODS[method]) == \
        "ERROR_NO_SLOT_AVAILABLE"


def test_missing_pageurl(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="userrecaptcha", googlekey=SITEKEY) == "ERROR_PAGEURL"


def test_malformed_pageurl(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="hcaptcha", sitekey="x", pageurl="example.com") == \
        "ERROR_PAGEURL"


@pytest.mark.parametrize("googlekey", [None, "short"])
def test_missing_or_malformed_googlekey(server: LiveServer, key: str,
                                        googlekey: str | None) -> None:
    fields = {"pageurl": "https://example.com/"}
    if googlekey:
        fields["googlekey"] = googlekey
    assert submit(server, key, method="userrecaptcha", **fields) == "ERROR_GOOGLEKEY"


def test_recaptcha_version_must_be_v2_or_v3(server: LiveServer, key: str) -> None:
    assert submit(server, key, method="userrecaptcha", version="v9",
                  **TOKEN_METHODS["userrecaptcha"]) == "ERROR_BAD_PARAMETERS"


def lease_one(server: LiveServer, worker: str, task_type: str) -> dict[str, Any]:
    answer = server.call("worker/v1/lease", {"workerToken": worker, "types": [task_type]})
    [leased] = answer["leases"]
    return dict(leased)


def serve(server: LiveServer, worker: str, task_type: str) -> None:
    answer = server.call("worker/v1/lease", {"workerToken": worker, "types": [task_type]})
    assert answer == {"errorId": 0, "leases": []}


@pytest.mark.parametrize(("method", "fields", "expected"), [
    ("userrecaptcha", {**TOKEN_METHODS["userrecaptcha"], "invisible": 1, "data-s": "ds"},
     {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/login",
      "websiteKey": SITEKEY, "isInvisible": True, "recaptchaDataSValue": "ds"}),
    ("userrecaptcha", {**TOKEN_METHODS["userrecaptcha"], "version": "v3", "min_score": "0.7",
                       "action": "login"},
     {"type": "RecaptchaV3TaskProxyless", "websiteURL": "https://example.com/login",
      "websiteKey": SITEKEY, "minScore": 0.7, "pageAction": "login"}),
    ("userrecaptcha", {**TOKEN_METHODS["userrecaptcha"], "version": "v3", "enterprise": 1},
     {"type": "RecaptchaV3EnterpriseTask", "websiteURL": "https://example.com/login",
      "websiteKey": SITEKEY}),
    ("userrecaptcha", {**TOKEN_METHODS["userrecaptcha"], "enterprise": 1,
                       "proxy": "u:p@8.8.8.8:3128", "proxytype": "HTTPS"},
     {"type": "RecaptchaV2EnterpriseTask", "websiteURL": "https://example.com/login",
      "websiteKey": SITEKEY, "proxyType": "https", "proxyAddress": "8.8.8.8",
      "proxyPort": 3128, "proxyLogin": "u", "proxyPassword": "p"}),
    ("hcaptcha", {**TOKEN_METHODS["hcaptcha"], "data": "rq", "userAgent": CHROME_UA},
     {"type": "HCaptchaTaskProxyless", "websiteURL": "https://example.com/",
      "websiteKey": "10000000-ffff-ffff-ffff-000000000001", "data": "rq",
      "userAgent": CHROME_UA}),
    ("turnstile", {**TOKEN_METHODS["turnstile"], "action": "signup", "data": "cd"},
     {"type": "TurnstileTaskProxyless", "websiteURL": "https://example.com/",
      "websiteKey": "0x4AAAAAAAC3DHQFLr1GavRN", "pageAction": "signup", "data": "cd"}),
    ("geetest", {**TOKEN_METHODS["geetest"], "api_server": "api-na.geetest.com"},
     {"type": "GeeTestTaskProxyless", "websiteURL": "https://example.com/",
      "gt": "81388ea1fc187e0c335c0a8907ff2625", "challenge": "2e2f0f65240058b6",
      "geetestApiServerSubdomain": "api-na.geetest.com"}),
    ("geetest", {"version": 4, "captcha_id": "e392e1d7fd421dc63325744d5a2b9c73",
                 "pageurl": "https://example.com/"},
     {"type": "GeeTestTaskProxyless", "websiteURL": "https://example.com/", "version": 4,
      "gt": "e392e1d7fd421dc63325744d5a2b9c73"}),
    ("geetest_v4", {"captcha_id": "e392e1d7fd421dc63325744d5a2b9c73",
                    "pageurl": "https://example.com/", "proxy": "8.8.8.8:1080",
                    "proxytype": "SOCKS5"},
     {"type": "GeeTestTask", "websiteURL": "https://example.com/", "version": 4,
      "gt": "e392e1d7fd421dc63325744d5a2b9c73", "proxyType": "socks5",
      "proxyAddress": "8.8.8.8", "proxyPort": 1080}),
])
def test_token_method_becomes_the_json_api_task(server: LiveServer, key: str, method: str,
                                                fields: dict[str, Any],
                                                expected: dict[str, Any]) -> None:
    worker = server.new_worker_token()
    serve(server, worker, expected["type"])
    task_id = task_id_of(submit(server, key, method=method, **fields))
    leased = lease_one(server, worker, expected["type"])
    assert (str(leased["taskId"]), leased["task"]) == (task_id, expected)


def test_token_answer_reaches_res_php(server: LiveServer, key: str) -> None:
    worker = server.new_worker_token()
    serve(server, worker, "RecaptchaV2TaskProxyless")
    task_id = task_id_of(submit(server, key, method="userrecaptcha",
                                **TOKEN_METHODS["userrecaptcha"]))
    assert res(server, key, action="get", id=task_id) == "CAPCHA_NOT_READY"
    leased = lease_one(server, worker, "RecaptchaV2TaskProxyless")
    server.call("worker/v1/complete", {"workerToken": worker, "leaseId": leased["leaseId"],
                                       "solution": {"gRecaptchaResponse": "03AGdBq25"}})
    assert res(server, key, action="get", id=task_id) == "OK|03AGdBq25"


def test_hcaptcha_json_answer_carries_useragent_and_respkey(server: LiveServer,
                                                             key: str) -> None:
    worker = server.new_worker_token()
    serve(server, worker, "HCaptchaTaskProxyless")
    task_id = task_id_of(submit(server, key, method="hcaptcha", **TOKEN_METHODS["hcaptcha"]))
    leased = lease_one(server, worker, "HCaptchaTaskProxyless")
    server.call("worker/v1/complete", {"workerToken": worker, "leaseId": leased["leaseId"],
                                       "solution": {"gRecaptchaResponse": "P1_eyJ",
                                                    "respKey": "E0_ey", "userAgent": CHROME_UA}})
    assert res_json(server, key, action="get", id=task_id) == {
        "status": 1, "request": "P1_eyJ", "useragent": CHROME_UA, "respKey": "E0_ey"}


def test_geetest_answer_uses_2captcha_names(server: LiveServer, key: str) -> None:
    worker = server.new_worker_token()
    serve(server, worker, "GeeTestTaskProxyless")
    task_id = task_id_of(submit(server, key, method="geetest", **TOKEN_METHODS["geetest"]))
    leased = lease_one(server, worker, "GeeTestTaskProxyless")
    server.call("worker/v1/complete", {"workerToken": worker, "leaseId": leased["leaseId"],
                                       "solution": {"challenge": "c", "validate": "v",
                                                    "seccode": "s|jordan"}})
    assert res_json(server, key, action="get", id=task_id)["request"] == {
        "geetest_challenge": "c", "geetest_validate": "v", "geetest_seccode": "s|jordan"}


# -- res.php --------------------------------------------------------------------------------------
def test_not_ready_while_in_flight(make_server: Any, engine: Any) -> None:
    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated)
    key = server.new_account("1")
    task_id = task_id_of(submit_image(server, key))
    try:
        assert res(server, key, action="get", id=task_id) == "CAPCHA_NOT_READY"
        assert res_json(server, key, action="get", id=task_id) == {
            "status": 0, "request": "CAPCHA_NOT_READY"}
    finally:
        gated.gate.set()


def test_res_json_answer(server: LiveServer, key: str) -> None:
    task_id = solved(server, key, regsense=1)
    assert res_json(server, key, action="get", id=task_id) == {"status": 1,
                                                               "request": "aB3k9"}


def test_res_by_post(server: LiveServer, key: str) -> None:
    task_id = solved(server, key, regsense=1)
    response = server.client.post("/res.php", data={"key": key, "action": "get",
                                                    "id": task_id})
    assert response.text == "OK|aB3k9"


def test_ids_answers_joined(server: LiveServer, key: str) -> None:
    first = solved(server, key, regsense=1)
    second = solved(server, key)
    assert res(server, key, action="get", ids=f"{first},{second},12345678") == \
        "aB3k9|ab3k9|ERROR_WRONG_CAPTCHA_ID"


def test_ids_json_answer(server: LiveServer, key: str) -> None:
    first = solved(server, key, regsense=1)
    assert res_json(server, key, action="get", ids=f"{first},12345678") == {
        "status": 1, "request": "aB3k9|ERROR_WRONG_CAPTCHA_ID"}


def test_ids_include_not_ready(make_server: Any, engine: Any) -> None:
    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated, ocr_threads=1)
    key = server.new_account("1")
    task_id = task_id_of(submit_image(server, key))
    try:
        assert res(server, key, action="get", ids=f"{task_id},12345678") == \
            "CAPCHA_NOT_READY|ERROR_WRONG_CAPTCHA_ID"
    finally:
        gated.gate.set()


def test_get2_adds_the_cost(server: LiveServer, key: str) -> None:
    task_id = solved(server, key, regsense=1)
    assert res(server, key, action="get2", id=task_id) == "OK|aB3k9|0.00030"
    assert res_json(server, key, action="get2", id=task_id) == {
        "status": 1, "request": "aB3k9", "price": "0.00030"}


def test_unknown_id(server: LiveServer, key: str) -> None:
    assert res(server, key, action="get", id=12345678) == "ERROR_WRONG_CAPTCHA_ID"


def test_another_accounts_id_is_unknown(server: LiveServer, key: str) -> None:
    task_id = solved(server, key)
    assert res(server, server.new_account("1"), action="get", id=task_id) == \
        "ERROR_WRONG_CAPTCHA_ID"


@pytest.mark.parametrize("bad", ["abc", "", "12a"])
def test_malformed_id(server: LiveServer, key: str, bad: str) -> None:
    assert res(server, key, action="get", id=bad) == "ERROR_WRONG_ID_FORMAT"


def test_failed_task_answers_its_error(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit(server, key, method="base64", body=b64(blank_png())))
    wait_answer(server, key, task_id)
    assert res_json(server, key, action="get", id=task_id)["request"] == \
        "ERROR_CAPTCHA_UNSOLVABLE"


def test_getbalance_is_a_bare_number(server: LiveServer) -> None:
    assert res(server, server.new_account("345.678"), action="getbalance") == "345.678"


def test_getbalance_json(server: LiveServer) -> None:
    assert res_json(server, server.new_account("0.5"), action="getbalance") == {
        "status": 1, "request": "0.5"}


def test_getbalance_unknown_key(server: LiveServer) -> None:
    assert res(server, "e" * 32, action="getbalance") == "ERROR_KEY_DOES_NOT_EXIST"


def test_getbalance_malformed_key(server: LiveServer) -> None:
    assert res(server, "nokey", action="getbalance") == "ERROR_WRONG_USER_KEY"


@pytest.mark.parametrize("action", ["", "nope"])
def test_unknown_action(server: LiveServer, key: str, action: str) -> None:
    assert res(server, key, action=action) == "ERROR_EMPTY_ACTION"


def test_reportbad_refunds_an_image_task_once(server: LiveServer, key: str) -> None:
    task_id = solved(server, key)
    assert res(server, key, action="getbalance") == "9.9997"
    assert res(server, key, action="reportbad", id=task_id) == "OK_REPORT_RECORDED"
    assert res(server, key, action="getbalance") == "10.0"
    assert res(server, key, action="reportbad", id=task_id) == "ERROR_WRONG_CAPTCHA_ID"


def test_reportbad_of_a_token_task_records_without_refund(server: LiveServer,
                                                           key: str) -> None:
    worker = server.new_worker_token()
    serve(server, worker, "TurnstileTaskProxyless")
    task_id = task_id_of(submit(server, key, method="turnstile", **TOKEN_METHODS["turnstile"]))
    leased = lease_one(server, worker, "TurnstileTaskProxyless")
    server.call("worker/v1/complete", {"workerToken": worker, "leaseId": leased["leaseId"],
                                       "solution": {"token": "0.abc"}})
    assert res(server, key, action="reportbad", id=task_id) == "OK_REPORT_RECORDED"
    assert res(server, key, action="getbalance") == "9.9997"


def test_reportgood_of_an_own_solved_task(server: LiveServer, key: str) -> None:
    task_id = solved(server, key)
    assert res(server, key, action="reportgood", id=task_id) == "OK_REPORT_RECORDED"
    assert res(server, key, action="getbalance") == "9.9997"


def test_reportgood_of_another_accounts_task(server: LiveServer, key: str) -> None:
    task_id = solved(server, key)
    assert res(server, server.new_account("1"), action="reportgood", id=task_id) == \
        "ERROR_WRONG_CAPTCHA_ID"


def test_reportgood_of_a_failed_task(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit(server, key, method="base64", body=b64(blank_png())))
    wait_answer(server, key, task_id)
    assert res(server, key, action="reportgood", id=task_id) == "ERROR_WRONG_CAPTCHA_ID"


def test_reportgood_after_the_report_window(server: LiveServer, key: str) -> None:
    task_id = solved(server, key)
    server.clock.advance(24 * 3600 + 1)
    assert res(server, key, action="reportgood", id=task_id) == "ERROR_WRONG_CAPTCHA_ID"


def test_trailing_slash(server: LiveServer, key: str) -> None:
    assert server.client.get("/res.php/", params={"key": key, "action": "getbalance"}
                             ).text == "10.0"


# -- one Service behind both doors ----------------------------------------------------------
def test_charge_through_2captcha_is_seen_by_the_json_api(server: LiveServer, key: str) -> None:
    solved(server, key)
    assert server.call("getBalance", {"clientKey": key})["balance"] == 9.9997


def test_json_api_task_is_read_through_res_php(server: LiveServer, key: str) -> None:
    task_id = server.call("createTask", {"clientKey": key,
                                         "task": image_task()})["taskId"]
    assert server.wait_result(key, task_id)["status"] == "ready"
    assert res(server, key, action="get", id=task_id) == "OK|aB3k9"


def test_2captcha_task_is_read_through_the_json_api(server: LiveServer, key: str) -> None:
    task_id = task_id_of(submit_image(server, key, regsense=1))
    assert server.wait_result(key, int(task_id))["solution"] == {"text": "aB3k9"}


BAN_RULES = {"unknown_key_ban_threshold": 5, "violation_block_threshold": 4}


def test_ip_ban_earned_on_res_php_holds_on_the_json_api(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    good = server.new_account("1")
    for _ in range(5):
        assert res(server, "f" * 32, action="getbalance") == "ERROR_KEY_DOES_NOT_EXIST"
    assert server.call("getBalance", {"clientKey": good})["errorCode"] == "ERROR_IP_BANNED"


def test_ip_ban_earned_on_the_json_api_is_ip_banned_on_2captcha(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    good = server.new_account("1")
    for _ in range(5):
        server.call("getBalance", {"clientKey": "f" * 32})
    assert res(server, good, action="getbalance") == "IP_BANNED"
    assert submit_image(server, good) == "IP_BANNED"


def test_violations_on_2captcha_block_the_account_on_the_json_api(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    broke = server.new_account("0")
    for _ in range(4):
        assert submit_image(server, broke) == "ERROR_ZERO_BALANCE"
    assert server.call("getBalance", {"clientKey": broke})["errorCode"] == "ERROR_IP_BLOCKED"
    assert res(server, broke, action="getbalance") == "ERROR_IP_BLOCKED"
