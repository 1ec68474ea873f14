"""Abuse and security (issue 7 §4), beyond tests/api/test_bans.py and test_whitelist.py:
ban rules through the 2captcha door, another account's task id on every method, forged
X-Forwarded-For, SSRF through names that resolve inward, hostile bodies, slow clients that
must not starve others, and secrets that never reach logs or metrics."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from capd.outbound.guard import AddressGuard
from tests.helpers import SITEKEY, LiveServer, image_task

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
NO_BANS = {"violation_block_threshold": 10**6, "unknown_key_ban_threshold": 10**6}


def res(server: LiveServer, **params: Any) -> httpx.Response:
    return server.client.get("/res.php", params=params)


# -- ban rules through the 2captcha door -----------------------------------------------------
def test_unknown_key_storm_on_in_php_bans_the_ip_on_both_doors(make_server: Any) -> None:
    server = make_server(unknown_key_ban_threshold=5, ban_duration_s=600)
    good = server.new_account("1")
    for _ in range(5):
        assert server.client.get("/in.php", params={"key": "e" * 32, "method": "base64",
                                                    "body": "x"}).text in (
            "ERROR_KEY_DOES_NOT_EXIST", "IP_BANNED")
    assert res(server, key=good, action="getbalance").text == "IP_BANNED"
    assert server.call("getBalance", {"clientKey": good})["errorCode"] == "ERROR_IP_BANNED"
    # a forged X-Forwarded-For from an untrusted peer does not dodge the ban
    forged = server.call("getBalance", {"clientKey": good},
                         headers={"X-Forwarded-For": "198.51.100.9"})
    assert forged["errorCode"] == "ERROR_IP_BANNED"


def test_zero_balance_storm_on_in_php_blocks_the_account(make_server: Any) -> None:
    server = make_server(violation_block_threshold=4, ban_duration_s=600)
    broke = server.new_account("0")
    body = image_task()["body"]
    answers = [server.client.post("/in.php", data={"key": broke, "method": "base64",
                                                   "body": body}).text for _ in range(5)]
    assert answers[:4] == ["ERROR_ZERO_BALANCE"] * 4
    assert answers[4] == "ERROR_IP_BLOCKED"
    assert server.call("getBalance", {"clientKey": broke})["errorCode"] == "ERROR_IP_BLOCKED"
    [ban] = server.admin(lambda store: store.bans(server.clock()))
    server.admin(lambda store: store.lift_ban(ban.id, server.clock(), "test"))
    assert server.call("getBalance", {"clientKey": broke})["errorId"] == 0


def test_unknown_ids_on_res_php_block_the_account(make_server: Any) -> None:
    server = make_server(violation_block_threshold=4, ban_duration_s=600)
    key = server.new_account("1")
    texts = [res(server, key=key, action="get", id=str(123456789 + n)).text for n in range(5)]
    assert texts[:4] == ["ERROR_WRONG_CAPTCHA_ID"] * 4 and texts[4] == "ERROR_IP_BLOCKED"
    server.clock.advance(601)
    assert res(server, key=key, action="getbalance").text != "ERROR_IP_BLOCKED"


# -- another account's task id is a nonexistent one -------------------------------------------
def test_another_accounts_task_is_indistinguishable_on_every_method(make_server: Any) -> None:
    server = make_server(**NO_BANS)
    owner, stranger = server.new_account("1"), server.new_account("1")
    image_id = server.call("createTask", {"clientKey": owner, "task": image_task()})["taskId"]
    server.wait_result(owner, image_id)
    missing = 1_999_999_999 if image_id != 1_999_999_999 else 1_999_999_998
    for method in ("getTaskResult", "reportIncorrectImageCaptcha",
                   "reportIncorrectTokenCaptcha", "reportIncorrectRecaptcha"):
        theirs = server.client.post(f"/{method}", json={"clientKey": stranger,
                                                         "taskId": image_id})
        nobody = server.client.post(f"/{method}", json={"clientKey": stranger,
                                                         "taskId": missing})
        assert (theirs.status_code, theirs.content) == (nobody.status_code, nobody.content)
        assert theirs.json()["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"
    for action in ("get", "get2", "reportbad", "reportgood"):
        for extra in ({}, {"json": "1"}):
            theirs = res(server, key=stranger, action=action, id=str(image_id), **extra)
            nobody = res(server, key=stranger, action=action, id=str(missing), **extra)
            assert (theirs.status_code, theirs.content) == (nobody.status_code, nobody.content)
            assert "ERROR_WRONG_CAPTCHA_ID" in theirs.text
    together = res(server, key=stranger, action="get", ids=f"{image_id},{missing}")
    assert together.text == "ERROR_WRONG_CAPTCHA_ID|ERROR_WRONG_CAPTCHA_ID"
    # and the owner's own view is untouched: no report was recorded, nothing refunded
    assert server.call("reportIncorrectImageCaptcha", {"clientKey": owner,
                                                       "taskId": image_id})["errorId"] == 0


# -- forged X-Forwarded-For ----------------------------------------------------------------
def test_forged_forwarded_for_does_not_pass_a_whitelist_on_in_php(server: LiveServer,
                                                                 key: str) -> None:
    server.admin(lambda store: _whitelist(store, key, "203.0.113.0/24"))
    for header in ("203.0.113.7", "203.0.113.7, 203.0.113.8", "unknown, 203.0.113.7"):
        answer = server.client.get("/res.php", params={"key": key, "action": "getbalance"},
                                   headers={"X-Forwarded-For": header, "X-Real-IP": header})
        assert answer.text == "ERROR_IP_NOT_ALLOWED"


async def _whitelist(store: Any, key: str, net: str) -> None:
    account = await store.account_for_key(key)
    await store.whitelist_add(account.id, net)


# -- SSRF: names that resolve to internal addresses ---------------------------------------
INTERNAL = ["127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "::1",
            "::ffff:127.0.0.1", "fe80::1", "fd12::1", "100.64.0.1", "0.0.0.0"]


class FakeDns:
    """Every name resolves to the address after its first label: ``a-<n>.evil.test`` to
    INTERNAL[n]; ``mixed.evil.test`` to a public address and an internal one."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host.startswith("mixed."):
            return ["93.184.216.34", "10.0.0.1"]
        return [INTERNAL[int(host.split(".")[0][2:])]]


