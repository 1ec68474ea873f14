"""The read caches a store keeps for the poll path stay bounded however many tasks pass."""

from __future__ import annotations

import dataclasses

from capd.store.base import Task, TaskState
from capd.store.counters import CACHE_LIMIT, FINAL_TASKS_KEPT, Bounded, FinalTasks


def finished(task_id: int) -> Task:
    return Task(id=task_id, account_id=1, type="ImageToTextTask", payload={}, options={},
                state=TaskState.SOLVED, price_units=1, reserved_units=0, created_at=0.0,
                deadline_at=60.0, lease_until=None, lease_owner=None, attempts=1,
                ended_at=1.0, solution={"text": "abc"}, error_code=None, cost_units=1,
                client_ip="203.0.113.7", callback_url=None, reported_at=None)


def test_final_tasks_never_hold_more_than_their_limit() -> None:
    cache = FinalTasks()
    template = finished(1)
    for task_id in range(1, 3 * FINAL_TASKS_KEPT):
        cache.keep(dataclasses.replace(template, id=task_id))
        assert len(cache) <= FINAL_TASKS_KEPT
    assert (3 * FINAL_TASKS_KEPT - 1) in cache  # the newest is always kept


def test_open_tasks_are_not_kept() -> None:
    cache = FinalTasks()
    cache.keep(dataclasses.replace(finished(7), state=TaskState.QUEUED, ended_at=None))
    assert 7 not in cache


def test_a_bounded_cache_starts_afresh_when_full() -> None:
    cache: Bounded[int, int] = Bounded()
    for n in range(CACHE_LIMIT + 1):
        cache.put(n, n)
    assert len(cache) == 1 and cache[CACHE_LIMIT] == CACHE_LIMIT
