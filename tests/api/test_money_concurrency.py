"""Reserve, capture, release under concurrency (spec §3): never negative, never over-reserved."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.helpers import GatedRecogniser, image_task

PRICE_UNITS = 30_000  # 0.0003 USD


def test_concurrent_creates_never_overdraw(make_server: Any, engine: Any) -> None:
    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated, ocr_threads=2, violation_block_threshold=1000)
    key = server.new_account("0.003")  # exactly ten tasks' worth
    body = {"clientKey": key, "task": image_task("pq82")}

    def create(_: int) -> dict[str, Any]:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            return client.post("/createTask", json=body).json()

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(create, range(40)))
        accepted = [a["taskId"] for a in answers if a["errorId"] == 0]
        refused = [a["errorCode"] for a in answers if a["errorId"] == 1]
        assert len(accepted) == 10
        assert set(refused) == {"ERROR_ZERO_BALANCE"} and len(refused) == 30
        balance, reserved, ledger = server.ledger_consistent(key)
        assert (balance, reserved, ledger) == (300_000, 10 * PRICE_UNITS, 300_000)
    finally:
        gated.gate.set()
    results = [server.wait_result(key, task_id) for task_id in accepted]
    assert all(r["solution"]["text"] == "pq82" for r in results)
    balance, reserved, ledger = server.ledger_consistent(key)
    assert (balance, reserved, ledger) == (0, 0, 0)

    async def charges(store: Any) -> list[Any]:
        account = await store.account_for_key(key)
        return [e for e in await store.ledger(account.id, 100) if e.kind == "charge"]

    rows = server.admin(charges)
    assert sorted(e.task_id for e in rows) == sorted(accepted)  # one charge per task