def test_ssrf_names_resolving_inward_are_refused(make_server: Any) -> None:
    dns = FakeDns()
    guard = AddressGuard(resolver=dns)
    server = make_server(app_kwargs={"proxy_guard": guard, "callback_guard": guard}, **NO_BANS)
    key = server.new_account("1")
    names = [f"a-{n}.evil.test" for n in range(len(INTERNAL))] + ["mixed.evil.test"]
    for name in names:
        proxied = server.call("createTask", {"clientKey": key, "task": {
            "type": "RecaptchaV2Task", "websiteURL": "https://example.com/",
            "websiteKey": SITEKEY, "proxyType": "http", "proxyAddress": name,
            "proxyPort": 8080}})
        assert proxied["errorCode"] == "ERROR_PROXY_CONNECT_REFUSED", (name, proxied)
        called = server.call("createTask", {"clientKey": key, "task": image_task(),
                                            "callbackUrl": f"http://{name}:8000/hook"})
        assert called["errorCode"] == "ERROR_BAD_PARAMETERS", (name, called)
    assert set(dns.asked) == set(names)  # every refusal came from resolving the name
    assert server.ledger_consistent(key)[1] == 0  # nothing reserved by a refused task


# -- hostile bodies ------------------------------------------------------------------------
HOSTILE = {
    "deeply nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "deeply nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "nested inside the task": b'{"clientKey":"' + b"0" * 32 + b'","task":' + b"[" * 5000
                              + b"]" * 5000 + b"}",
    "huge integer": b'{"clientKey":"' + b"0" * 32 + b'","taskId":' + b"9" * 5000 + b"}",
    "huge float": b'{"clientKey":"' + b"0" * 32 + b'","taskId":1e999999}',
    "NaN": b'{"clientKey":"' + b"0" * 32 + b'","taskId":NaN}',
    "invalid UTF-8": b'{"clientKey":"\xff\xfe\xc3\x28","taskId":1}',
    "lone surrogate": b'{"clientKey":"\\ud800","taskId":1}',
    "NUL bytes": b'{"clientKey":"\x00\x00","taskId":1}',
    "truncated": b'{"clientKey":"abc',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_bodies_get_a_json_error(server: LiveServer, name: str) -> None:
    for method in ("createTask", "getTaskResult", "getBalance", "worker/v1/lease"):
        answer = server.client.post(f"/{method}", content=HOSTILE[name],
                                    headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, (method, answer.text)
        assert answer.json()["errorId"] == 1
    assert server.client.get("/healthz").status_code == 200


def test_hostile_form_bodies_get_a_2captcha_error(server: LiveServer, key: str) -> None:
    for content, ctype in ((b"key=\xff\xfe&method=base64&body=\xc3\x28", None),
                           (b"key=" + key.encode() + b"&method=base64&numeric=%B2",
                            "application/x-www-form-urlencoded"),
                           (b"--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n"
                            b"\xff" * 10, "multipart/form-data; boundary=x"),
                           (b"&" * 100_000, "application/x-www-form-urlencoded")):
        headers = {"Content-Type": ctype} if ctype else {}
        answer = server.client.post("/in.php", content=content, headers=headers)
        assert answer.status_code == 200 and "ERROR" in answer.text, answer.text
    assert server.client.get("/healthz").status_code == 200


# -- slow clients ---------------------------------------------------------------------------
def test_trickled_bodies_do_not_starve_other_clients(server: LiveServer, key: str) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"clientKey":"' + key.encode() + b'"}'
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /getBalance HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            for byte in body:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
            sock.settimeout(10)
            assert b'"errorId":0' in sock.recv(4096)

    slow = [threading.Thread(target=trickle) for _ in range(20)]
    for t in slow:
        t.start()
    try:
        worst = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert server.call("getBalance", {"clientKey": key})["errorId"] == 0
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.05)
        assert worst < 1.0, f"a fast client waited {worst:.2f} s behind slow ones"
    finally:
        stop.set()
        for t in slow:
            t.join(timeout=15)


