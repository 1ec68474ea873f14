"""getBalance and the incorrect-answer reports (spec §2, §3)."""

from __future__ import annotations

from typing import Any

from tests.helpers import LiveServer, image_task


def solved_task(server: LiveServer, key: str) -> int:
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    assert server.wait_result(key, task_id)["status"] == "ready"
    return int(task_id)


def report(server: LiveServer, key: str, task_id: Any,
           method: str = "reportIncorrectImageCaptcha") -> dict[str, Any]:
    return server.call(method, {"clientKey": key, "taskId": task_id})


def test_balance_is_a_json_number(server: LiveServer) -> None:
    key = server.new_account("345.678")
    answer = server.call("getBalance", {"clientKey": key})
    assert answer == {"errorId": 0, "balance": 345.678}


def test_balance_with_bad_key(server: LiveServer) -> None:
    assert server.call("getBalance", {"clientKey": "0" * 32})["errorCode"] == \
        "ERROR_KEY_DOES_NOT_EXIST"


def test_balance_body_not_json_reads_as_no_key(server: LiveServer) -> None:
    answer = server.client.post("/getBalance", content=b"clientKey=abc").json()
    assert answer["errorCode"] == "ERROR_KEY_DOES_NOT_EXIST"


def test_key_options_do_not_change_the_account(server: LiveServer, key: str) -> None:
    answer = server.call("getBalance", {"clientKey": f"{key}__nocache__solvemedia"})
    assert answer["balance"] == 10.0


def test_image_report_refunds_once(server: LiveServer, key: str) -> None:
    task_id = solved_task(server, key)
    assert server.call("getBalance", {"clientKey": key})["balance"] == 9.9997
    assert report(server, key, task_id) == {"errorId": 0, "status": "success"}
    assert server.call("getBalance", {"clientKey": key})["balance"] == 10.0
    assert report(server, key, task_id)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"
    balance, reserved, ledger = server.ledger_consistent(key)
    assert balance == ledger == 1_000_000_000 and reserved == 0


def test_report_of_another_accounts_task(server: LiveServer, key: str) -> None:
    task_id = solved_task(server, key)
    other = server.new_account("1")
    assert report(server, other, task_id)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"
    assert report(server, other, 12345678)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"


def test_report_after_24_hours_is_refused(server: LiveServer, key: str) -> None:
    task_id = solved_task(server, key)
    server.clock.advance(24 * 3600 + 1)
    assert report(server, key, task_id)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"


def test_report_is_accepted_after_the_result_expired(server: LiveServer, key: str) -> None:
    task_id = solved_task(server, key)
    server.clock.advance(3600)  # past the 5-minute result window, inside 24 h
    assert report(server, key, task_id)["status"] == "success"


def test_failed_task_cannot_be_reported(server: LiveServer, key: str) -> None:
    from tests.helpers import b64, blank_png

    task_id = server.call("createTask", {"clientKey": key, "task": {
        "type": "ImageToTextTask", "body": b64(blank_png())}})["taskId"]
    assert server.wait_result(key, task_id)["errorId"] == 1
    assert report(server, key, task_id)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"


def test_token_report_methods_refuse_image_tasks(server: LiveServer, key: str) -> None:
    task_id = solved_task(server, key)
    for method in ("reportIncorrectTokenCaptcha", "reportIncorrectRecaptcha"):
        assert report(server, key, task_id, method)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"
    assert report(server, key, task_id)["status"] == "success"  # still reportable as image
