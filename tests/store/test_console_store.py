"""Store primitives the web console and the statistics methods add, on every backend:
admin tokens, console sessions, usage per bucket, solve durations, recent tasks, workers
online and open tasks (the same shape as test_contract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from capd.store.base import ConsoleSession, NewTask, Store, UsageRow
from capd.store.postgres import PostgresStore
from capd.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0  # a multiple of 3600 and of 86400
KEY = "a" * 32


@pytest.fixture(params=["sqlite", "postgres"])
def run(request: Any, tmp_path: Path) -> Callable[[Callable[[Store], Awaitable[Any]]], Any]:
    def open_store() -> Store:
        if request.param == "sqlite":
            return SQLiteStore(str(tmp_path / "console.db"))
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


def ids() -> Callable[[], int]:
    counter = iter(range(1000, 10**6))
    return lambda: next(counter)


async def funded(store: Store, units: int = 10**8) -> int:
    account_id = await store.create_account("t", KEY, NOW - 10)
    await store.adjust_balance(account_id, units, "topup", "test", "", NOW - 10)
    return account_id


async def task(store: Store, account_id: int, created: float, new_id: Callable[[], int],
               ttype: str = "ImageToTextTask", ip: str = "10.0.0.1") -> int:
    return await store.create_task(NewTask(account_id, ttype, {"body": "x"}, {}, 30_000,
                                           created, created + 60, ip), new_id)


def test_admin_tokens_live_until_revoked(run: Any) -> None:
    async def body(store: Store) -> None:
        token_id = await store.create_admin_token("d" * 64, "ops", NOW)
        token = await store.admin_token("d" * 64)
        assert token is not None and (token.id, token.name) == (token_id, "ops")
        assert await store.revoke_admin_token("d" * 64, NOW)
        assert await store.admin_token("d" * 64) is None
        assert not await store.revoke_admin_token("d" * 64, NOW)
    run(body)


def test_console_sessions_expire_rekey_and_sweep(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        session = ConsoleSession("h" * 64, "account", account_id, KEY, None, "c", NOW,
                                 NOW + 100)
        await store.create_console_session(session)
        assert await store.console_session("h" * 64, NOW + 99) == session
        assert await store.console_session("h" * 64, NOW + 100) is None
        await store.set_console_session_key("h" * 64, "b" * 32)
        found = await store.console_session("h" * 64, NOW)
        assert found is not None and found.api_key == "b" * 32
        assert await store.sweep_console_sessions(NOW + 100) == 1
        assert await store.console_session("h" * 64, NOW) is None
        await store.create_console_session(session)
        await store.delete_console_session("h" * 64)
        assert await store.console_session("h" * 64, NOW) is None
    run(body)


def test_usage_counts_tasks_and_money_per_bucket_and_type(run: Any) -> None:
    async def body(store: Store) -> list[UsageRow]:
        account_id = await funded(store)
        new_id = ids()
        solved = await task(store, account_id, NOW + 10, new_id)
        await store.finish_task(solved, NOW + 12, solution={"text": "x"})
        failed = await task(store, account_id, NOW + 20, new_id)
        await store.finish_task(failed, NOW + 22, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        other = await task(store, account_id, NOW + 3700, new_id, "TurnstileTaskProxyless",
                           ip="10.0.0.2")
        await store.finish_task(other, NOW + 3710, solution={"token": "t"})
        await store.report_task(solved, account_id, refund=True, now=NOW + 30,
                                window_s=86400)
        rows = await store.usage(account_id, NOW, NOW + 7200, 3600)
        assert await store.usage(account_id, NOW, NOW + 7200, 3600, ip="10.0.0.2") == [
            UsageRow(NOW + 3600, "TurnstileTaskProxyless", 1, 1, 0, 30_000)]
        assert await store.usage(account_id + 1, NOW, NOW + 7200, 3600) == []
        return rows
    assert run(body) == [UsageRow(NOW, "ImageToTextTask", 2, 1, 1, 0),
                         UsageRow(NOW + 3600, "TurnstileTaskProxyless", 1, 1, 0, 30_000)]


def test_solve_durations_recent_tasks_and_open_tasks(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        new_id = ids()
        first = await task(store, account_id, NOW, new_id)
        await store.finish_task(first, NOW + 2.5, solution={"text": "x"})
        second = await task(store, account_id, NOW + 5, new_id)
        await task(store, account_id, NOW + 6, new_id, "TurnstileTaskProxyless")
        await store.claim_tasks(["TurnstileTaskProxyless"], 1, "w1", 60, NOW + 7)
        assert await store.solve_durations(account_id, NOW) == [("ImageToTextTask", 2.5)]
        assert await store.solve_durations(None, NOW + 3) == []
        recent = await store.recent_tasks(account_id, 2)
        assert [t.id for t in recent][0] != first and len(recent) == 2
        assert all(t.payload == {} for t in recent)
        assert await store.open_tasks() == {"ImageToTextTask": (1, 0),
                                            "TurnstileTaskProxyless": (0, 1)}
        assert second in [t.id for t in recent]
    run(body)


def test_workers_online_has_last_seen_and_leases(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        new_id = ids()
        await task(store, account_id, NOW, new_id)
        await task(store, account_id, NOW, new_id)
        await store.claim_tasks(["ImageToTextTask"], 1, "builtin-abc", 60, NOW + 1)
        await store.claim_tasks(["ImageToTextTask"], 1, "f00d", 60, NOW + 1)
        await store.note_workers(["ImageToTextTask", "HCaptchaTask"], NOW + 1)
        online = {w.type: w for w in await store.workers_online(NOW + 2)}
        assert online["ImageToTextTask"].leases_held == 2
        assert online["ImageToTextTask"].builtin_leases == 1
        assert online["HCaptchaTask"].last_seen == NOW + 1
        assert online["HCaptchaTask"].leases_held == 0
        later = {w.type: w for w in await store.workers_online(NOW + 100)}
        assert later["ImageToTextTask"].leases_held == 0  # the leases ran out
    run(body)
