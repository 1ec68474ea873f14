"""On PostgreSQL, lease expiry and task deadlines follow the database's clock (issue 12):
a node whose own clock is an hour ahead or behind neither takes a live lease from its
holder nor keeps a lease past its end, and its tasks' deadlines are the database's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from capd.store import open_store
from capd.store.base import Claimer, Store, TaskState
from tests.store.contract import counter_ids, funded, new_task

HOUR = 3600.0
IMAGE = ["ImageToTextTask"]
SLACK_S = 30.0  # how far the test's own steps may move the real clock


def ahead() -> float:
    return time.time() + HOUR


def behind() -> float:
    return time.time() - HOUR


def with_nodes(pg_url: str, body: Callable[[Store, Store], Awaitable[Any]]) -> None:
    """Two nodes on one database, each its own store (connection pool)."""
    async def main() -> None:
        first, second = open_store(pg_url), open_store(pg_url)
        await first.migrate()
        try:
            await body(first, second)
        finally:
            await first.close()
            await second.close()
    asyncio.run(main())


async def queued(store: Store, now: float, deadline_s: float = 120.0) -> int:
    account_id = await funded(store)
    return await store.create_task(new_task(account_id, created=now, deadline=now + deadline_s),
                                   counter_ids())


def test_node_ahead_does_not_take_a_live_lease(pg_url: str) -> None:
    async def body(slow: Store, fast: Store) -> None:
        task_id = await queued(slow, behind())
        [task] = await slow.claim_tasks(IMAGE, 1, "slow", 60, behind())
        assert task.id == task_id
        assert await fast.claim_tasks(IMAGE, 1, "fast", 60, ahead()) == []
        assert await fast.overdue_tasks(ahead()) == []  # its deadline is the database's
        # the holder (an hour behind) still holds it: it can extend and finish
        until = await slow.extend_lease(task_id, "slow", behind() + 90, behind())
        assert until is not None and abs(until - (time.time() + 90)) < SLACK_S
        done = await slow.finish_task(task_id, behind(), solution={"text": "ok"},
                                      owner="slow")
        assert done is not None and done.state == TaskState.SOLVED
    with_nodes(pg_url, body)


def test_node_behind_does_not_keep_an_ended_lease(pg_url: str) -> None:
    async def body(fast: Store, slow: Store) -> None:
        task_id = await queued(fast, ahead())
        [task] = await fast.claim_tasks(IMAGE, 1, "fast", 0, ahead())  # ends at once
        assert task.lease_until is not None and task.lease_until <= time.time()
        # an hour behind, the node would still see the lease as live by its own clock
        assert await slow.extend_lease(task_id, "fast", behind() + 60, behind()) is None
        assert await slow.finish_task(task_id, behind(), error_code="ERROR_CAPTCHA_UNSOLVABLE",
                                      owner="fast") is None
        [again] = await slow.claim_tasks(IMAGE, 1, "slow", 60, behind())
        assert again.id == task_id and again.lease_owner == "slow"
        assert [w.leases_held for w in await fast.workers_online(ahead())] == [1]
    with_nodes(pg_url, body)


def test_deadline_follows_the_database_clock(pg_url: str) -> None:
    async def body(fast: Store, slow: Store) -> None:
        task_id = await queued(fast, ahead(), deadline_s=60)
        task = await slow.get_task(task_id)
        assert task is not None and abs(task.deadline_at - (time.time() + 60)) < SLACK_S
        assert await slow.overdue_tasks(behind()) == []
        assert await fast.overdue_tasks(ahead()) == []  # an hour ahead: not overdue either
        assert [t.id for t in await slow.claim_tasks(IMAGE, 1, "slow", 30, behind())] == [
            task_id]
    with_nodes(pg_url, body)


def test_task_past_its_database_deadline_is_overdue_for_every_node(pg_url: str) -> None:
    async def body(fast: Store, slow: Store) -> None:
        task_id = await queued(slow, behind(), deadline_s=0)  # due at once
        assert [t.id for t in await slow.overdue_tasks(behind())] == [task_id]
        assert [t.id for t in await fast.overdue_tasks(ahead())] == [task_id]
        assert await fast.claim_tasks(IMAGE, 1, "fast", 30, ahead()) == []
    with_nodes(pg_url, body)


def test_a_node_behind_hands_to_humans_only_a_live_lease(pg_url: str) -> None:
    """The human fallback's hand-over judges the lease on the database's clock too."""
    async def body(fast: Store, slow: Store) -> None:
        task_id = await queued(fast, ahead())
        await fast.claim_tasks(IMAGE, 1, "fast", 0, ahead(), Claimer.READER)  # ends at once
        assert not await slow.hand_to_humans(task_id, "fast", behind())
        [task] = await slow.claim_tasks(IMAGE, 1, "slow", 60, behind(), Claimer.READER)
        assert task.id == task_id
        assert await fast.hand_to_humans(task_id, "slow", ahead())  # live, whatever fast says
        assert await slow.claim_tasks(IMAGE, 1, "slow", 60, behind(), Claimer.READER) == []
    with_nodes(pg_url, body)
