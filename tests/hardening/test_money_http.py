"""Money invariants under many concurrent real HTTP clients (issue 7 §2), on both backends:
threads create image and token tasks, poll them, report some, while workers lease and
complete (or fail) the token tasks and the operator tops up; afterwards every invariant
of ``tests/hardening/invariants.py`` holds and every accepted task has ended."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from capd.solving.ocr.base import Reading
from tests.hardening.invariants import task_state_of, violations
from tests.helpers import LiveServer, image_task

TOKEN_TASK = {"type": "TurnstileTaskProxyless", "websiteURL": "https://example.com/",
              "websiteKey": "0x4AAAAAAAC3DHQFLr1GavRN"}
CLIENTS = 12
ROUNDS = 8


class QuickRecogniser:
    """Reads every image at once (the OCR is not what this test is about); one in four
    images comes back unreadable, so failures and releases happen too."""

    name = "quick"

    def read(self, image: bytes, spec: Any) -> Reading:
        return Reading("" if len(image) % 4 == 0 else "abcd", 0.99)


def test_concurrent_clients_and_workers_keep_the_books(make_server: Any) -> None:
    server: LiveServer = make_server(
        recogniser=QuickRecogniser(), violation_block_threshold=10**6,
        unknown_key_ban_threshold=10**6, max_polls_per_s=10**6)
    keys = [server.new_account(random.choice(["0.002", "0.01", "1"])) for _ in range(4)]
    token = server.new_worker_token()
    accepted: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    codes: dict[str, int] = {}

    def note(answer: dict[str, Any]) -> None:
        with lock:
            code = answer.get("errorCode", "ok")
            codes[code] = codes.get(code, 0) + 1

    def client(n: int) -> None:
        rnd = random.Random(n)
        key = keys[n % len(keys)]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(ROUNDS):
                task = (image_task("ab" + str(i)) if rnd.random() < 0.6 else TOKEN_TASK)
                created = http.post("/createTask", json={"clientKey": key, "task": task}).json()
                note(created)
                if created["errorId"]:
                    continue
                task_id = created["taskId"]
                with lock:
                    accepted.append((key, task_id))
                for _ in range(rnd.randint(1, 3)):
                    note(http.post("/getTaskResult", json={"clientKey": key,
                                                           "taskId": task_id}).json())
                for method in ("reportIncorrectImageCaptcha", "reportIncorrectTokenCaptcha"):
                    if rnd.random() < 0.3:
                        note(http.post(f"/{method}", json={"clientKey": key,
                                                          "taskId": task_id}).json())
                if rnd.random() < 0.2:
                    note(http.post("/getBalance", json={"clientKey": key}).json())

    def worker(n: int) -> None:
        rnd = random.Random(100 + n)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                leases = http.post("/worker/v1/lease", json={
                    "workerToken": token, "types": ["TurnstileTaskProxyless"], "max": 5,
                    "waitSeconds": 0.2}).json().get("leases", [])
                for item in leases:
                    outcome = ({"solution": {"token": "t"}} if rnd.random() < 0.7
                               else {"errorCode": "ERROR_CAPTCHA_UNSOLVABLE"})
                    done = http.post("/worker/v1/complete", json={
                        "workerToken": token, "leaseId": item["leaseId"], **outcome}).json()
                    assert done.get("errorId") == 0, done
                    if rnd.random() < 0.2:  # a duplicate completion changes nothing
                        again = http.post("/worker/v1/complete", json={
                            "workerToken": token, "leaseId": item["leaseId"], **outcome}).json()
                        assert again["errorId"] == 1

    def operator() -> None:
        from decimal import Decimal

        from capd.domain.money import to_units

        async def top_up(store: Any) -> None:
            account = await store.account_for_key(random.choice(keys))
            await store.adjust_balance(account.id, to_units(Decimal("0.001")), "topup",
                                       "test", "", server.clock())

        while not stop.is_set():
            server.admin(top_up)
            time.sleep(0.2)

    # a worker must have asked before token tasks are accepted
    server.call("worker/v1/lease", {"workerToken": token, "types": ["TurnstileTaskProxyless"]})
    with ThreadPoolExecutor(max_workers=CLIENTS + 3) as pool:
        background = [pool.submit(worker, n) for n in range(2)] + [pool.submit(operator)]
        list(pool.map(client, range(CLIENTS)))
        deadline = time.monotonic() + 60
        ids = [task_id for _, task_id in accepted]
        while time.monotonic() < deadline:
            states = task_state_of(server.settings.database_url, ids)
            if all(s in ("solved", "failed") for s in states.values()):
                break
            time.sleep(0.2)
        stop.set()
        for job in background:
            job.result()
    assert "ERROR_INTERNAL" not in codes and "ERROR_SERVICE_UNAVAILABLE" not in codes, codes
    assert len(accepted) > CLIENTS  # the load did real work
    states = task_state_of(server.settings.database_url, [t for _, t in accepted])
    assert len(states) == len(accepted)
    assert set(states.values()) <= {"solved", "failed"}, states
    assert violations(server.settings.database_url) == {}
