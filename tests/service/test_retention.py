"""Retention through the service (issue 12): a pruned task is an unknown task to
getTaskResult (spec §4's answer for an expired result), and no balance moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from capd.api import app as app_module
from capd.service import CreateTaskRequest, ResultState, TaskResultRequest
from capd.service.retention import prune_all, prune_batch
from capd.store.base import Store
from tests.helpers import FakeClock, image_task
from tests.service.kit import PUBLIC_IP, World, refused_code, run, world

HOUR_S = 3600.0


def solved_task(w: World, key: str) -> int:
    task_id = run(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, image_task(),
                                                          None))).task_id
    run(w.service.finish_task(task_id, solution={"text": "abc"}))
    return task_id


def test_a_deleted_task_answers_no_such_captcha(store: Store, clock: FakeClock,
                                                tmp_path: Path) -> None:
    # a result TTL longer than task retention, so that only the deletion can explain it
    w = world(store, clock, tmp_path, result_ttl_s=10 * HOUR_S, task_retention_s=HOUR_S)
    w.dispatcher.attach("ImageToTextTask")
    key = w.account()
    task_id = solved_task(w, key)
    money = w.money(key)
    clock.advance(HOUR_S + 1)
    pruned = run(prune_batch(store, w.settings, clock()))
    assert pruned.tasks_deleted == 1
    assert refused_code(w.service.get_task_result(
        TaskResultRequest(key, PUBLIC_IP, task_id))) == "ERROR_NO_SUCH_CAPCHA_ID"
    assert w.money(key) == money


def test_a_dropped_payload_leaves_the_result_readable(store: Store, clock: FakeClock,
                                                      tmp_path: Path) -> None:
    w = world(store, clock, tmp_path, payload_retention_s=1)
    w.dispatcher.attach("ImageToTextTask")
    key = w.account()
    task_id = solved_task(w, key)
    clock.advance(2)
    assert run(prune_all(store, w.settings, clock())).payloads_dropped == 1
    result = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
    assert result.state == ResultState.READY and result.solution == {"text": "abc"}


def test_nothing_is_pruned_before_its_time(store: Store, clock: FakeClock,
                                           tmp_path: Path) -> None:
    w = world(store, clock, tmp_path)
    w.dispatcher.attach("ImageToTextTask")
    task_id = solved_task(w, w.account())
    clock.advance(w.settings.payload_retention_s - 1)
    assert run(prune_all(store, w.settings, clock())).payloads_dropped == 0
    task = run(store.get_task(task_id))
    assert task is not None and task.payload != {}


def test_the_sweeper_works_through_a_backlog_a_batch_a_round(
        store: Store, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More finished tasks than one batch holds are not left for the next minute: while
    batches come back full, the sweeper prunes again each round (the clock stands still
    here, so without that only the first batch would ever go)."""
    monkeypatch.setattr(app_module, "PRUNE_BATCH", 2)
    monkeypatch.setattr(app_module, "SWEEP_INTERVAL_S", 0)
    w = world(store, clock, tmp_path, payload_retention_s=1)
    w.dispatcher.attach("ImageToTextTask")
    key = w.account()
    ids = [solved_task(w, key) for _ in range(5)]
    clock.advance(2)

    async def sweep() -> list[dict[str, object]]:
        job = asyncio.create_task(app_module._sweeper(w.service))
        try:
            for _ in range(200):  # sweeper rounds, not time
                await asyncio.sleep(0)
                payloads = [task.payload for task in
                            [await store.get_task(i) for i in ids] if task is not None]
                if not any(payloads):
                    break
            return payloads
        finally:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)

    assert run(sweep()) == [{}] * 5
