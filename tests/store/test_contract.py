"""The Store contract: every backend passes the same tests (parametrise ``backend``)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capd.errors import InsufficientFunds
from capd.store.base import NewTask, Store, TaskState
from capd.store.postgres import PostgresStore
from capd.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def location(request: Any, tmp_path: Path) -> tuple[str, str]:
    """(backend, where): a fresh database of each backend."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "contract.db")
    return "postgres", request.getfixturevalue("pg_url")


def open_backend(location: tuple[str, str]) -> Store:
    backend, where = location
    if backend == "sqlite":
        return SQLiteStore(where)
    return PostgresStore(where)


@pytest.fixture
def run(location: tuple[str, str]) -> Iterator[Callable[[Callable[[Store], Awaitable[Any]]],
                                                         Any]]:
    """Run an async test body against a freshly migrated store of each backend."""
    def go(body: Callable[[Store], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            store = open_backend(location)
            await store.migrate()
            try:
                return await body(store)
            finally:
                await store.close()
        return asyncio.run(main())
    yield go


def counter_ids(start: int = 1000) -> Callable[[], int]:
    it = itertools.count(start)
    return lambda: next(it)


def new_task(account_id: int, price: int = 100, deadline: float = NOW + 60,
             task_type: str = "ImageToTextTask") -> NewTask:
    return NewTask(account_id=account_id, type=task_type, payload={"body": "x"},
                   options={"nocache": False}, price_units=price, created_at=NOW,
                   deadline_at=deadline, client_ip="198.51.100.1")


async def funded(store: Store, units: int = 1000, key: str = "a" * 32) -> int:
    account_id = await store.create_account("t", key, NOW)
    if units:
        await store.adjust_balance(account_id, units, "topup", "test", "", NOW)
    return account_id


def test_migrate_is_idempotent(run: Any) -> None:
    async def body(store: Store) -> None:
        first = await store.migrate()
        assert await store.migrate() == first >= 1
    run(body)


def test_keys_and_callers(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        await store.add_key(account_id, "b" * 32, NOW)
        await store.whitelist_add(account_id, "10.0.0.0/8")
        caller = await store.caller_for_key("b" * 32)
        assert caller is not None and caller.account_id == account_id
        assert caller.whitelist == ("10.0.0.0/8",)
        assert await store.revoke_key("b" * 32, NOW)
        assert not await store.revoke_key("b" * 32, NOW)
        assert await store.caller_for_key("b" * 32) is None
        assert (await store.account_for_key("b" * 32)).id == account_id  # type: ignore[union-attr]
        assert [k.revoked_at is not None for k in await store.keys(account_id)] == [False, True]
    run(body)


def test_ledger_moves_the_balance(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        assert await store.adjust_balance(account_id, -300, "adjustment", "op", "", NOW) == 700
        with pytest.raises(InsufficientFunds):
            await store.adjust_balance(account_id, -701, "adjustment", "op", "", NOW)
        account = await store.account(account_id)
        assert account is not None and account.balance_units == 700
        assert await store.ledger_sum(account_id) == 700
        assert [e.kind for e in await store.ledger(account_id)] == ["adjustment", "topup"]
    run(body)


def test_reservation_is_refused_beyond_the_available_balance(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 250)
        ids = counter_ids()
        await store.create_task(new_task(account_id), ids)
        await store.create_task(new_task(account_id), ids)
        with pytest.raises(InsufficientFunds):
            await store.create_task(new_task(account_id), ids)
        account = await store.account(account_id)
        assert account is not None and (account.balance_units, account.reserved_units) == (
            250, 200)
        with pytest.raises(InsufficientFunds):  # cannot take back what is reserved
            await store.adjust_balance(account_id, -100, "adjustment", "op", "", NOW)
    run(body)


def test_ids_that_collide_are_drawn_again(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        draws = iter([7, 7, 7, 8])
        assert await store.create_task(new_task(account_id), lambda: next(draws)) == 7
        assert await store.create_task(new_task(account_id), lambda: next(draws)) == 8
    run(body)


def test_claim_hands_each_task_to_one_owner(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        created = [await store.create_task(new_task(account_id), ids) for _ in range(3)]
        a = await store.claim_tasks(["ImageToTextTask"], 2, "a", 10, NOW)
        b = await store.claim_tasks(["ImageToTextTask"], 5, "b", 10, NOW)
        assert [t.id for t in a] == created[:2] and [t.id for t in b] == created[2:]
        assert all(t.state == TaskState.LEASED and t.lease_until == NOW + 10 for t in a + b)
        assert await store.claim_tasks(["ImageToTextTask"], 5, "c", 10, NOW + 5) == []
        assert await store.claim_tasks(["Other"], 5, "c", 10, NOW) == []
        # expired leases return to the queue
        again = await store.claim_tasks(["ImageToTextTask"], 5, "c", 10, NOW + 10)
        assert sorted(t.id for t in again) == sorted(created)
        assert all(t.attempts == 2 for t in again)
    run(body)


def test_claim_skips_tasks_past_their_deadline(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id, deadline=NOW + 5), counter_ids())
        assert await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW + 5) == []
        assert [t.id for t in await store.overdue_tasks(NOW + 5)] == [task_id]
    run(body)


def test_finish_captures_once(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        task_id = await store.create_task(new_task(account_id, price=100), counter_ids())
        [leased] = await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW)
        assert await store.finish_task(task_id, NOW + 1, solution={"text": "x"},
                                       owner="b") is None  # not the lease holder
        done = await store.finish_task(task_id, NOW + 1, solution={"text": "x"}, owner="a")
        assert done is not None and done.state == TaskState.SOLVED and done.cost_units == 100
        assert await store.finish_task(task_id, NOW + 2, error_code="ERROR_X") is None
        assert await store.finish_task(task_id, NOW + 2, solution={"text": "y"}) is None
        account = await store.account(account_id)
        assert account is not None and (account.balance_units, account.reserved_units) == (900, 0)
        assert await store.ledger_sum(account_id) == 900
    run(body)


def test_expired_lease_holder_cannot_finish(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW)
        assert await store.finish_task(task_id, NOW + 11, solution={"t": 1}, owner="a") is None
    run(body)


def test_failure_releases_the_reservation(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        task_id = await store.create_task(new_task(account_id, price=100), counter_ids())
        done = await store.finish_task(task_id, NOW + 1, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        assert done is not None and done.state == TaskState.FAILED and done.cost_units == 0
        account = await store.account(account_id)
        assert account is not None and (account.balance_units, account.reserved_units) == (
            1000, 0)
    run(body)


def test_report_refunds_once_within_the_window(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        other = await funded(store, 0, key="c" * 32)
        ids = counter_ids()
        task_id = await store.create_task(new_task(account_id, price=100), ids)
        await store.finish_task(task_id, NOW, solution={"text": "x"})
        assert not await store.report_task(task_id, other, True, NOW, 86400)
        assert not await store.report_task(task_id, account_id, True, NOW + 86401, 86400)
        assert await store.report_task(task_id, account_id, True, NOW + 10, 86400)
        assert not await store.report_task(task_id, account_id, True, NOW + 11, 86400)
        assert await store.ledger_sum(account_id) == 1000
        account = await store.account(account_id)
        assert account is not None and account.balance_units == 1000
    run(body)


def test_queue_depth_counts_waiting_tasks(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        for _ in range(3):
            await store.create_task(new_task(account_id), ids)
        await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW)
        assert await store.queue_depth("ImageToTextTask") == 2
        assert await store.queue_depth("Other") == 0
    run(body)


def test_counters_reset_after_their_window(run: Any) -> None:
    async def body(store: Store) -> None:
        assert [await store.incr_counter("c", 10, NOW + i) for i in range(3)] == [1, 2, 3]
        assert await store.incr_counter("c", 10, NOW + 10) == 1
        assert await store.incr_counter("d", 10, NOW) == 1
    run(body)


def test_several_counters_in_one_call(run: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.incr_counters([("a", 10), ("b", 1)], NOW) == [1, 1]
        assert await store.incr_counters([("a", 10), ("b", 1)], NOW + 0.5) == [2, 2]
        assert await store.incr_counters([("a", 10), ("b", 1)], NOW + 1) == [3, 1]
        assert await store.incr_counter("a", 10, NOW + 2) == 4
        assert await store.sweep_counters(NOW + 20) == 2
        assert await store.incr_counter("a", 10, NOW + 20) == 1
    run(body)


def test_bans_are_scoped_extended_and_lifted(run: Any) -> None:
    async def body(store: Store) -> None:
        ban_id = await store.add_ban("ip", "1.2.3.4", None, "r", NOW, NOW + 600)
        block_id = await store.add_ban("account_ip", "1.2.3.4", 5, "r", NOW, NOW + 600)
        assert (await store.active_ban("ip", "1.2.3.4", None, NOW)).id == ban_id  # type: ignore[union-attr]
        assert (await store.active_ban("account_ip", "1.2.3.4", 5, NOW)).id == block_id  # type: ignore[union-attr]
        assert await store.active_ban("account_ip", "1.2.3.4", 6, NOW) is None
        assert await store.active_ban("ip", "1.2.3.5", None, NOW) is None
        assert await store.active_ban("ip", "1.2.3.4", None, NOW + 600) is None
        await store.extend_ban(ban_id, NOW + 900)
        assert await store.active_ban("ip", "1.2.3.4", None, NOW + 800) is not None
        assert await store.lift_ban(ban_id, NOW, "op")
        assert not await store.lift_ban(ban_id, NOW, "op")
        assert await store.active_ban("ip", "1.2.3.4", None, NOW) is None
        assert [b.id for b in await store.bans(NOW)] == [block_id]
        assert len(await store.bans(NOW, active_only=False)) == 2
        assert [b.id for b in await store.bans(NOW, active_only=False, account_id=5)] == [
            block_id]
    run(body)


def test_blocklist_matches_host_and_subdomains(run: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.blocklist_add("example.com", NOW)
        assert not await store.blocklist_add("example.com", NOW)
        assert await store.blocked_domain("example.com") == "example.com"
        assert await store.blocked_domain("a.b.example.com") == "example.com"
        assert await store.blocked_domain("badexample.com") is None
        assert await store.blocked_domain("example.com.org") is None
        assert await store.blocklist_remove("example.com")
        assert await store.blocked_domain("example.com") is None
    run(body)


def test_writes_through_another_connection_are_seen_at_once(run: Any,
                                                            location: tuple[str, str]) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        other = open_backend(location)
        try:
            assert await store.caller_for_key("a" * 32) is not None  # now cached
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is None
            await other.revoke_key("a" * 32, NOW)
            await other.whitelist_add(account_id, "10.0.0.0/8")
            ban_id = await other.add_ban("ip", "1.2.3.4", None, "r", NOW, NOW + 600)
            assert await store.caller_for_key("a" * 32) is None
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is not None
            await other.lift_ban(ban_id, NOW, "op")
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is None
        finally:
            await other.close()
    run(body)


def test_serving_node_sees_other_nodes_changes_within_moments(run: Any,
                                                              location: tuple[str, str]) -> None:
    """A serving node (it subscribes) may cache keys and bans; another node's revocation or
    ban must still reach it at once (NOTIFY on PostgreSQL, data_version on SQLite)."""
    async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
        for _ in range(100):  # 1 s: less than the 2 s cache expiry, so only NOTIFY passes
            if await check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the change never reached the serving node")

    async def body(store: Store) -> None:
        await store.subscribe(lambda task_type: None)
        account_id = await funded(store)
        other = open_backend(location)
        try:
            assert await store.caller_for_key("a" * 32) is not None  # cached now
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is None
            await other.revoke_key("a" * 32, NOW)
            ban_id = await other.add_ban("ip", "1.2.3.4", None, "r", NOW, NOW + 600)

            async def revoked() -> bool:
                return await store.caller_for_key("a" * 32) is None

            async def banned() -> bool:
                return await store.active_ban("ip", "1.2.3.4", None, NOW) is not None

            await eventually(revoked)
            await eventually(banned)
            await other.lift_ban(ban_id, NOW, "op")

            async def lifted() -> bool:
                return await store.active_ban("ip", "1.2.3.4", None, NOW) is None

            await eventually(lifted)
            await other.whitelist_add(account_id, "10.0.0.0/8")
            await store.add_key(account_id, "b" * 32, NOW)

            async def whitelisted() -> bool:
                caller = await store.caller_for_key("b" * 32)
                return caller is not None and caller.whitelist == ("10.0.0.0/8",)

            await eventually(whitelisted)
        finally:
            await other.close()
    run(body)
