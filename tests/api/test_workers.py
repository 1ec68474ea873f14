"""The worker protocol (spec §7): lease, extend, complete, and what clients then see."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.helpers import SITEKEY, LiveServer, image_task

RECAPTCHA = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/",
             "websiteKey": SITEKEY}
TURNSTILE = {"type": "TurnstileTaskProxyless", "websiteURL": "https://example.com/",
             "websiteKey": "0x4AAA"}
TOKEN_SOLUTION = {"gRecaptchaResponse": "03AGdBq25SxXT-pmSeBXjzScW-EiocHwwpwqtk1QXlJnGnU"}


def lease(server: LiveServer, token: str, types: list[str], **extra: Any) -> dict[str, Any]:
    return server.call("worker/v1/lease", {"workerToken": token, "types": types, **extra})


def complete(server: LiveServer, token: str, lease_id: str, **extra: Any) -> dict[str, Any]:
    return server.call("worker/v1/complete", {"workerToken": token, "leaseId": lease_id,
                                               **extra})


def create(server: LiveServer, key: str, task: dict[str, Any]) -> dict[str, Any]:
    return server.call("createTask", {"clientKey": key, "task": task})


@pytest.fixture
def worker(server: LiveServer) -> str:
    return server.new_worker_token()


def served(server: LiveServer, token: str, types: list[str]) -> None:
    assert lease(server, token, types) == {"errorId": 0, "leases": []}


def test_unserved_type_has_no_slot_until_a_worker_asks(server: LiveServer, key: str,
                                                       worker: str) -> None:
    assert create(server, key, RECAPTCHA)["errorCode"] == "ERROR_NO_SLOT_AVAILABLE"
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    assert create(server, key, RECAPTCHA)["errorId"] == 0
    assert create(server, key, TURNSTILE)["errorCode"] == "ERROR_NO_SLOT_AVAILABLE"


def test_type_is_unserved_again_after_the_window(server: LiveServer, key: str,
                                                 worker: str) -> None:
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    server.clock.advance(61)
    assert create(server, key, RECAPTCHA)["errorCode"] == "ERROR_NO_SLOT_AVAILABLE"


def test_full_path_create_lease_complete_result_charge(server: LiveServer, key: str,
                                                       worker: str) -> None:
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    task = {**RECAPTCHA, "proxyType": "http", "proxyAddress": "8.8.8.8", "proxyPort": 8080,
            "proxyLogin": "u", "proxyPassword": "p"}
    task_id = create(server, key, task)["taskId"]
    [leased] = lease(server, worker, ["RecaptchaV2TaskProxyless"])["leases"]
    assert leased["taskId"] == task_id and leased["type"] == "RecaptchaV2TaskProxyless"
    assert leased["task"] == task  # as the client sent it, proxy included
    assert leased["deadlineAt"] - server.clock() == pytest.approx(180, abs=1)
    assert leased["leaseExpiresAt"] - server.clock() == pytest.approx(60, abs=1)
    assert server.call("getTaskResult", {"clientKey": key, "taskId": task_id})["status"] == \
        "processing"
    assert complete(server, worker, leased["leaseId"], solution=TOKEN_SOLUTION) == {
        "errorId": 0}
    result = server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert result["status"] == "ready" and result["solution"] == TOKEN_SOLUTION
    assert result["cost"] == "0.00030"
    balance, reserved, ledger = server.ledger_consistent(key)
    assert (balance, reserved, ledger) == (999_970_000, 0, 999_970_000)


def test_long_poll_returns_when_work_arrives(server: LiveServer, key: str, worker: str) -> None:
    served(server, worker, ["TurnstileTaskProxyless"])
    answers: list[dict[str, Any]] = []
    started = threading.Event()

    def poll() -> None:
        started.set()
        answers.append(lease(server, worker, ["TurnstileTaskProxyless"], waitSeconds=20))

    thread = threading.Thread(target=poll)
    t0 = time.monotonic()
    thread.start()
    started.wait()
    task_id = create(server, key, TURNSTILE)["taskId"]
    thread.join(timeout=25)
    assert time.monotonic() - t0 < 10
    assert [item["taskId"] for item in answers[0]["leases"]] == [task_id]


def test_long_poll_answers_empty_after_wait(server: LiveServer, worker: str) -> None:
    t0 = time.monotonic()
    assert lease(server, worker, ["TurnstileTaskProxyless"], waitSeconds=1)["leases"] == []
    assert 0.9 < time.monotonic() - t0 < 5


def test_lease_batch_respects_max(server: LiveServer, key: str, worker: str) -> None:
    served(server, worker, ["TurnstileTaskProxyless"])
    ids = {create(server, key, TURNSTILE)["taskId"] for _ in range(3)}
    first = lease(server, worker, ["TurnstileTaskProxyless"], max=2)["leases"]
    second = lease(server, worker, ["TurnstileTaskProxyless"], max=50)["leases"]
    assert len(first) == 2 and len(second) == 1
    assert {item["taskId"] for item in first + second} == ids


def test_expired_lease_returns_to_the_queue(server: LiveServer, key: str, worker: str) -> None:
    served(server, worker, ["TurnstileTaskProxyless"])
    task_id = create(server, key, TURNSTILE)["taskId"]
    [first] = lease(server, worker, ["TurnstileTaskProxyless"])["leases"]
    server.clock.advance(61)
    [second] = lease(server, worker, ["TurnstileTaskProxyless"])["leases"]
    assert second["taskId"] == task_id and second["leaseId"] != first["leaseId"]
    late = complete(server, worker, first["leaseId"], solution={"token": "late"})
    assert late["errorCode"] == "ERROR_LEASE_NOT_FOUND"
    assert complete(server, worker, second["leaseId"], solution={"token": "t"})["errorId"] == 0
    result = server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert result["solution"] == {"token": "t"}


def test_extend_keeps_the_lease(server: LiveServer, key: str, worker: str) -> None:
    served(server, worker, ["TurnstileTaskProxyless"])
    create(server, key, TURNSTILE)
    [item] = lease(server, worker, ["TurnstileTaskProxyless"])["leases"]
    extended = server.call("worker/v1/extend", {"workerToken": worker,
                                                "leaseId": item["leaseId"], "seconds": 120})
    assert extended["errorId"] == 0
    assert extended["leaseExpiresAt"] - server.clock() == pytest.approx(120, abs=1)
    server.clock.advance(90)
    assert lease(server, worker, ["TurnstileTaskProxyless"])["leases"] == []
    assert complete(server, worker, item["leaseId"], solution={"token": "t"})["errorId"] == 0


def test_extend_of_an_unknown_lease(server: LiveServer, worker: str) -> None:
    for lease_id in ("123.abc", "nope", 5):
        answer = server.call("worker/v1/extend", {"workerToken": worker, "leaseId": lease_id,
                                                  "seconds": 10})
        assert answer["errorCode"] == "ERROR_LEASE_NOT_FOUND"


def test_duplicate_completion_changes_nothing(server: LiveServer, key: str,
                                              worker: str) -> None:
    served(server, worker, ["TurnstileTaskProxyless"])
    task_id = create(server, key, TURNSTILE)["taskId"]
    [item] = lease(server, worker, ["TurnstileTaskProxyless"])["leases"]
    assert complete(server, worker, item["leaseId"], solution={"token": "a"})["errorId"] == 0
    again = complete(server, worker, item["leaseId"], solution={"token": "b"})
    assert again["errorCode"] == "ERROR_LEASE_NOT_FOUND"
    failing = complete(server, worker, item["leaseId"], errorCode="ERROR_CAPTCHA_UNSOLVABLE")
    assert failing["errorCode"] == "ERROR_LEASE_NOT_FOUND"
    result = server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert result["solution"] == {"token": "a"}
    balance, reserved, ledger = server.ledger_consistent(key)
    assert balance == ledger == 999_970_000 and reserved == 0


@pytest.mark.parametrize("code", ["ERROR_CAPTCHA_UNSOLVABLE", "ERROR_RECAPTCHA_TIMEOUT",
                                  "ERROR_RECAPTCHA_INVALID_SITEKEY",
                                  "ERROR_RECAPTCHA_INVALID_DOMAIN",
                                  "ERROR_PROXY_CONNECT_REFUSED", "ERROR_PROXY_BANNED",
                                  "ERROR_PROXY_NOT_AUTHORISED", "ERROR_PROXY_READ_TIMEOUT",
                                  "ERROR_TOKEN_EXPIRED"])
def test_each_failure_code_reaches_the_client_uncharged(server: LiveServer, key: str,
                                                        worker: str, code: str) -> None:
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    task_id = create(server, key, RECAPTCHA)["taskId"]
    [item] = lease(server, worker, ["RecaptchaV2TaskProxyless"])["leases"]
    assert complete(server, worker, item["leaseId"], errorCode=code) == {"errorId": 0}
    result = server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert result["errorId"] == 1 and result["errorCode"] == code
    assert server.ledger_consistent(key) == (1_000_000_000, 0, 1_000_000_000)


def test_unknown_failure_code_is_a_bad_parameter(server: LiveServer, key: str,
                                                 worker: str) -> None:
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    create(server, key, RECAPTCHA)
    [item] = lease(server, worker, ["RecaptchaV2TaskProxyless"])["leases"]
    for body in ({"errorCode": "ERROR_ZERO_BALANCE"}, {},
                 {"errorCode": "ERROR_CAPTCHA_UNSOLVABLE", "solution": TOKEN_SOLUTION}):
        answer = complete(server, worker, item["leaseId"], **body)
        assert answer["errorCode"] == "ERROR_BAD_PARAMETERS"


@pytest.mark.parametrize(("solution", "field"), [
    ({}, "solution"), ("token", "solution"), ({"token": "x"}, "gRecaptchaResponse"),
    ({"gRecaptchaResponse": ""}, "gRecaptchaResponse"),
    ({"gRecaptchaResponse": 5}, "gRecaptchaResponse"),
])
def test_solution_must_fit_the_type(server: LiveServer, key: str, worker: str,
                                    solution: Any, field: str) -> None:
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    task_id = create(server, key, RECAPTCHA)["taskId"]
    [item] = lease(server, worker, ["RecaptchaV2TaskProxyless"])["leases"]
    answer = complete(server, worker, item["leaseId"], solution=solution)
    assert answer["errorCode"] == "ERROR_BAD_SOLUTION" and field in answer["errorDescription"]
    # the lease is still good: a fitting solution completes it
    assert complete(server, worker, item["leaseId"], solution=TOKEN_SOLUTION)["errorId"] == 0
    assert server.call("getTaskResult", {"clientKey": key, "taskId": task_id})["status"] == \
        "ready"


@pytest.mark.parametrize("token", ["", "f" * 48, "0" * 32, None, 7])
def test_unknown_worker_tokens(server: LiveServer, token: Any) -> None:
    for method in ("lease", "extend", "complete"):
        answer = server.call(f"worker/v1/{method}", {"workerToken": token, "types": [
            "TurnstileTaskProxyless"], "leaseId": "1.x", "seconds": 5})
        assert answer["errorCode"] == "ERROR_WORKER_TOKEN_INVALID"


def test_client_key_is_not_a_worker_token(server: LiveServer, key: str) -> None:
    assert lease(server, key, ["TurnstileTaskProxyless"])["errorCode"] == \
        "ERROR_WORKER_TOKEN_INVALID"


def test_worker_token_is_not_a_client_key(server: LiveServer, worker: str) -> None:
    assert server.call("getBalance", {"clientKey": worker})["errorCode"] == \
        "ERROR_KEY_DOES_NOT_EXIST"


def test_token_limited_to_its_types(server: LiveServer, key: str) -> None:
    limited = server.new_worker_token(("TurnstileTaskProxyless",))
    assert lease(server, limited, ["RecaptchaV2TaskProxyless"])["errorCode"] == \
        "ERROR_WORKER_TOKEN_INVALID"
    assert lease(server, limited, ["TurnstileTaskProxyless"])["errorId"] == 0


def test_revoked_token(server: LiveServer, worker: str) -> None:
    from capd.workers import token_digest

    assert lease(server, worker, ["TurnstileTaskProxyless"])["errorId"] == 0
    server.admin(lambda store: store.revoke_worker_token(token_digest(worker), server.clock()))
    assert lease(server, worker, ["TurnstileTaskProxyless"])["errorCode"] == \
        "ERROR_WORKER_TOKEN_INVALID"


@pytest.mark.parametrize("body", [{"types": []}, {"types": "TurnstileTask"},
                                  {"types": ["NoSuchTask"]}, {"types": ["TurnstileTask"], "max": 0},
                                  {"types": ["TurnstileTask"], "max": 51},
                                  {"types": ["TurnstileTask"], "waitSeconds": 31}])
def test_lease_parameters(server: LiveServer, worker: str, body: dict[str, Any]) -> None:
    answer = server.call("worker/v1/lease", {"workerToken": worker, **body})
    assert answer["errorCode"] == "ERROR_BAD_PARAMETERS"


def test_token_deadline_recaptcha_timeout_and_others_unsolvable(server: LiveServer, key: str,
                                                                worker: str) -> None:
    served(server, worker, ["RecaptchaV2TaskProxyless", "TurnstileTaskProxyless"])
    recaptcha = create(server, key, RECAPTCHA)["taskId"]
    turnstile = create(server, key, TURNSTILE)["taskId"]
    [item] = lease(server, worker, ["RecaptchaV2TaskProxyless"])["leases"]
    server.clock.advance(181)
    assert server.wait_result(key, recaptcha)["errorCode"] == "ERROR_RECAPTCHA_TIMEOUT"
    assert server.wait_result(key, turnstile)["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    late = complete(server, worker, item["leaseId"], solution=TOKEN_SOLUTION)
    assert late["errorCode"] == "ERROR_LEASE_NOT_FOUND"
    assert server.ledger_consistent(key) == (1_000_000_000, 0, 1_000_000_000)


def test_proxy_reported_banned_is_refused_for_a_while(make_server: Any) -> None:
    server = make_server(proxy_preflight=False)
    key = server.new_account("1")
    worker = server.new_worker_token()
    task = {**RECAPTCHA, "proxyType": "http", "proxyAddress": "8.8.4.4", "proxyPort": 3128}
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    create(server, key, task)
    [item] = lease(server, worker, ["RecaptchaV2TaskProxyless"])["leases"]
    complete(server, worker, item["leaseId"], errorCode="ERROR_PROXY_BANNED")
    assert create(server, key, task)["errorCode"] == "ERROR_PROXY_BANNED"
    server.clock.advance(601)
    served(server, worker, ["RecaptchaV2TaskProxyless"])
    assert create(server, key, task)["errorId"] == 0


def test_image_tasks_can_be_leased_by_workers(make_server: Any) -> None:
    server = make_server(builtin_ocr=False)
    key = server.new_account("1")
    worker = server.new_worker_token(("ImageToTextTask",))
    assert create(server, key, image_task())["errorCode"] == "ERROR_NO_SLOT_AVAILABLE"
    served(server, worker, ["ImageToTextTask"])
    task_id = server.call("createTask", {"clientKey": f"{key}__recognizingthreshold_80",
                                         "task": image_task(case=False, minLength=5,
                                                            maxLength=8)})["taskId"]
    [item] = lease(server, worker, ["ImageToTextTask"])["leases"]
    assert item["imageOptions"]["threshold"] == 80
    assert item["imageOptions"]["case_sensitive"] is False
    assert (item["imageOptions"]["min_length"], item["imageOptions"]["max_length"]) == (5, 8)
    bad = complete(server, worker, item["leaseId"], solution={"token": "x"})
    assert bad["errorCode"] == "ERROR_BAD_SOLUTION"
    assert complete(server, worker, item["leaseId"], solution={"text": "ab3k9"})["errorId"] == 0
    assert server.wait_result(key, task_id)["solution"] == {"text": "ab3k9"}


def test_image_options_name_length_bounds_only_when_set(make_server: Any) -> None:
    # so that a task without them reads the same to a worker of an older version
    server = make_server(builtin_ocr=False)
    key = server.new_account("1")
    worker = server.new_worker_token(("ImageToTextTask",))
    served(server, worker, ["ImageToTextTask"])
    create(server, key, image_task())
    [item] = lease(server, worker, ["ImageToTextTask"])["leases"]
    assert set(item["imageOptions"]) == {"module", "threshold", "case_sensitive", "numeric",
                                         "math"}


def test_worker_that_hangs_up_mid_poll_gets_nothing_claimed(server: LiveServer, key: str,
                                                            worker: str) -> None:
    import socket

    import orjson

    served(server, worker, ["TurnstileTaskProxyless"])
    body = orjson.dumps({"workerToken": worker, "types": ["TurnstileTaskProxyless"],
                         "waitSeconds": 20})
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /worker/v1/lease HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)  # the poll is now waiting inside capd
    # the worker is gone; new work must stay in the queue for a live worker
    task_id = create(server, key, TURNSTILE)["taskId"]
    deadline = time.monotonic() + 10
    while True:
        leases = lease(server, worker, ["TurnstileTaskProxyless"])["leases"]
        if leases:
            break
        assert time.monotonic() < deadline, "the task stayed claimed for the dead worker"
        time.sleep(0.2)
    assert [item["taskId"] for item in leases] == [task_id]
