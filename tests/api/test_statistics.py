"""anti-captcha's statistics methods: getQueueStats and getSpendingStats."""

from __future__ import annotations

from typing import Any

from tests.helpers import SITEKEY, LiveServer, image_task

RECAPTCHA = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/",
             "websiteKey": SITEKEY}


def queue_stats(server: LiveServer, queue_id: Any) -> dict[str, Any]:
    return server.call("getQueueStats", {"queueId": queue_id})


def spending(server: LiveServer, key: str, **extra: Any) -> dict[str, Any]:
    return server.call("getSpendingStats", {"clientKey": key, **extra})


def solve_one(server: LiveServer, key: str) -> int:
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    assert server.wait_result(key, task_id)["status"] == "ready"
    return int(task_id)


def test_queue_stats_has_anti_captchas_five_numbers(server: LiveServer) -> None:
    answer = queue_stats(server, 1)
    assert set(answer) == {"errorId", "waiting", "load", "bid", "speed", "total"}
    assert answer["errorId"] == 0
    assert answer["total"] == 2  # the test server's two OCR threads
    assert answer["waiting"] == 2 and answer["load"] == 0.0
    assert answer["bid"] == 0.0003  # 0.3 USD per 1,000


def test_queue_stats_speed_is_the_median_solve_time(server: LiveServer) -> None:
    key = server.new_account("1")
    solve_one(server, key)
    answer = queue_stats(server, 2)  # Russian ImageToText: the same built-in solver
    assert answer["speed"] >= 0.0 and isinstance(answer["speed"], float)


def test_queue_stats_of_a_queue_no_worker_serves(server: LiveServer) -> None:
    answer = queue_stats(server, 6)
    assert answer == {"errorId": 0, "waiting": 0, "load": 0.0, "bid": 0.0003, "speed": 0.0,
                      "total": 0}


def test_queue_stats_counts_a_polling_worker_as_a_slot(server: LiveServer) -> None:
    token = server.new_worker_token()
    server.call("worker/v1/lease", {"workerToken": token, "types": ["RecaptchaV2TaskProxyless"]})
    answer = queue_stats(server, 6)
    assert (answer["total"], answer["waiting"]) == (1, 1)


def test_queue_stats_is_cached_ten_seconds(server: LiveServer) -> None:
    before = queue_stats(server, 6)
    token = server.new_worker_token()
    server.call("worker/v1/lease", {"workerToken": token, "types": ["RecaptchaV2TaskProxyless"]})
    assert queue_stats(server, 6) == before
    server.clock.advance(11)
    server.call("worker/v1/lease", {"workerToken": token, "types": ["RecaptchaV2TaskProxyless"]})
    assert queue_stats(server, 6)["total"] == 1


def test_queue_stats_refuses_an_unknown_queue(server: LiveServer) -> None:
    for bad in (3, 0, "x", None, True, 1.5):
        assert queue_stats(server, bad)["errorCode"] == "ERROR_BAD_PARAMETERS"


def test_spending_stats_has_24_hourly_records(server: LiveServer, key: str) -> None:
    answer = spending(server, key)
    assert answer["errorId"] == 0 and len(answer["data"]) == 24
    first, last = answer["data"][0], answer["data"][-1]
    assert first["dateFrom"] % 3600 == 0 and first["dateTill"] == first["dateFrom"] + 3599
    assert last["dateFrom"] == int(server.clock()) // 3600 * 3600
    assert all(r["volume"] == 0 and r["money"] == 0 for r in answer["data"])


def test_spending_stats_counts_tasks_and_money_in_their_hour(server: LiveServer,
                                                             key: str) -> None:
    solve_one(server, key)
    solve_one(server, key)
    last = spending(server, key)["data"][-1]
    assert last["volume"] == 2 and last["money"] == 0.0006


def test_spending_stats_from_a_given_hour(server: LiveServer, key: str) -> None:
    solve_one(server, key)
    hour = int(server.clock()) // 3600 * 3600
    data = spending(server, key, date=hour + 1800)["data"]
    assert data[0]["dateFrom"] == hour and data[0]["volume"] == 1
    earlier = spending(server, key, date=hour - 24 * 3600)["data"]
    assert sum(r["volume"] for r in earlier) == 0


def test_spending_stats_filters_by_queue_and_ip(server: LiveServer, key: str) -> None:
    solve_one(server, key)
    assert spending(server, key, queue="English ImageToText")["data"][-1]["volume"] == 1
    assert spending(server, key, queue="ImageToTextTask")["data"][-1]["volume"] == 1
    assert spending(server, key, queue="Recaptcha Proxyless")["data"][-1]["volume"] == 0
    assert spending(server, key, ip="127.0.0.1")["data"][-1]["volume"] == 1
    assert spending(server, key, ip="10.0.0.1")["data"][-1]["volume"] == 0


def test_spending_stats_is_per_account(server: LiveServer, key: str) -> None:
    solve_one(server, key)
    other = server.new_account("1")
    assert spending(server, other)["data"][-1]["volume"] == 0


def test_spending_stats_refunds_lower_the_money(server: LiveServer, key: str) -> None:
    task_id = solve_one(server, key)
    server.call("reportIncorrectImageCaptcha", {"clientKey": key, "taskId": task_id})
    last = spending(server, key)["data"][-1]
    assert last["volume"] == 1 and last["money"] == 0


def test_spending_stats_errors(server: LiveServer, key: str) -> None:
    assert spending(server, "0" * 32)["errorCode"] == "ERROR_KEY_DOES_NOT_EXIST"
    assert spending(server, key, date="soon")["errorCode"] == "ERROR_BAD_PARAMETERS"
    assert spending(server, key, queue="Nope")["errorCode"] == "ERROR_BAD_PARAMETERS"
    assert spending(server, key, ip=5)["errorCode"] == "ERROR_BAD_PARAMETERS"


def test_statistics_methods_are_in_the_openapi_document(server: LiveServer) -> None:
    paths = server.client.get("/openapi.json").json()["paths"]
    assert "/getQueueStats" in paths and "/getSpendingStats" in paths
