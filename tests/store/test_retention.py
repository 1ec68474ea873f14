"""Store contract for retention (issue 12): payloads dropped, finished tasks deleted, in
bounded batches; the ledger and balances never move."""

from __future__ import annotations

import dataclasses
from typing import Any

from capd.store.base import Store, TaskState
from tests.store.contract import NOW, counter_ids, covers, funded, new_task


async def finished_tasks(store: Store, account_id: int, count: int, ended: float = NOW,
                         solved: bool = True) -> list[int]:
    """``count`` tasks with a callback URL, finished at ``ended``, ``ended + 1`` …"""
    ids = []
    new_id = counter_ids(5000 + 100 * account_id)
    for i in range(count):
        task = dataclasses.replace(new_task(account_id),
                                   callback_url="https://u:secret@hook.example/cb")
        task_id = await store.create_task(task, new_id)
        outcome: dict[str, Any] = ({"solution": {"text": "abc"}} if solved
                                   else {"error_code": "ERROR_CAPTCHA_UNSOLVABLE"})
        assert await store.finish_task(task_id, ended + i, **outcome) is not None
        ids.append(task_id)
    return ids


@covers("drop_payloads", "get_task", "finish_task")
def test_drop_payloads_forgets_payload_options_and_callback_url(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [done] = await finished_tasks(store, account_id, 1)
        open_id = await store.create_task(new_task(account_id), counter_ids(9000))
        assert await store.drop_payloads(NOW + 1, 100, NOW + 2) == 1
        task = await store.get_task(done)
        assert task is not None and task.state == TaskState.SOLVED
        assert (task.payload, task.options, task.callback_url) == ({}, {}, None)
        assert task.solution == {"text": "abc"} and task.cost_units == 100
        still_open = await store.get_task(open_id)
        assert still_open is not None and still_open.payload == {"body": "x"}
    run(body)


@covers("drop_payloads")
def test_drop_payloads_spares_tasks_that_ended_later(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [early, late] = await finished_tasks(store, account_id, 2)  # ended NOW, NOW + 1
        assert await store.drop_payloads(NOW + 0.5, 100, NOW + 2) == 1
        assert (await store.get_task(early)).payload == {}  # type: ignore[union-attr]
        assert (await store.get_task(late)).payload == {"body": "x"}  # type: ignore[union-attr]
    run(body)


@covers("drop_payloads")
def test_drop_payloads_takes_at_most_limit_oldest_first(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = await finished_tasks(store, account_id, 3)
        assert await store.drop_payloads(NOW + 10, 2, NOW + 20) == 2
        kept = [(await store.get_task(i)).payload != {} for i in ids]  # type: ignore[union-attr]
        assert kept == [False, False, True]
        assert await store.drop_payloads(NOW + 10, 2, NOW + 20) == 1
        assert await store.drop_payloads(NOW + 10, 2, NOW + 20) == 0
    run(body)


@covers("delete_tasks", "ledger", "ledger_sum", "account")
def test_delete_tasks_keeps_ledger_and_balance(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        ids = await finished_tasks(store, account_id, 2)
        await finished_tasks(store, account_id, 1, solved=False, ended=NOW + 5)
        open_id = await store.create_task(new_task(account_id), counter_ids(9000))
        before = await store.account(account_id)
        ledger_before = await store.ledger(account_id, 100)
        assert await store.delete_tasks(NOW + 10, 100) == 3
        assert [await store.get_task(i) for i in ids] == [None, None]
        assert await store.get_task(open_id) is not None
        assert await store.account(account_id) == before
        assert await store.ledger(account_id, 100) == ledger_before
        assert {e.task_id for e in ledger_before if e.kind == "charge"} == set(ids)
        assert await store.ledger_sum(account_id) == 800
    run(body)


@covers("delete_tasks")
def test_delete_tasks_takes_at_most_limit_and_only_ended_before(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = await finished_tasks(store, account_id, 3)  # ended NOW .. NOW + 2
        assert await store.delete_tasks(NOW + 1.5, 1) == 1
        assert await store.delete_tasks(NOW + 1.5, 1) == 1
        assert await store.delete_tasks(NOW + 1.5, 1) == 0
        assert [await store.get_task(i) is None for i in ids] == [True, True, False]
    run(body)


@covers("delete_tasks", "get_task")
def test_a_deleted_task_is_not_read_from_the_poll_cache(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [done] = await finished_tasks(store, account_id, 1)
        assert await store.get_task(done, with_payload=False) is not None  # now cached
        assert await store.delete_tasks(NOW + 1, 10) == 1
        assert await store.get_task(done, with_payload=False) is None
    run(body)


@covers("reclaim_space")
def test_reclaim_space_after_deletes_answers_bytes(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await finished_tasks(store, account_id, 3)
        await store.delete_tasks(NOW + 10, 100)
        assert await store.reclaim_space() >= 0
        assert await store.reclaim_space() >= 0  # again: nothing left, still fine
    run(body)


@covers("create_task", "delete_tasks")
def test_the_id_of_a_deleted_charged_task_is_never_drawn_again(run: Any) -> None:
    """Ids are random; once retention deletes a task, its id could be drawn again, and a
    new task would share the ledger's charge row (and its once-per-task index) with the
    old one. The ledger keeps the id taken: the next id is drawn instead."""
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [charged] = await finished_tasks(store, account_id, 1, solved=True)
        assert await store.delete_tasks(NOW + 10, 100) == 1
        drawn = iter([charged, charged + 1])
        task_id = await store.create_task(new_task(account_id), lambda: next(drawn))
        assert task_id == charged + 1
        assert await store.finish_task(task_id, NOW + 20, solution={"text": "x"}) is not None
        account = await store.account(account_id)
        assert account is not None
        assert await store.ledger_sum(account_id) == account.balance_units == 800
    run(body)


@covers("create_task", "delete_tasks")
def test_the_id_of_a_deleted_uncharged_task_may_be_drawn_again(run: Any) -> None:
    """A task that failed uncharged leaves nothing in the ledger: its id is free."""
    async def body(store: Store) -> None:
        account_id = await funded(store)
        [failed] = await finished_tasks(store, account_id, 1, solved=False)
        assert await store.delete_tasks(NOW + 10, 100) == 1
        assert await store.create_task(new_task(account_id), lambda: failed) == failed
    run(body)
