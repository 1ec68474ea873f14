"""The human fallback's store primitives on every backend: a task the built-in reading
failed is handed to humans (``hand_to_humans``); from then on built-in readers
(``Claimer.READER``) never claim it, external workers do; the presence of external
workers is kept apart from that of ``capd worker`` processes."""

from __future__ import annotations

from typing import Any

from capd.store.base import Claimer, Store, TaskState
from tests.store.contract import NOW, counter_ids, covers, funded, new_task

IMAGE = "ImageToTextTask"
READER, EXTERNAL = Claimer.READER, Claimer.EXTERNAL


@covers("hand_to_humans", "claim_tasks", "get_task")
def test_a_task_handed_to_humans_is_claimed_by_external_workers_only(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        [read] = await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW, READER)
        assert await store.hand_to_humans(task_id, "builtin-1", NOW + 1)
        task = await store.get_task(task_id)
        assert task is not None and task.state == TaskState.QUEUED
        assert task.lease_owner is None and task.lease_until is None
        assert task.deadline_at == read.deadline_at  # the deadline is kept
        assert await store.claim_tasks([IMAGE], 5, "builtin-2", 10, NOW + 1, READER) == []
        [leased] = await store.claim_tasks([IMAGE], 5, "7:abc", 10, NOW + 1, EXTERNAL)
        assert leased.id == task_id and leased.lease_owner == "7:abc"
        assert leased.attempts == 2
    run(body)


@covers("claim_tasks", "create_task")
def test_readers_claim_every_task_not_handed_to_humans(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        first = await store.create_task(new_task(account_id), ids)
        second = await store.create_task(new_task(account_id, created=NOW + 1), ids)
        [read] = await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW + 2, READER)
        assert await store.hand_to_humans(read.id, "builtin-1", NOW + 2)
        # the reader goes on with the next task; the handed one waits for a person
        [other] = await store.claim_tasks([IMAGE], 5, "builtin-1", 10, NOW + 2, READER)
        assert (read.id, other.id) == (first, second)
    run(body)


@covers("hand_to_humans", "claim_tasks")
def test_an_expired_human_lease_returns_to_external_workers_only(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW, READER)
        assert await store.hand_to_humans(task_id, "builtin-1", NOW)
        await store.claim_tasks([IMAGE], 1, "7:abc", 10, NOW, EXTERNAL)
        # the person's lease runs out: still nobody's but a person's
        assert await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW + 10, READER) == []
        [again] = await store.claim_tasks([IMAGE], 1, "7:def", 10, NOW + 10, EXTERNAL)
        assert again.id == task_id
    run(body)


@covers("hand_to_humans", "claim_tasks", "finish_task")
def test_only_the_live_lease_holder_hands_a_task_to_humans(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        queued = await store.create_task(new_task(account_id), ids)
        assert not await store.hand_to_humans(queued, "builtin-1", NOW)  # not leased
        await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW, READER)
        assert not await store.hand_to_humans(queued, "builtin-2", NOW)  # another's lease
        assert not await store.hand_to_humans(queued, "builtin-1", NOW + 10)  # lease over
        assert not await store.hand_to_humans(999_999, "builtin-1", NOW)  # no such task
        # still the reader's to claim: nothing was handed over
        [again] = await store.claim_tasks([IMAGE], 1, "builtin-3", 10, NOW + 10, READER)
        assert again.id == queued
        await store.finish_task(queued, NOW + 11, error_code="ERROR_CAPTCHA_UNSOLVABLE",
                                owner="builtin-3")
        assert not await store.hand_to_humans(queued, "builtin-3", NOW + 11)  # finished
        task = await store.get_task(queued)
        assert task is not None and task.state == TaskState.FAILED
    run(body)


@covers("hand_to_humans", "claim_tasks")
def test_a_task_past_its_deadline_is_not_handed_to_humans(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id, deadline=NOW + 5),
                                          counter_ids())
        await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW, READER)
        assert not await store.hand_to_humans(task_id, "builtin-1", NOW + 6)
        task = await store.get_task(task_id)
        assert task is not None and task.state == TaskState.LEASED
    run(body)


@covers("hand_to_humans", "finish_task", "account", "ledger")
def test_a_task_handed_to_humans_keeps_its_reservation_and_is_charged_once(
        run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        task_id = await store.create_task(new_task(account_id, price=100), counter_ids())
        await store.claim_tasks([IMAGE], 1, "builtin-1", 10, NOW, READER)
        assert await store.hand_to_humans(task_id, "builtin-1", NOW)
        account = await store.account(account_id)
        assert account is not None and (account.balance_units, account.reserved_units) == (
            1000, 100)
        await store.claim_tasks([IMAGE], 1, "7:abc", 10, NOW + 1, EXTERNAL)
        done = await store.finish_task(task_id, NOW + 2, solution={"text": "abcd"},
                                       owner="7:abc")
        assert done is not None and done.state == TaskState.SOLVED and done.cost_units == 100
        account = await store.account(account_id)
        assert account is not None and (account.balance_units, account.reserved_units) == (
            900, 0)
        charges = [e for e in await store.ledger(account_id) if e.kind == "charge"]
        assert [(e.task_id, e.amount_units) for e in charges] == [(task_id, -100)]
    run(body)


@covers("note_workers", "worker_seen_since")
def test_external_worker_presence_is_kept_apart_from_readers(run: Any) -> None:
    async def body(store: Store) -> None:
        await store.note_workers([IMAGE], NOW, READER)
        assert await store.worker_seen_since(IMAGE, NOW)  # any worker: the reader counts
        assert not await store.worker_seen_since(IMAGE, NOW - 100, external=True)
        await store.note_workers([IMAGE], NOW + 5, EXTERNAL)
        assert await store.worker_seen_since(IMAGE, NOW + 5, external=True)
        assert await store.worker_seen_since(IMAGE, NOW + 5)
        # a reader's later call moves only the presence of any worker
        await store.note_workers([IMAGE], NOW + 9, READER)
        assert await store.worker_seen_since(IMAGE, NOW + 9)
        assert not await store.worker_seen_since(IMAGE, NOW + 6, external=True)
        assert await store.worker_seen_since(IMAGE, NOW + 5, external=True)
        # external workers are the default kind
        await store.note_workers(["TurnstileTask"], NOW + 9)
        assert await store.worker_seen_since("TurnstileTask", NOW + 9, external=True)
    run(body)
