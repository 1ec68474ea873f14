"""The Store contract: every backend passes the same tests (parametrise ``backend``)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from capd.constants import MAX_UNITS
from capd.errors import InsufficientFunds
from capd.store.base import Store, TaskState
from tests.store.conftest import open_backend
from tests.store.contract import NOW, PERSISTENT, counter_ids, covers, funded, new_task

other_nodes = pytest.mark.parametrize("location", PERSISTENT, indirect=True)


@covers("migrate")
def test_migrate_is_idempotent(run: Any) -> None:
    async def body(store: Store) -> None:
        first = await store.migrate()
        assert await store.migrate() == first >= 1
    run(body)


@covers("create_account", "add_key", "whitelist_add", "caller_for_key", "revoke_key", "account_for_key", "keys")
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


@covers("adjust_balance", "account", "ledger_sum", "ledger")
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


@covers("create_task", "adjust_balance")
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


@covers("create_task")
def test_ids_that_collide_are_drawn_again(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        draws = iter([7, 7, 7, 8])
        assert await store.create_task(new_task(account_id), lambda: next(draws)) == 7
        assert await store.create_task(new_task(account_id), lambda: next(draws)) == 8
    run(body)


@covers("claim_tasks")
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


@covers("claim_tasks", "overdue_tasks")
def test_claim_skips_tasks_past_their_deadline(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id, deadline=NOW + 5), counter_ids())
        assert await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW + 5) == []
        assert [t.id for t in await store.overdue_tasks(NOW + 5)] == [task_id]
    run(body)


@covers("finish_task")
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


@covers("finish_task")
def test_expired_lease_holder_cannot_finish(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW)
        assert await store.finish_task(task_id, NOW + 11, solution={"t": 1}, owner="a") is None
    run(body)


@covers("finish_task")
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


@covers("report_task")
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


@covers("queue_depth")
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


@covers("incr_counter")
def test_counters_reset_after_their_window(run: Any) -> None:
    async def body(store: Store) -> None:
        assert [await store.incr_counter("c", 10, NOW + i) for i in range(3)] == [1, 2, 3]
        assert await store.incr_counter("c", 10, NOW + 10) == 1
        assert await store.incr_counter("d", 10, NOW) == 1
    run(body)


@covers("incr_counters", "sweep_counters")
def test_several_counters_in_one_call(run: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.incr_counters([("a", 10), ("b", 1)], NOW) == [1, 1]
        assert await store.incr_counters([("a", 10), ("b", 1)], NOW + 0.5) == [2, 2]
        assert await store.incr_counters([("a", 10), ("b", 1)], NOW + 1) == [3, 1]
        assert await store.incr_counter("a", 10, NOW + 2) == 4
        assert await store.sweep_counters(NOW + 20) == 2
        assert await store.incr_counter("a", 10, NOW + 20) == 1
    run(body)


@covers("add_ban", "active_ban", "extend_ban", "lift_ban", "bans")
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


@covers("add_ban", "active_ban", "bans", "lift_ban")
def test_one_active_ban_per_slot_is_extended_not_doubled(run: Any) -> None:
    async def body(store: Store) -> None:
        first = await store.add_ban("ip", "1.2.3.4", None, "unknown keys", NOW, NOW + 600)
        again = await store.add_ban("ip", "1.2.3.4", None, "other", NOW + 10, NOW + 610)
        earlier = await store.add_ban("ip", "1.2.3.4", None, "other", NOW + 20, NOW + 300)
        assert first == again == earlier
        active = await store.bans(NOW + 30)
        assert [(b.id, b.reason, b.started_at, b.ends_at) for b in active] == [
            (first, "unknown keys", NOW, NOW + 610)]  # the later end; start and reason stay
        assert await store.lift_ban(first, NOW + 30, "op")
        assert await store.active_ban("ip", "1.2.3.4", None, NOW + 30) is None
        assert await store.bans(NOW + 30) == []
    run(body)


@covers("add_ban", "bans")
def test_one_active_ban_per_account_and_ip(run: Any) -> None:
    async def body(store: Store) -> None:
        a5 = await store.add_ban("account_ip", "1.2.3.4", 5, "r", NOW, NOW + 600)
        assert await store.add_ban("account_ip", "1.2.3.4", 5, "r", NOW, NOW + 700) == a5
        a6 = await store.add_ban("account_ip", "1.2.3.4", 6, "r", NOW, NOW + 600)
        ip = await store.add_ban("ip", "1.2.3.4", None, "r", NOW, NOW + 600)
        other_ip = await store.add_ban("account_ip", "1.2.3.5", 5, "r", NOW, NOW + 600)
        assert len({a5, a6, ip, other_ip}) == 4  # each slot its own ban
        assert sorted(b.id for b in await store.bans(NOW)) == sorted([a5, a6, ip, other_ip])
    run(body)


@covers("add_ban", "active_ban", "bans", "lift_ban")
def test_after_a_ban_ends_or_is_lifted_the_next_is_new(run: Any) -> None:
    async def body(store: Store) -> None:
        first = await store.add_ban("ip", "1.2.3.4", None, "r", NOW, NOW + 600)
        later = await store.add_ban("ip", "1.2.3.4", None, "r", NOW + 600, NOW + 1200)
        assert later != first  # the first had ended: a new ban, the old one kept as history
        history = {b.id: b for b in await store.bans(NOW + 600, active_only=False)}
        assert history[first].ends_at == NOW + 600 and history[first].lifted_at is None
        assert [b.id for b in await store.bans(NOW + 600)] == [later]
        assert await store.lift_ban(later, NOW + 700, "op")
        third = await store.add_ban("ip", "1.2.3.4", None, "r", NOW + 800, NOW + 1400)
        assert third not in (first, later)
        assert (await store.active_ban("ip", "1.2.3.4", None, NOW + 800)).id == third  # type: ignore[union-attr]
        assert len(await store.bans(NOW + 800, active_only=False)) == 3
    run(body)


@covers("blocklist_add", "blocked_domain", "blocklist_remove")
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


@other_nodes
def test_writes_through_another_connection_are_seen_at_once(run: Any,
                                                            location: str) -> None:
    """At once: from the next turn of the event loop, so by every request that starts
    after the commit (SQLite asks whether another connection committed once a turn)."""
    async def body(store: Store) -> None:
        account_id = await funded(store)
        other = open_backend(location)
        try:
            assert await store.caller_for_key("a" * 32) is not None  # now cached
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is None
            await other.revoke_key("a" * 32, NOW)
            await other.whitelist_add(account_id, "10.0.0.0/8")
            ban_id = await other.add_ban("ip", "1.2.3.4", None, "r", NOW, NOW + 600)
            await asyncio.sleep(0)  # the next turn
            assert await store.caller_for_key("a" * 32) is None
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is not None
            await other.lift_ban(ban_id, NOW, "op")
            await asyncio.sleep(0)
            assert await store.active_ban("ip", "1.2.3.4", None, NOW) is None
        finally:
            await other.close()
    run(body)


@other_nodes
def test_serving_node_sees_other_nodes_changes_within_moments(run: Any,
                                                              location: str) -> None:
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


# -- accounts ------------------------------------------------------------------------------
@covers("create_account", "account", "ledger", "ledger_sum")
def test_create_account_books_the_opening_balance_as_a_topup(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("bob", "a" * 32, NOW, opening_units=500,
                                                actor="admin", note="welcome")
        account = await store.account(account_id)
        assert account is not None
        assert (account.name, account.balance_units, account.reserved_units) == ("bob", 500, 0)
        [entry] = await store.ledger(account_id)
        assert (entry.kind, entry.amount_units, entry.actor, entry.note, entry.task_id) == (
            "topup", 500, "admin", "welcome", None)
        assert await store.ledger_sum(account_id) == 500
    run(body)


@covers("create_account", "ledger", "caller_for_key")
def test_create_account_without_an_opening_balance_writes_no_ledger_entry(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", "a" * 32, NOW)
        assert await store.ledger(account_id) == []
        caller = await store.caller_for_key("a" * 32)
        assert caller is not None and (caller.account_id, caller.whitelist) == (account_id, ())
    run(body)


@covers("create_account", "account_for_key")
def test_create_account_refuses_an_opening_balance_out_of_range(run: Any) -> None:
    async def body(store: Store) -> None:
        for opening in (-1, MAX_UNITS + 1):
            with pytest.raises(ValueError):
                await store.create_account("t", "a" * 32, NOW, opening_units=opening)
        assert await store.account_for_key("a" * 32) is None
        assert await store.create_account("t", "a" * 32, NOW, opening_units=MAX_UNITS) >= 1
    run(body)


@covers("create_account", "account")
def test_create_account_writes_nothing_when_the_key_is_taken(run: Any) -> None:
    async def body(store: Store) -> None:
        first = await store.create_account("t", "a" * 32, NOW)
        with pytest.raises((ValueError, sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
            await store.create_account("u", "a" * 32, NOW, opening_units=100)
        assert await store.account(first + 1) is None
        second = await store.create_account("u", "b" * 32, NOW)
        account = await store.account(second)
        assert account is not None and account.balance_units == 0
    run(body)


@covers("whitelist_add", "whitelist_remove", "whitelist", "caller_for_key")
def test_whitelist_adds_each_network_once_and_removes_it(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        assert await store.whitelist_add(account_id, "192.0.2.0/24")
        assert await store.whitelist_add(account_id, "10.0.0.0/8")
        assert not await store.whitelist_add(account_id, "10.0.0.0/8")
        assert await store.whitelist(account_id) == ["10.0.0.0/8", "192.0.2.0/24"]
        assert await store.whitelist_remove(account_id, "10.0.0.0/8")
        assert not await store.whitelist_remove(account_id, "10.0.0.0/8")
        assert await store.whitelist(account_id) == ["192.0.2.0/24"]
        caller = await store.caller_for_key("a" * 32)
        assert caller is not None and caller.whitelist == ("192.0.2.0/24",)
    run(body)


@covers("account", "account_for_key", "caller_for_key", "keys")
def test_unknown_accounts_and_keys_read_as_none(run: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.account(12345) is None
        assert await store.account_for_key("z" * 32) is None
        assert await store.caller_for_key("z" * 32) is None
        assert await store.keys(12345) == []
    run(body)


# -- money ---------------------------------------------------------------------------------
@covers("adjust_balance", "account", "ledger")
def test_adjust_balance_refuses_to_pass_max_units(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        with pytest.raises(ValueError):
            await store.adjust_balance(account_id, MAX_UNITS, "topup", "op", "", NOW)
        assert await store.adjust_balance(account_id, MAX_UNITS - 1000, "topup", "op", "",
                                          NOW) == MAX_UNITS
        account = await store.account(account_id)
        assert account is not None and account.balance_units == MAX_UNITS
        assert len(await store.ledger(account_id)) == 2
    run(body)


@covers("adjust_balance")
def test_adjust_balance_of_an_unknown_account_is_a_key_error(run: Any) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(KeyError):
            await store.adjust_balance(12345, 100, "topup", "op", "", NOW)
    run(body)


@covers("ledger")
def test_ledger_lists_the_newest_entries_first_up_to_the_limit(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 0)
        for n in range(1, 5):
            await store.adjust_balance(account_id, n, "topup", "op", f"n{n}", NOW + n)
        entries = await store.ledger(account_id, limit=3)
        assert [(e.amount_units, e.note, e.at) for e in entries] == [
            (4, "n4", NOW + 4), (3, "n3", NOW + 3), (2, "n2", NOW + 2)]
        assert all(e.account_id == account_id and e.actor == "op" for e in entries)
        assert entries[0].id > entries[1].id > entries[2].id
    run(body)


# -- tasks ---------------------------------------------------------------------------------
@covers("create_task", "get_task")
def test_get_task_reads_what_was_queued_with_or_without_its_payload(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task = new_task(account_id, price=70)
        task_id = await store.create_task(task, counter_ids())
        full = await store.get_task(task_id)
        assert full is not None
        assert (full.id, full.account_id, full.type, full.payload, full.options) == (
            task_id, account_id, "ImageToTextTask", {"body": "x"}, {"nocache": False})
        assert (full.state, full.price_units, full.reserved_units, full.attempts) == (
            TaskState.QUEUED, 70, 70, 0)
        assert (full.created_at, full.deadline_at, full.client_ip) == (
            NOW, NOW + 60, "198.51.100.1")
        assert (full.lease_until, full.lease_owner, full.ended_at, full.solution,
                full.error_code, full.cost_units, full.callback_url, full.reported_at) == (
            None, None, None, None, None, 0, None, None)
        light = await store.get_task(task_id, with_payload=False)
        assert light is not None and light.payload == {} and light.options == {"nocache": False}
        assert await store.get_task(task_id + 1) is None
    run(body)


@covers("finish_task", "get_task")
def test_a_finished_task_reads_back_final(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        solved = await store.create_task(new_task(account_id, price=30), ids)
        failed = await store.create_task(new_task(account_id, price=30), ids)
        await store.finish_task(solved, NOW + 2, solution={"text": "ab12"})
        await store.finish_task(failed, NOW + 3, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        for with_payload in (False, True):  # the poll path may cache: it reads the same
            task = await store.get_task(solved, with_payload=with_payload)
            assert task is not None
            assert (task.state, task.solution, task.ended_at, task.cost_units,
                    task.reserved_units, task.lease_until) == (
                TaskState.SOLVED, {"text": "ab12"}, NOW + 2, 30, 0, None)
            task = await store.get_task(failed, with_payload=with_payload)
            assert task is not None
            assert (task.state, task.error_code, task.solution, task.cost_units) == (
                TaskState.FAILED, "ERROR_CAPTCHA_UNSOLVABLE", None, 0)
    run(body)


@covers("finish_task")
def test_finish_needs_exactly_one_of_solution_and_error_code(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        with pytest.raises(ValueError):
            await store.finish_task(task_id, NOW)
        with pytest.raises(ValueError):
            await store.finish_task(task_id, NOW, solution={"t": 1}, error_code="ERROR_X")
        assert await store.finish_task(task_id + 1, NOW, solution={"t": 1}) is None
    run(body)


@covers("finish_task", "ledger")
def test_the_charge_is_one_ledger_entry_tied_to_the_task(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        task_id = await store.create_task(new_task(account_id, price=40), counter_ids())
        await store.finish_task(task_id, NOW + 1, solution={"text": "x"})
        charge = (await store.ledger(account_id))[0]
        assert (charge.kind, charge.amount_units, charge.task_id, charge.actor, charge.at) == (
            "charge", -40, task_id, "capd", NOW + 1)
    run(body)


@covers("create_task", "claim_tasks")
def test_claim_takes_the_oldest_first_across_the_types_asked(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        late = await store.create_task(new_task(account_id, created=NOW + 2), ids)
        other = await store.create_task(new_task(account_id, created=NOW + 1,
                                                 task_type="RecaptchaV2TaskProxyless"), ids)
        early = await store.create_task(new_task(account_id, created=NOW), ids)
        assert await store.claim_tasks([], 5, "a", 10, NOW) == []
        assert await store.claim_tasks(["ImageToTextTask"], 0, "a", 10, NOW) == []
        claimed = await store.claim_tasks(["ImageToTextTask", "RecaptchaV2TaskProxyless"], 2,
                                          "a", 10, NOW + 3)
        assert [t.id for t in claimed] == [early, other]
        assert all(t.lease_owner == "a" and t.attempts == 1 for t in claimed)
        assert [t.id for t in await store.claim_tasks(["ImageToTextTask"], 5, "b", 10,
                                                      NOW + 3)] == [late]
    run(body)


@covers("extend_lease", "claim_tasks", "finish_task")
def test_extend_lease_moves_a_live_lease_up_to_the_deadline(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id, deadline=NOW + 60), counter_ids())
        assert await store.extend_lease(task_id, "a", NOW + 30, NOW) is None  # not leased
        await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW)
        assert await store.extend_lease(task_id, "b", NOW + 30, NOW + 1) is None  # not owner
        assert await store.extend_lease(task_id, "a", NOW + 30, NOW + 1) == NOW + 30
        assert await store.extend_lease(task_id, "a", NOW + 600, NOW + 2) == NOW + 60
        # the extended lease holds: the owner can still finish after the first lease's end
        done = await store.finish_task(task_id, NOW + 40, solution={"t": 1}, owner="a")
        assert done is not None and done.state == TaskState.SOLVED
        assert await store.extend_lease(task_id, "a", NOW + 50, NOW + 41) is None  # finished
    run(body)


@covers("extend_lease", "claim_tasks")
def test_extend_keeping_the_later_end_never_shortens_a_lease(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id, deadline=NOW + 60), counter_ids())
        await store.claim_tasks(["ImageToTextTask"], 1, "a", 30, NOW)
        assert await store.extend_lease(task_id, "a", NOW + 10, NOW + 1, keep_later=True) == (
            NOW + 30)
        assert await store.extend_lease(task_id, "a", NOW + 45, NOW + 1, keep_later=True) == (
            NOW + 45)
        assert await store.extend_lease(task_id, "a", NOW + 90, NOW + 2, keep_later=True) == (
            NOW + 60)  # never past the deadline
        assert await store.extend_lease(task_id, "a", NOW + 3, NOW + 3) == NOW + 3  # released
    run(body)


@covers("extend_lease", "claim_tasks")
def test_an_expired_lease_cannot_be_extended(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        await store.claim_tasks(["ImageToTextTask"], 1, "a", 10, NOW)
        assert await store.extend_lease(task_id, "a", NOW + 30, NOW + 10) is None
    run(body)


@covers("overdue_tasks", "finish_task")
def test_overdue_tasks_lists_open_tasks_past_their_deadline_earliest_first(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        ids = counter_ids()
        later = await store.create_task(new_task(account_id, deadline=NOW + 20), ids)
        sooner = await store.create_task(new_task(account_id, deadline=NOW + 10), ids)
        done = await store.create_task(new_task(account_id, deadline=NOW + 5), ids)
        await store.create_task(new_task(account_id, deadline=NOW + 100), ids)
        await store.finish_task(done, NOW + 1, solution={"t": 1})
        assert [t.id for t in await store.overdue_tasks(NOW + 30)] == [sooner, later]
        assert [t.id for t in await store.overdue_tasks(NOW + 30, limit=1)] == [sooner]
        assert await store.overdue_tasks(NOW + 9) == []
    run(body)


@covers("report_task", "ledger", "account")
def test_report_without_refund_records_the_report_and_keeps_the_charge(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        task_id = await store.create_task(new_task(account_id, price=100), counter_ids())
        await store.finish_task(task_id, NOW, solution={"text": "x"})
        assert await store.report_task(task_id, account_id, False, NOW + 5, 86400)
        assert not await store.report_task(task_id, account_id, True, NOW + 6, 86400)
        task = await store.get_task(task_id)
        assert task is not None and task.reported_at == NOW + 5
        account = await store.account(account_id)
        assert account is not None and account.balance_units == 900
        assert [e.kind for e in await store.ledger(account_id)] == ["charge", "topup"]
    run(body)


@covers("report_task")
def test_only_solved_tasks_can_be_reported(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        ids = counter_ids()
        queued = await store.create_task(new_task(account_id), ids)
        failed = await store.create_task(new_task(account_id), ids)
        await store.finish_task(failed, NOW, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        assert not await store.report_task(queued, account_id, True, NOW, 86400)
        assert not await store.report_task(failed, account_id, True, NOW, 86400)
        assert not await store.report_task(99, account_id, True, NOW, 86400)
    run(body)


# -- limits, bans, blocklist, proxies --------------------------------------------------------
@covers("blocklist_add", "blocklist_remove", "blocklist")
def test_blocklist_lists_its_domains_in_order(run: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.blocklist() == []
        for domain in ("zeta.example", "alpha.example", "mid.example"):
            assert await store.blocklist_add(domain, NOW)
        assert await store.blocklist() == ["alpha.example", "mid.example", "zeta.example"]
        assert await store.blocklist_remove("mid.example")
        assert not await store.blocklist_remove("mid.example")
        assert await store.blocklist() == ["alpha.example", "zeta.example"]
    run(body)


@covers("ban_proxy", "proxy_banned")
def test_proxy_bans_keep_the_later_end_and_match_the_address_in_any_case(run: Any) -> None:
    async def body(store: Store) -> None:
        assert not await store.proxy_banned("203.0.113.5", 8080, NOW)
        await store.ban_proxy("Proxy.Example", 8080, NOW + 600)
        await store.ban_proxy("proxy.example", 8080, NOW + 100)  # the earlier end loses
        assert await store.proxy_banned("PROXY.example", 8080, NOW + 599)
        assert not await store.proxy_banned("proxy.example", 8080, NOW + 600)
        assert not await store.proxy_banned("proxy.example", 3128, NOW)
        await store.ban_proxy("proxy.example", 8080, NOW + 900)
        assert await store.proxy_banned("proxy.example", 8080, NOW + 800)
    run(body)


@covers("add_ban", "bans", "extend_ban")
def test_a_ban_reads_back_as_added(run: Any) -> None:
    async def body(store: Store) -> None:
        ban_id = await store.add_ban("account_ip", "192.0.2.7", 3, "violations", NOW, NOW + 60)
        await store.extend_ban(ban_id, NOW + 30)  # never shortens
        [ban] = await store.bans(NOW)
        assert (ban.id, ban.scope, ban.ip, ban.account_id, ban.reason, ban.started_at,
                ban.ends_at, ban.lifted_at) == (
            ban_id, "account_ip", "192.0.2.7", 3, "violations", NOW, NOW + 60, None)
        assert await store.bans(NOW + 60) == []
        assert await store.bans(NOW, account_id=4) == []
    run(body)


# -- workers -------------------------------------------------------------------------------
@covers("create_worker_token", "worker_token", "revoke_worker_token")
def test_worker_tokens_are_found_by_digest_until_revoked(run: Any) -> None:
    async def body(store: Store) -> None:
        some = await store.create_worker_token("d1" * 32, "gpu-box",
                                               ("ImageToTextTask", "TurnstileTask"), NOW)
        every = await store.create_worker_token("d2" * 32, "any", None, NOW + 1)
        assert some != every
        token = await store.worker_token("d1" * 32)
        assert token is not None
        assert (token.id, token.name, token.types, token.created_at) == (
            some, "gpu-box", ("ImageToTextTask", "TurnstileTask"), NOW)
        token = await store.worker_token("d2" * 32)
        assert token is not None and (token.id, token.types) == (every, None)
        assert await store.worker_token("ff" * 32) is None
        assert await store.revoke_worker_token("d1" * 32, NOW + 2)
        assert not await store.revoke_worker_token("d1" * 32, NOW + 3)
        assert not await store.revoke_worker_token("ff" * 32, NOW + 3)
        assert await store.worker_token("d1" * 32) is None
        assert await store.worker_token("d2" * 32) is not None
    run(body)


@covers("note_workers", "worker_seen_since")
def test_worker_presence_is_the_latest_time_a_type_was_asked_for(run: Any) -> None:
    async def body(store: Store) -> None:
        assert not await store.worker_seen_since("ImageToTextTask", NOW - 1000)
        await store.note_workers(["ImageToTextTask", "TurnstileTask"], NOW)
        await store.note_workers(["ImageToTextTask"], NOW - 50)  # older news changes nothing
        assert await store.worker_seen_since("ImageToTextTask", NOW)
        assert not await store.worker_seen_since("ImageToTextTask", NOW + 1)
        assert await store.worker_seen_since("TurnstileTask", NOW - 10)
        assert not await store.worker_seen_since("RecaptchaV2Task", NOW - 10)
        await store.note_workers([], NOW + 5)
        await store.note_workers(["TurnstileTask"], NOW + 5)
        assert await store.worker_seen_since("TurnstileTask", NOW + 5)
    run(body)


# -- operator views ------------------------------------------------------------------------
@covers("stats", "finish_task", "report_task")
def test_stats_counts_tasks_latencies_charges_and_refunds(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 1000)
        ids = counter_ids()
        empty = await store.stats(NOW)
        assert empty == {"tasks": [], "solve_latencies_s": [],
                         "charges": {"count": 0, "units": 0},
                         "refunds": {"count": 0, "units": 0}}
        a = await store.create_task(new_task(account_id, price=100), ids)
        b = await store.create_task(new_task(account_id, price=50), ids)
        c = await store.create_task(new_task(account_id, price=10), ids)
        await store.create_task(new_task(account_id, task_type="TurnstileTask"), ids)
        await store.finish_task(a, NOW + 2, solution={"t": 1})
        await store.finish_task(b, NOW + 4, solution={"t": 2})
        await store.finish_task(c, NOW + 1, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        await store.report_task(b, account_id, True, NOW + 5, 86400)
        stats = await store.stats(NOW + 10)
        assert stats["tasks"] == [
            {"type": "ImageToTextTask", "state": "failed", "count": 1},
            {"type": "ImageToTextTask", "state": "solved", "count": 2},
            {"type": "TurnstileTask", "state": "queued", "count": 1}]
        assert sorted(stats["solve_latencies_s"]) == [2.0, 4.0]
        assert stats["charges"] == {"count": 2, "units": 150}
        assert stats["refunds"] == {"count": 1, "units": 50}
    run(body)


@covers("meta_get", "meta_set")
def test_meta_keeps_the_last_value_per_name(run: Any) -> None:
    async def body(store: Store) -> None:
        assert await store.meta_get("install_id") is None
        await store.meta_set("install_id", "one")
        await store.meta_set("install_id", "two")
        await store.meta_set("other", "x")
        assert await store.meta_get("install_id") == "two"
        assert await store.meta_get("other") == "x"
    run(body)


# -- lifecycle -----------------------------------------------------------------------------
@covers("subscribe", "create_task")
def test_subscribe_hears_work_queued_by_other_nodes_only_where_there_are_any(
        run: Any, location: str) -> None:
    """PostgreSQL announces every queued task to every subscribed node; a one-process
    backend has no other node, and its dispatcher hears of work directly."""
    async def body(store: Store) -> None:
        heard: list[str] = []
        await store.subscribe(heard.append)
        account_id = await funded(store)
        await store.create_task(new_task(account_id, task_type="TurnstileTask"), counter_ids())
        if not location.startswith("postgres"):
            assert heard == []
            return
        for _ in range(500):  # NOTIFY arrives on the listening connection's next read
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard == ["TurnstileTask"]
    run(body)


@other_nodes
@covers("close", "migrate")
def test_what_was_written_outlives_close(run: Any, location: str) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store, 300)
        await store.close()
        again = open_backend(location)
        try:
            assert await again.migrate() >= 1
            account = await again.account(account_id)
            assert account is not None and account.balance_units == 300
        finally:
            await again.close()
    run(body)
