"""AdminService: the operator's actions, on a temporary store, without processes or HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from capd.admin import (
    AdminError,
    AdminService,
    InsufficientBalance,
    InvalidInput,
    NotFound,
)
from capd.config import Settings
from capd.domain.money import MAX_UNITS, UNITS_PER_USD
from capd.store.base import NewTask, Store
from capd.store.secrets import secret_digest
from capd.store.sqlite import SQLiteStore
from capd.workers import token_digest
from tests.helpers import FakeClock

Body = Callable[[AdminService], Awaitable[Any]]


def open_test_store(tmp_path: Path) -> Store:
    """The store these tests run on (one place to switch backend)."""
    return SQLiteStore(str(tmp_path / "admin.db"))


@pytest.fixture
def run(tmp_path: Path, clock: FakeClock) -> Callable[[Body], Any]:
    """Run ``body(admin)`` on the test's (migrated) store; state persists between calls."""
    def go(body: Body) -> Any:
        async def main() -> Any:
            store = open_test_store(tmp_path)
            await store.migrate()
            try:
                return await body(AdminService(store, clock, Settings()))
            finally:
                await store.close()
        return asyncio.run(main())
    return go


def usd(text: str) -> Decimal:
    return Decimal(text)


def reserve(admin: AdminService, account_id: int, units: int) -> Awaitable[int]:
    """Queue a task costing ``units``, reserving them as a running task does."""
    now = admin.clock()
    task = NewTask(account_id=account_id, type="ImageToTextTask", payload={"body": "x"},
                   options={}, price_units=units, created_at=now, deadline_at=now + 60,
                   client_ip="192.0.2.1")
    return admin.store.create_task(task, lambda: 1_000_001)


# -- accounts -----------------------------------------------------------------------------------
def test_create_account_funds_it_with_one_topup(run: Any, clock: FakeClock) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("shop", usd("2.5"))
        view = await admin.account_view(new.account_id)
        assert view.account.name == "shop"
        assert (view.balance, view.reserved, view.available) == (usd("2.5"), 0, usd("2.5"))
        assert [(k.digest, k.hint, k.revoked_at) for k in view.keys] == [
            (secret_digest(new.key), new.key[:4], None)]
        [entry] = view.ledger
        assert (entry.kind, entry.amount_units, entry.actor, entry.note, entry.at) == (
            "topup", 250_000_000, "operator", "opening balance", clock.now)
        assert await admin.store.ledger_sum(new.account_id) == 250_000_000
    run(body)