def test_a_client_that_never_finishes_its_body_starves_nobody(server: LiveServer,
                                                              key: str) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    socks = []
    try:
        for _ in range(50):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /createTask HTTP/1.1\r\nHost: x\r\nContent-Length: 900000"
                         b"\r\n\r\n{\"clientKey\":")
            socks.append(sock)
        started = time.monotonic()
        created = server.call("createTask", {"clientKey": key, "task": image_task()})
        assert created["errorId"] == 0 and time.monotonic() - started < 2
    finally:
        for sock in socks:
            sock.close()


# -- secrets stay out of logs and metrics ----------------------------------------------------
def test_secrets_never_reach_logs_or_metrics(server: LiveServer, key: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    token = server.new_worker_token()
    password = "Pr0xyPassw0rd-secret"
    secrets_ = (key, token, password)
    caplog.set_level(logging.DEBUG)
    with caplog.at_level(logging.DEBUG):
        server.call("worker/v1/lease", {"workerToken": token, "types": ["RecaptchaV2Task"]})
        created = server.call("createTask", {"clientKey": key + "__nocache", "task": {
            "type": "RecaptchaV2Task", "websiteURL": "https://example.com/",
            "websiteKey": SITEKEY, "proxyType": "http", "proxyAddress": "93.184.216.34",
            "proxyPort": 8080, "proxyLogin": "user", "proxyPassword": password}})
        assert created["errorId"] == 0, created
        leases = server.call("worker/v1/lease", {"workerToken": token,
                                                 "types": ["RecaptchaV2Task"]})["leases"]
        for item in leases:
            server.call("worker/v1/complete", {"workerToken": token, "leaseId": item["leaseId"],
                                               "errorCode": "ERROR_PROXY_BANNED"})
        server.call("worker/v1/complete", {"workerToken": token, "leaseId": "1.nope",
                                           "solution": {"token": "x"}})
        server.call("getTaskResult", {"clientKey": key, "taskId": created["taskId"]})
        server.call("getBalance", {"clientKey": key[:-1] + "0"})
        server.call("worker/v1/lease", {"workerToken": token[:-1] + "0", "types": ["x"]})
        server.client.get("/in.php", params={"key": key, "method": "userrecaptcha",
                                             "googlekey": SITEKEY, "pageurl": "https://a.org",
                                             "proxy": f"user:{password}@93.184.216.34:8080"})
        server.client.get("/res.php", params={"key": key, "action": "get", "id": "1"})
        server.client.post("/createTask", content=b'{"clientKey":"' + key.encode() + b'",')
        metrics = server.client.get("/metrics").text
    # the server's records (capd, uvicorn, starlette, asyncpg): not this test's own httpx
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server_side)
    for secret in secrets_:
        assert secret not in logged
        assert secret not in metrics
