"""getTaskResult: states, retention, poll limits (spec §2, §4)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from capd.domain.tasks import ImageSpec
from tests.helpers import GatedRecogniser, LiveServer, b64, blank_png, captcha_png, image_task


def poll(server: LiveServer, key: str, task_id: Any) -> dict[str, Any]:
    return server.call("getTaskResult", {"clientKey": key, "taskId": task_id})


def created(server: LiveServer, key: str, task: dict[str, Any] | None = None) -> int:
    answer = server.call("createTask", {"clientKey": key, "task": task or image_task()})
    assert answer["errorId"] == 0, answer
    return int(answer["taskId"])


def test_processing_then_ready_with_all_fields(make_server: Any, engine: Any) -> None:
    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated)
    key = server.new_account("1")
    task_id = created(server, key, image_task("kq47"))
    assert poll(server, key, task_id) == {"errorId": 0, "status": "processing"}
    gated.gate.set()
    result = server.wait_result(key, task_id)
    assert result["errorId"] == 0 and result["status"] == "ready"
    assert result["solution"] == {"text": "kq47"}
    assert result["cost"] == "0.00030"
    assert result["ip"] == "127.0.0.1"
    assert isinstance(result["createTime"], int) and isinstance(result["endTime"], int)
    assert result["endTime"] >= result["createTime"]
    assert result["solveCount"] == 1


def test_task_id_as_numeric_string(server: LiveServer, key: str) -> None:
    task_id = created(server, key)
    server.wait_result(key, task_id)
    assert poll(server, key, str(task_id))["status"] == "ready"


@pytest.mark.parametrize("bad", [0, -5, "abc", None, 1.5, True, "", 2**70])
def test_malformed_task_id_is_no_such_id(server: LiveServer, key: str, bad: Any) -> None:
    assert poll(server, key, bad)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"


def test_another_accounts_task_answers_like_a_nonexistent_one(server: LiveServer,
                                                              key: str) -> None:
    task_id = created(server, key)
    other = server.new_account("1")
    foreign = poll(server, other, task_id)
    missing = poll(server, other, task_id + 1 if task_id < 2**31 - 2 else task_id - 1)
    assert foreign == missing
    assert foreign["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"


def test_result_is_kept_five_minutes(server: LiveServer, key: str) -> None:
    task_id = created(server, key)
    server.wait_result(key, task_id)
    server.clock.advance(299)
    assert poll(server, key, task_id)["status"] == "ready"
    server.clock.advance(2)
    assert poll(server, key, task_id)["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"


def test_a_task_answers_at_most_120_polls(server: LiveServer, key: str) -> None:
    task_id = created(server, key)
    server.wait_result(key, task_id)  # a few polls already
    answers = []
    for _ in range(130):
        server.clock.advance(0.2)  # the SDK's rhythm: 5 polls per second
        answers.append(poll(server, key, task_id))
    ready = sum(1 for a in answers if a.get("status") == "ready")
    refused = [a for a in answers if a.get("errorCode") == "ERROR_TOO_MUCH_REQUESTS"]
    assert ready + len(refused) == 130
    assert ready < 120 and answers[-1]["errorCode"] == "ERROR_TOO_MUCH_REQUESTS"
    assert answers[ready - 1]["status"] == "ready" and answers[ready]["errorId"] == 1


def test_polling_faster_than_the_rate_is_refused(server: LiveServer, key: str) -> None:
    task_id = created(server, key)
    server.wait_result(key, task_id)
    server.clock.advance(1)
    server.clock.now = math.floor(server.clock.now) + 0.01
    answers = [poll(server, key, task_id) for _ in range(11)]
    assert all(a["status"] == "ready" for a in answers[:10])
    assert answers[10]["errorCode"] == "ERROR_TOO_MUCH_REQUESTS"
    server.clock.advance(1)
    assert poll(server, key, task_id)["status"] == "ready"


def test_sdk_rhythm_of_five_polls_a_second_is_never_refused(server: LiveServer,
                                                           key: str) -> None:
    task_id = created(server, key)
    server.wait_result(key, task_id)
    for _ in range(50):  # 10 s at 0.2 s, as the official SDK polls ImageToText
        server.clock.advance(0.2)
        assert poll(server, key, task_id)["status"] == "ready"


def test_picture_with_nothing_to_read_fails_unsolvable_and_is_not_charged(
        server: LiveServer, key: str) -> None:
    before = server.ledger_consistent(key)
    task_id = created(server, key, {"type": "ImageToTextTask", "body": b64(blank_png())})
    result = server.wait_result(key, task_id)
    assert result["errorId"] == 1 and result["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert server.ledger_consistent(key) == before


def test_confidence_below_threshold_is_unsolvable(server: LiveServer, key: str,
                                                  engine: Any) -> None:
    image = captcha_png("Wq7x", size=14)  # small print: the engine is unsure
    confidence = engine.read(image, ImageSpec()).confidence * 100
    assert 1 < confidence < 99, confidence
    above = created(server, key, {"type": "ImageToTextTask", "body": b64(image),
                                  "recognizingThreshold": math.floor(confidence) + 1})
    below = created(server, key, {"type": "ImageToTextTask", "body": b64(image),
                                  "recognizingThreshold": math.floor(confidence)})
    assert server.wait_result(key, above)["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert server.wait_result(key, below)["status"] == "ready"


def test_threshold_on_the_key_and_task_value_wins(server: LiveServer, key: str,
                                                  engine: Any) -> None:
    image = captcha_png("Wq7x", size=14)
    confidence = engine.read(image, ImageSpec()).confidence * 100
    strict_key = f"{key}__recognizingthreshold_{math.floor(confidence) + 1}"
    body = {"type": "ImageToTextTask", "body": b64(image)}
    failed = server.call("createTask", {"clientKey": strict_key, "task": body})["taskId"]
    lenient = server.call("createTask", {"clientKey": strict_key,
                                         "task": {**body, "recognizingThreshold": 0}})["taskId"]
    assert server.wait_result(key, failed)["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert server.wait_result(key, lenient)["status"] == "ready"


def test_task_past_its_deadline_fails_uncharged(make_server: Any, engine: Any) -> None:
    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated, ocr_threads=1, image_deadline_s=30)
    key = server.new_account("1")
    first = created(server, key)
    assert gated.entered.acquire(timeout=10)
    second = created(server, key)  # waits in the queue behind the gated one
    server.clock.advance(31)
    result = server.wait_result(key, second)
    assert result["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    gated.gate.set()
    # the first one's late reading is refused too: its deadline passed while it was read
    assert server.wait_result(key, first)["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    balance, reserved, ledger = server.ledger_consistent(key)
    assert reserved == 0 and balance == ledger == 100_000_000
