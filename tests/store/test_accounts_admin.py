"""Store primitives the admin service adds: funded account creation and account search,
on every backend (the same shape as test_contract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from capd.domain.money import MAX_UNITS
from capd.store.base import Store
from capd.store.postgres import PostgresStore
from capd.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def run(request: Any, tmp_path: Path) -> Callable[[Callable[[Store], Awaitable[Any]]], Any]:
    """Run an async test body against a freshly migrated store of each backend."""
    def open_store() -> Store:
        if request.param == "sqlite":
            return SQLiteStore(str(tmp_path / "accounts.db"))
        return PostgresStore(request.getfixturevalue("pg_url"))

    def go(body: Callable[[Store], Awaitable[Any]]) -> Any:
        store = open_store()

        async def main() -> Any:
            await store.migrate()
            try:
                return await body(store)
            finally:
                await store.close()
        return asyncio.run(main())
    return go


def test_create_account_with_opening_balance_writes_one_topup(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("a", "a" * 32, NOW, opening_units=700,
                                                actor="alice", note="invoice 1")
        account = await store.account(account_id)
        assert account is not None and account.balance_units == 700
        [entry] = await store.ledger(account_id)
        assert (entry.kind, entry.amount_units, entry.actor, entry.note, entry.at) == (
            "topup", 700, "alice", "invoice 1", NOW)
        assert await store.ledger_sum(account_id) == 700
        assert await store.caller_for_key("a" * 32) is not None
    run(body)


def test_create_account_without_opening_balance_writes_no_ledger(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("a", "a" * 32, NOW)
        assert await store.ledger(account_id) == []
    run(body)


@pytest.mark.parametrize("units", [-1, MAX_UNITS + 1])
def test_create_account_out_of_range_writes_nothing(run: Any, units: int) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(ValueError):
            await store.create_account("a", "a" * 32, NOW, opening_units=units)
        assert await store.account_for_key("a" * 32) is None
        assert await store.find_accounts("a") == []
    run(body)


def test_create_account_with_a_taken_key_writes_nothing(run: Any) -> None:
    async def body(store: Store) -> None:
        await store.create_account("first", "a" * 32, NOW)
        with pytest.raises(Exception):  # noqa: B017 (each driver's own integrity error)
            await store.create_account("second", "a" * 32, NOW, opening_units=5)
        assert [a.name for a in await store.find_accounts("s")] == ["first"]
    run(body)


def test_find_accounts_by_id_name_and_key(run: Any) -> None:
    async def body(store: Store) -> None:
        shop = await store.create_account("Big Shop", "a" * 32, NOW)
        other = await store.create_account("other", "b" * 32, NOW)
        await store.add_key(other, "c" * 32, NOW)
        await store.revoke_key("c" * 32, NOW)
        assert [a.id for a in await store.find_accounts("shop")] == [shop]
        assert [a.id for a in await store.find_accounts(str(other))] == [other]
        assert [a.id for a in await store.find_accounts("a" * 32)] == [shop]
        assert [a.id for a in await store.find_accounts("c" * 32)] == [other]
        assert [a.id for a in await store.find_accounts("O", limit=1)] == [shop]
    run(body)


def test_find_accounts_reads_wildcards_literally(run: Any) -> None:
    async def body(store: Store) -> None:
        await store.create_account("plain", "a" * 32, NOW)
        await store.create_account("50%_off", "b" * 32, NOW)
        await store.create_account("back\\slash", "c" * 32, NOW)
        assert [a.name for a in await store.find_accounts("%")] == ["50%_off"]
        assert [a.name for a in await store.find_accounts("_")] == ["50%_off"]
        assert [a.name for a in await store.find_accounts("\\")] == ["back\\slash"]
    run(body)
