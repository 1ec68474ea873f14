"""The human fallback (issue 15) through a live server: an ImageToText task whose built-in
reading falls below its recognizingThreshold goes to the worker queue instead of failing,
when the setting is on and an external worker serves ImageToText; else it fails as
before. Built-in readers (the in-process solver, a ``capd worker``) never claim it again.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading
from tests.helpers import FakeClock, LiveServer, b64, captcha_png

IMAGE = "ImageToTextTask"
PRICE_UNITS = 30_000  # ImageToTextTask: 0.3 USD per 1,000 (units of 1e-8 USD)
OPENING_UNITS = 100_000_000  # 1 USD
GUESS = "guess"  # what the unsure recogniser reads, with confidence 0.5


class Unsure:
    """A recogniser that reads every image as GUESS with confidence 0.5, counting reads
    per image; ``entered`` is released as each read starts."""

    name = "unsure"

    def __init__(self) -> None:
        self.reads: dict[bytes, int] = {}
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        with self._lock:
            self.reads[image] = self.reads.get(image, 0) + 1
        self.entered.release()
        return Reading(GUESS, 0.5)


def create(server: LiveServer, key: str, image: bytes, threshold: int | None = 90) -> int:
    task: dict[str, Any] = {"type": IMAGE, "body": b64(image)}
    if threshold is not None:
        task["recognizingThreshold"] = threshold
    answer = server.call("createTask", {"clientKey": key, "task": task})
    assert answer["errorId"] == 0, answer
    return int(answer["taskId"])


def lease(server: LiveServer, token: str, wait_s: float = 0, **extra: Any
          ) -> list[dict[str, Any]]:
    answer = server.call("worker/v1/lease", {"workerToken": token, "types": [IMAGE],
                                             "waitSeconds": wait_s, **extra},
                         timeout=wait_s + 10)
    assert answer["errorId"] == 0, answer
    leases: list[dict[str, Any]] = answer["leases"]
    return leases


def complete(server: LiveServer, token: str, lease_id: str, **outcome: Any) -> dict[str, Any]:
    return server.call("worker/v1/complete", {"workerToken": token, "leaseId": lease_id,
                                              **outcome})


def balance_units(server: LiveServer, key: str) -> tuple[int, int, int]:
    return server.ledger_consistent(key)


def test_setting_off_fails_a_reading_below_the_threshold_as_before(
        make_server: Callable[..., LiveServer]) -> None:
    server = make_server(recogniser=Unsure())
    key, token = server.new_account("1"), server.new_worker_token()
    assert lease(server, token) == []  # an external worker serves ImageToText
    task_id = create(server, key, captcha_png("ab12"))
    answer = server.wait_result(key, task_id)
    assert answer["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert balance_units(server, key) == (OPENING_UNITS, 0, OPENING_UNITS)


def test_setting_on_without_an_external_worker_fails_as_before(
        make_server: Callable[..., LiveServer]) -> None:
    server = make_server(recogniser=Unsure(), human_fallback=True)
    key, token = server.new_account("1"), server.new_worker_token()
    # a `capd worker` asking is no person: it does not count
    assert lease(server, token, builtinReader=True) == []
    task_id = create(server, key, captcha_png("ab12"))
    answer = server.wait_result(key, task_id)
    assert answer["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert balance_units(server, key) == (OPENING_UNITS, 0, OPENING_UNITS)


def test_setting_on_hands_the_task_to_the_external_worker_and_charges_once(
        make_server: Callable[..., LiveServer]) -> None:
    unsure = Unsure()
    server = make_server(recogniser=unsure, human_fallback=True)
    key, token = server.new_account("1"), server.new_worker_token()
    assert lease(server, token) == []  # the person at the desk is polling
    image = captcha_png("ab12")
    task_id = create(server, key, image)
    assert unsure.entered.acquire(timeout=10)  # the built-in solver holds it: it reads
    [handed] = lease(server, token, wait_s=10)
    assert handed["taskId"] == task_id and handed["imageOptions"]["threshold"] == 90
    assert 'capd_human_fallback_total{type="ImageToTextTask"} 1' in server.client.get(
        "/metrics").text
    # the person lets go of it: back in the queue, for people only
    server.call("worker/v1/extend", {"workerToken": token, "leaseId": handed["leaseId"],
                                     "release": True})
    # the built-in solver goes on reading newer work (oldest first), never this task
    later = create(server, key, captcha_png("cd34"), threshold=None)
    assert server.wait_result(key, later)["solution"] == {"text": GUESS}
    assert unsure.reads[image] == 1
    assert server.call("getTaskResult", {"clientKey": key, "taskId": task_id})[
        "status"] == "processing"
    [again] = lease(server, token)
    assert again["taskId"] == task_id
    assert complete(server, token, again["leaseId"], solution={"text": "AB12"}) == {
        "errorId": 0}
    answer = server.wait_result(key, task_id)
    assert answer["status"] == "ready" and answer["solution"] == {"text": "AB12"}
    assert balance_units(server, key) == (OPENING_UNITS - 2 * PRICE_UNITS, 0,
                                          OPENING_UNITS - 2 * PRICE_UNITS)
    assert unsure.reads[image] == 1


def test_a_capd_worker_failing_a_task_hands_it_to_the_external_worker(
        make_server: Callable[..., LiveServer]) -> None:
    server = make_server(builtin_ocr=False, human_fallback=True)
    key, token = server.new_account("1"), server.new_worker_token()
    reader = server.new_worker_token()
    assert lease(server, token) == []
    task_id = create(server, key, captcha_png("ab12"))
    [read] = lease(server, reader, builtinReader=True)
    assert read["taskId"] == task_id
    assert complete(server, reader, read["leaseId"],
                    errorCode="ERROR_CAPTCHA_UNSOLVABLE") == {"errorId": 0}
    assert server.call("getTaskResult", {"clientKey": key, "taskId": task_id})[
        "status"] == "processing"
    assert lease(server, reader, builtinReader=True) == []  # never the reader's again
    [handed] = lease(server, token)
    assert handed["taskId"] == task_id
    assert complete(server, token, handed["leaseId"], solution={"text": "ab12"}) == {
        "errorId": 0}
    assert server.wait_result(key, task_id)["solution"] == {"text": "ab12"}
    assert balance_units(server, key)[0] == OPENING_UNITS - PRICE_UNITS


def test_a_capd_worker_failing_a_task_with_the_setting_off_fails_it(
        make_server: Callable[..., LiveServer]) -> None:
    server = make_server(builtin_ocr=False)
    key, token = server.new_account("1"), server.new_worker_token()
    reader = server.new_worker_token()
    assert lease(server, token) == []
    task_id = create(server, key, captcha_png("ab12"))
    [read] = lease(server, reader, builtinReader=True)
    complete(server, reader, read["leaseId"], errorCode="ERROR_CAPTCHA_UNSOLVABLE")
    assert server.wait_result(key, task_id)["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"


def test_builtin_reader_must_be_a_boolean(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(builtin_ocr=False)
    answer = server.call("worker/v1/lease", {"workerToken": server.new_worker_token(),
                                             "types": [IMAGE], "builtinReader": "yes"})
    assert answer["errorCode"] == "ERROR_BAD_PARAMETERS"
    assert "builtinReader" in answer["errorDescription"]


def test_a_task_handed_to_people_keeps_its_deadline_and_then_fails_uncharged(
        make_server: Callable[..., LiveServer], clock: FakeClock) -> None:
    unsure = Unsure()
    server = make_server(recogniser=unsure, human_fallback=True, image_deadline_s=60)
    key, token = server.new_account("1"), server.new_worker_token()
    assert lease(server, token) == []
    task_id = create(server, key, captcha_png("ab12"))
    assert unsure.entered.acquire(timeout=10)
    [handed] = lease(server, token, wait_s=10)  # handed over; the person holds it
    assert handed["deadlineAt"] == math.floor(clock() + 60)  # createTask's, kept
    clock.advance(61)  # past the deadline set at createTask
    answer = server.wait_result(key, task_id)
    assert answer["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert complete(server, token, handed["leaseId"], solution={"text": "late"})[
        "errorCode"] == "ERROR_LEASE_NOT_FOUND"
    assert balance_units(server, key) == (OPENING_UNITS, 0, OPENING_UNITS)
