"""Store contract for the callback outbox (issue 12): written with the finish, claimed
with a lease, capped per account, settled once."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest

from capd.store.base import CallbackState, Store, Task
from tests.store.conftest import open_backend
from tests.store.contract import NOW, PERSISTENT, counter_ids, covers, funded, new_task

other_nodes = pytest.mark.parametrize("location", PERSISTENT, indirect=True)

LEASE_S = 30.0


def render(task: Task) -> str:
    return orjson.dumps({"taskId": task.id, "solution": task.solution}).decode()


async def callback_tasks(store: Store, account_id: int, count: int,
                         url: str = "https://hook.example/cb") -> list[int]:
    """``count`` tasks of the account, with a callback URL, solved at NOW with ``render``."""
    new_id = counter_ids(10_000 * account_id)
    ids = []
    for _ in range(count):
        task = dataclasses.replace(new_task(account_id), callback_url=url)
        task_id = await store.create_task(task, new_id)
        assert await store.finish_task(task_id, NOW, solution={"text": "ok"},
                                       callback=render) is not None
        ids.append(task_id)
    return ids


@covers("finish_task", "claim_callbacks")
def test_finish_with_callback_queues_the_rendered_body(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [task_id] = await callback_tasks(store, account_id, 1)
        [cb] = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        assert (cb.task_id, cb.account_id, cb.url) == (task_id, account_id,
                                                      "https://hook.example/cb")
        assert orjson.loads(cb.body) == {"taskId": task_id, "solution": {"text": "ok"}}
        assert (cb.attempts, cb.state, cb.leased_until) == (1, CallbackState.PENDING,
                                                            NOW + LEASE_S)
    run(body)


@covers("finish_task", "callback_counts")
def test_no_outbox_row_without_a_url_or_without_callback(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        plain = await store.create_task(new_task(account_id), counter_ids(1))
        await store.finish_task(plain, NOW, solution={"text": "x"}, callback=render)
        with_url = await store.create_task(
            dataclasses.replace(new_task(account_id), callback_url="https://h.example/"),
            counter_ids(2))
        await store.finish_task(with_url, NOW, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        assert await store.callback_counts() == {"pending": 0, "delivered": 0, "failed": 0}
    run(body)


@covers("finish_task", "callback_counts")
def test_a_finish_that_changes_nothing_queues_nothing(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [task_id] = await callback_tasks(store, account_id, 1)
        assert await store.finish_task(task_id, NOW, solution={"text": "again"},
                                       callback=render) is None
        assert (await store.callback_counts())["pending"] == 1
    run(body)


@covers("claim_callbacks", "settle_callback")
def test_an_account_has_at_most_per_account_in_flight(run: Any) -> None:
    async def body(store: Store) -> None:
        a = await funded(store, key="a" * 32)
        b = await funded(store, key="b" * 32)
        await callback_tasks(store, a, 3)
        [b_task] = await callback_tasks(store, b, 1)
        first = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        assert sorted(c.account_id for c in first) == sorted([a, a, b])
        assert await store.claim_callbacks(NOW, LEASE_S, 10, 2) == []  # a is at its cap
        a_cb = next(c for c in first if c.account_id == a)
        assert await store.settle_callback(a_cb.id, CallbackState.DELIVERED, NOW)
        [third] = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        assert third.account_id == a and third.id not in {c.id for c in first}
        assert b_task in {c.task_id for c in first}
    run(body)


@covers("claim_callbacks")
def test_claim_takes_at_most_limit(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await callback_tasks(store, account_id, 3)
        assert len(await store.claim_callbacks(NOW, LEASE_S, 1, 5)) == 1
        assert len(await store.claim_callbacks(NOW, LEASE_S, 5, 5)) == 2
    run(body)


@covers("claim_callbacks")
def test_an_expired_lease_is_claimed_again(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await callback_tasks(store, account_id, 1)
        [first] = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        assert await store.claim_callbacks(NOW + LEASE_S - 1, LEASE_S, 10, 2) == []
        [again] = await store.claim_callbacks(NOW + LEASE_S, LEASE_S, 10, 2)
        assert again.id == first.id and again.attempts == 2
    run(body)


@covers("settle_callback", "claim_callbacks", "callback_counts")
def test_a_retry_is_due_at_next_at(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await callback_tasks(store, account_id, 1)
        [cb] = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        assert await store.settle_callback(cb.id, CallbackState.PENDING, NOW + 4)
        assert await store.claim_callbacks(NOW + 3, LEASE_S, 10, 2) == []
        [again] = await store.claim_callbacks(NOW + 4, LEASE_S, 10, 2)
        assert again.id == cb.id and again.attempts == 2
        assert await store.callback_counts() == {"pending": 1, "delivered": 0, "failed": 0}
    run(body)


@covers("settle_callback", "callback_counts")
def test_failed_is_final_and_counted(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await callback_tasks(store, account_id, 2)
        one, two = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        assert await store.settle_callback(one.id, CallbackState.FAILED, NOW)
        assert await store.settle_callback(two.id, CallbackState.DELIVERED, NOW)
        assert not await store.settle_callback(one.id, CallbackState.PENDING, NOW)
        assert await store.claim_callbacks(NOW + 100, LEASE_S, 10, 2) == []
        assert await store.callback_counts() == {"pending": 0, "delivered": 1, "failed": 1}
    run(body)


@covers("drop_payloads", "delete_tasks", "callback_counts")
def test_retention_removes_settled_rows_then_all_rows_of_deleted_tasks(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await callback_tasks(store, account_id, 2)
        one, _ = await store.claim_callbacks(NOW, LEASE_S, 10, 2)
        await store.settle_callback(one.id, CallbackState.DELIVERED, NOW)
        await store.drop_payloads(NOW + 1, 100, NOW + 1)
        assert await store.callback_counts() == {"pending": 1, "delivered": 0, "failed": 0}
        await store.delete_tasks(NOW + 1, 100)
        assert await store.callback_counts() == {"pending": 0, "delivered": 0, "failed": 0}
    run(body)


@other_nodes
@covers("claim_callbacks")
def test_concurrent_claims_on_two_nodes_share_out_rows_and_keep_the_cap(
        run: Any, location: str) -> None:
    async def body(store: Store) -> None:
        a = await funded(store, key="a" * 32)
        b = await funded(store, key="b" * 32)
        await callback_tasks(store, a, 6)
        await callback_tasks(store, b, 6)
        other = open_backend(location)
        try:
            await other.callback_counts()  # its connection pool opened before the race
            got = await asyncio.gather(*(node.claim_callbacks(NOW, LEASE_S, 3, 2)
                                         for node in (store, other, store, other)))
        finally:
            await other.close()
        ids = [c.id for batch in got for c in batch]
        assert len(ids) == len(set(ids)) == 4  # two per account, each row once
        accounts = [c.account_id for batch in got for c in batch]
        assert sorted(accounts) == sorted([a, a, b, b])
    run(body)