def test_create_account_keeps_the_given_note(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("shop", usd("1"), note="invoice 7")
        assert [e.note for e in (await admin.account_view(new.account_id)).ledger] == [
            "invoice 7"]
    run(body)


def test_create_account_without_balance_writes_no_ledger_row(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account()
        view = await admin.account_view(new.account_id)
        assert view.balance == 0 and view.ledger == []
    run(body)


@pytest.mark.parametrize("balance", ["-1", "1.000000001", "1000000001", "NaN", "Infinity"])
def test_create_account_refuses_an_unusable_balance(run: Any, balance: str) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(InvalidInput):
            await admin.create_account("x", Decimal(balance))
        assert await admin.find_accounts("x") == []
    run(body)


def test_account_id_for_key_finds_the_account(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        assert await admin.account_id_for_key(new.key) == new.account_id
    run(body)


def test_account_id_for_unknown_key_is_not_found(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(NotFound):
            await admin.account_id_for_key("0" * 32)
    run(body)


@pytest.mark.parametrize("key", ["XYZ", "A" * 32, "a" * 33, ""])
def test_account_id_for_malformed_key_is_invalid(run: Any, key: str) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(InvalidInput):
            await admin.account_id_for_key(key)
    run(body)


def test_account_view_of_unknown_account_is_not_found(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(NotFound):
            await admin.account_view(42)
    run(body)


def test_account_view_shows_reservations_and_limits_the_ledger(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a", usd("1"))
        for _ in range(3):
            await admin.adjust(new.account_id, usd("1"), "more")
        await reserve(admin, new.account_id, 50_000_000)
        view = await admin.account_view(new.account_id, ledger_limit=2)
        assert (view.balance, view.reserved, view.available) == (usd("4"), usd("0.5"),
                                                                 usd("3.5"))
        assert [e.note for e in view.ledger] == ["more", "more"]
    run(body)


def test_account_view_lists_bans_including_lifted_ones(run: Any, clock: FakeClock) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        ban_id = await admin.store.add_ban("account_ip", "198.51.100.9", new.account_id,
                                           "violations", clock.now, clock.now + 600)
        await admin.lift_ban(ban_id)
        view = await admin.account_view(new.account_id)
        assert [(b.id, b.lifted_at) for b in view.bans] == [(ban_id, clock.now)]
    run(body)


def test_find_accounts_by_id_name_and_key(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        alice = await admin.create_account("Alice Shop")
        bob = await admin.create_account("bob")
        revoked = await admin.add_key(bob.account_id)
        await admin.revoke_key(revoked)
        names = [a.name for a in await admin.find_accounts("shop")]
        assert names == ["Alice Shop"]
        assert [a.id for a in await admin.find_accounts(str(bob.account_id))] == [
            bob.account_id]
        assert [a.id for a in await admin.find_accounts(alice.key)] == [alice.account_id]
        assert [a.id for a in await admin.find_accounts(revoked)] == [bob.account_id]
    run(body)


def test_find_accounts_reads_wildcards_literally(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        await admin.create_account("plain")
        await admin.create_account("100%_sure")
        assert [a.name for a in await admin.find_accounts("%")] == ["100%_sure"]
        assert [a.name for a in await admin.find_accounts("_")] == ["100%_sure"]
    run(body)


def test_find_accounts_stops_at_the_limit(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        for i in range(5):
            await admin.create_account(f"acct{i}")
        assert [a.name for a in await admin.find_accounts("acct", limit=2)] == ["acct0",
                                                                                "acct1"]
    run(body)


# -- money ----------------------------------------------------------------------------------------
def test_adjust_positive_is_a_topup(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a", usd("1"))
        assert await admin.adjust(new.account_id, usd("0.25"), "top-up") == usd("1.25")
        entry = (await admin.account_view(new.account_id)).ledger[0]
        assert (entry.kind, entry.amount_units, entry.note) == ("topup", 25_000_000, "top-up")
    run(body)


def test_adjust_negative_is_an_adjustment(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a", usd("1"))
        assert await admin.adjust(new.account_id, usd("-0.4"), "goodwill", actor="alice") == (
            usd("0.6"))
        entry = (await admin.account_view(new.account_id)).ledger[0]
        assert (entry.kind, entry.amount_units, entry.actor) == ("adjustment", -40_000_000,
                                                                  "alice")
    run(body)


def test_adjust_never_goes_below_what_running_tasks_reserve(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a", usd("1"))
        await reserve(admin, new.account_id, 60_000_000)
        with pytest.raises(InsufficientBalance):
            await admin.adjust(new.account_id, usd("-0.5"), "too much")
        view = await admin.account_view(new.account_id)
        assert view.balance == usd("1") and len(view.ledger) == 1
        assert await admin.adjust(new.account_id, usd("-0.4"), "fits") == usd("0.6")
    run(body)


def test_adjust_by_zero_is_refused(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a", usd("1"))
        with pytest.raises(InvalidInput):
            await admin.adjust(new.account_id, usd("0"), "")
    run(body)


def test_adjust_past_the_supported_range_is_refused(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        top = Decimal(MAX_UNITS) / UNITS_PER_USD
        new = await admin.create_account("a", top)
        with pytest.raises(InvalidInput):
            await admin.adjust(new.account_id, usd("1"), "")
        assert (await admin.account_view(new.account_id)).balance == top
    run(body)


def test_adjust_unknown_account_is_not_found(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(NotFound):
            await admin.adjust(7, usd("1"), "")
    run(body)


# -- keys -----------------------------------------------------------------------------------------
def test_add_key_gives_the_account_a_second_live_key(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        second = await admin.add_key(new.account_id)
        assert second != new.key
        caller = await admin.store.caller_for_key(second)
        assert caller is not None and caller.account_id == new.account_id
    run(body)


def test_add_key_to_unknown_account_is_not_found(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(NotFound):
            await admin.add_key(9)
    run(body)


def test_revoke_key_once(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        assert await admin.revoke_key(new.key) is True
        assert await admin.revoke_key(new.key) is False
        assert await admin.store.caller_for_key(new.key) is None
    run(body)


def test_rotate_key_adds_a_new_key_and_revokes_the_old(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        fresh = await admin.rotate_key(new.account_id, new.key)
        states = {k.digest: k.revoked_at is None
                  for k in await admin.store.keys(new.account_id)}
        assert states == {secret_digest(new.key): False, secret_digest(fresh): True}
    run(body)


def test_revoke_key_by_its_id(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        second = await admin.add_key(new.account_id)
        [record] = [k for k in await admin.store.keys(new.account_id)
                    if k.digest == secret_digest(second)]
        assert await admin.revoke_key(record.key_id) is True
        assert await admin.revoke_key(record.key_id) is False
        assert await admin.store.caller_for_key(second) is None
        assert await admin.store.caller_for_key(new.key) is not None
    run(body)


def test_rotate_key_by_digest_replaces_that_key(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        fresh = await admin.rotate_key_digest(new.account_id, secret_digest(new.key))
        assert await admin.store.caller_for_key(new.key) is None
        assert await admin.store.caller_for_key(fresh) is not None
    run(body)


def test_rotating_an_account_revokes_every_live_key_for_one_new_key(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        second = await admin.add_key(new.account_id)
        fresh = await admin.rotate_account_keys(new.account_id)
        assert await admin.store.caller_for_key(new.key) is None
        assert await admin.store.caller_for_key(second) is None
        assert await admin.store.caller_for_key(fresh) is not None
        live = [k.digest for k in await admin.store.keys(new.account_id) if k.revoked_at is None]
        assert live == [secret_digest(fresh)]
    run(body)


def test_an_account_is_named_by_its_id_or_a_key(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        assert await admin.account_id_for(str(new.account_id)) == new.account_id
        assert await admin.account_id_for(new.key) == new.account_id
        with pytest.raises(NotFound):
            await admin.account_id_for("999")
    run(body)


def test_rotate_key_of_another_account_is_refused(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        a = await admin.create_account("a")
        b = await admin.create_account("b")
        with pytest.raises(NotFound):
            await admin.rotate_key(a.account_id, b.key)
        assert len(await admin.store.keys(a.account_id)) == 1
        assert await admin.store.caller_for_key(b.key) is not None
    run(body)


# -- whitelist ------------------------------------------------------------------------------------
def test_whitelist_add_normalises_and_reports_duplicates(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        assert await admin.whitelist_add(new.account_id, "10.1.2.3/8") is True
        assert await admin.whitelist_add(new.account_id, " 10.0.0.0/8 ") is False
        assert await admin.whitelist_add(new.account_id, "2001:db8::1") is True
        assert await admin.store.whitelist(new.account_id) == ["10.0.0.0/8", "2001:db8::1/128"]
    run(body)


def test_whitelist_remove(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        await admin.whitelist_add(new.account_id, "192.0.2.7")
        assert await admin.whitelist_remove(new.account_id, "192.0.2.7/32") is True
        assert await admin.whitelist_remove(new.account_id, "192.0.2.7/32") is False
    run(body)


@pytest.mark.parametrize("network", ["10.0.0.0/33", "300.1.2.3", "not-an-ip", ""])
def test_whitelist_refuses_what_is_not_a_network(run: Any, network: str) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a")
        with pytest.raises(InvalidInput):
            await admin.whitelist_add(new.account_id, network)
        assert await admin.store.whitelist(new.account_id) == []
    run(body)


# -- bans and blocklist -----------------------------------------------------------------------------
def test_lift_ban_ends_it_once(run: Any, clock: FakeClock) -> None:
    async def body(admin: AdminService) -> None:
        ban_id = await admin.store.add_ban("ip", "203.0.113.7", None, "unknown keys",
                                           clock.now, clock.now + 600)
        assert [b.id for b in await admin.bans()] == [ban_id]
        assert await admin.lift_ban(ban_id) is True
        assert await admin.lift_ban(ban_id) is False
        assert await admin.bans() == []
        assert [b.id for b in await admin.bans(active_only=False)] == [ban_id]
    run(body)


def test_bans_ended_by_time_are_not_active(run: Any, clock: FakeClock) -> None:
    async def body(admin: AdminService) -> None:
        await admin.store.add_ban("ip", "203.0.113.7", None, "x", clock.now, clock.now + 10)
        clock.advance(11)
        assert await admin.bans() == []
    run(body)


def test_blocklist_add_normalises_and_remove_unlists(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        assert await admin.blocklist_add("Example.COM.") is True
        assert await admin.blocklist_add("example.com") is False
        assert await admin.blocklist() == ["example.com"]
        assert await admin.blocklist_remove("EXAMPLE.com") is True
        assert await admin.blocklist_remove("example.com") is False
        assert await admin.blocklist() == []
    run(body)


@pytest.mark.parametrize("domain", ["", "bad domain", "a..b", "example.com/x"])
def test_blocklist_refuses_what_is_not_a_domain(run: Any, domain: str) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(InvalidInput):
            await admin.blocklist_add(domain)
    run(body)


# -- worker tokens ----------------------------------------------------------------------------------
def test_worker_token_is_stored_as_a_digest_with_its_types(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        token = await admin.create_worker_token("ocr", ("ImageToTextTask",))
        stored = await admin.store.worker_token(token_digest(token))
        assert stored is not None and (stored.name, stored.types) == ("ocr",
                                                                      ("ImageToTextTask",))
        assert await admin.store.worker_token(token) is None  # never the token itself
    run(body)


def test_worker_token_without_types_serves_every_type(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        token = await admin.create_worker_token("any", None)
        stored = await admin.store.worker_token(token_digest(token))
        assert stored is not None and stored.types is None
    run(body)


@pytest.mark.parametrize("types", [(), ("NoSuchTask",), ("ImageToTextTask", "Bogus")])
def test_worker_token_refuses_unknown_types(run: Any, types: tuple[str, ...]) -> None:
    async def body(admin: AdminService) -> None:
        with pytest.raises(InvalidInput):
            await admin.create_worker_token("x", types)
    run(body)


def test_revoke_worker_token_once(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        token = await admin.create_worker_token("ocr", None)
        assert await admin.revoke_worker_token(token) is True
        assert await admin.revoke_worker_token(token) is False
        assert await admin.store.worker_token(token_digest(token)) is None
    run(body)


# -- views and the demo account ---------------------------------------------------------------------
def test_stats_of_an_empty_store(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        assert await admin.stats() == {
            "tasks": [], "solve_latency_s": {"count": 0, "p50": None, "p95": None},
            "charges": {"count": 0, "usd": "0.00000000"},
            "refunds": {"count": 0, "usd": "0.00000000"},
            "callbacks": {"pending": 0, "failed": 0}}
    run(body)


def test_stats_count_tasks_latency_and_charges(run: Any, clock: FakeClock) -> None:
    async def body(admin: AdminService) -> None:
        new = await admin.create_account("a", usd("1"))
        task_id = await reserve(admin, new.account_id, 30_000)
        assert await admin.store.finish_task(task_id, clock.now + 2, solution={"text": "x"})
        stats = await admin.stats()
        assert stats["tasks"] == [{"type": "ImageToTextTask", "state": "solved", "count": 1}]
        assert stats["solve_latency_s"] == {"count": 1, "p50": 2.0, "p95": 2.0}
        assert stats["charges"] == {"count": 1, "usd": "0.00030000"}
    run(body)


def test_demo_account_is_made_once_and_its_key_shown_only_then(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        first = await admin.ensure_demo_account(usd("10"))
        again = await admin.ensure_demo_account(usd("5"))
        assert first.key is not None and again.key is None
        assert again.account_id == first.account_id
        view = await admin.account_view(await admin.account_id_for_key(first.key))
        assert view.account.name == "demo" and view.balance == usd("10")
        assert [e.note for e in view.ledger] == ["demo balance"]
    run(body)


def test_demo_key_is_in_no_meta_row(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        demo = await admin.ensure_demo_account(usd("10"))
        assert await admin.store.meta_get("demo_key") is None
        assert await admin.store.meta_get("demo_account") == str(demo.account_id)
    run(body)


def test_demo_account_with_its_key_revoked_is_kept_and_rotated_by_id(run: Any) -> None:
    async def body(admin: AdminService) -> None:
        first = await admin.ensure_demo_account(usd("10"))
        assert first.key is not None
        await admin.revoke_key(first.key)
        assert (await admin.ensure_demo_account(usd("10"))).key is None
        fresh = await admin.rotate_account_keys(first.account_id)
        caller = await admin.store.caller_for_key(fresh)
        assert caller is not None and caller.account_id == first.account_id
    run(body)


def test_every_refusal_is_an_admin_error() -> None:
    assert all(issubclass(e, AdminError) for e in (InvalidInput, NotFound, InsufficientBalance))
