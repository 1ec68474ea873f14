"""Store primitives the web console and the statistics methods add, on every backend:
admin tokens, console sessions, usage per bucket, solve durations, recent tasks, workers
online and open tasks (the same shape as test_contract.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capd.store.base import ConsoleSession, NewTask, Store, UsageRow
from tests.store.contract import NOW, counter_ids, covers

KEY = "a" * 32
HOUR = 3600.0


async def funded(store: Store, units: int = 10**8) -> int:
    account_id = await store.create_account("t", KEY, NOW - 10)
    await store.adjust_balance(account_id, units, "topup", "test", "", NOW - 10)
    return account_id


async def task(store: Store, account_id: int, created: float, new_id: Callable[[], int],
               ttype: str = "ImageToTextTask", ip: str = "10.0.0.1") -> int:
    return await store.create_task(NewTask(account_id, ttype, {"body": "x"}, {}, 30_000,
                                           created, created + 60, ip), new_id)


@covers("create_admin_token", "admin_token", "revoke_admin_token")
def test_admin_tokens_live_until_revoked(run: Any) -> None:
    async def body(store: Store) -> None:
        token_id = await store.create_admin_token("d" * 64, "ops", NOW)
        token = await store.admin_token("d" * 64)
        assert token is not None and (token.id, token.name) == (token_id, "ops")
        assert await store.revoke_admin_token("d" * 64, NOW)
        assert await store.admin_token("d" * 64) is None
        assert not await store.revoke_admin_token("d" * 64, NOW)
    run(body)


@covers("create_console_session", "console_session", "set_console_session_key",
        "sweep_console_sessions", "delete_console_session")
def test_console_sessions_expire_rekey_and_sweep(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        session = ConsoleSession("h" * 64, "account", account_id, KEY, None, "c", NOW,
                                 NOW + 100)
        await store.create_console_session(session)
        assert await store.console_session("h" * 64, NOW + 99) == session
        assert await store.console_session("h" * 64, NOW + 100) is None
        await store.set_console_session_key("h" * 64, "b" * 64)
        found = await store.console_session("h" * 64, NOW)
        assert found is not None and found.key_digest == "b" * 64
        assert await store.sweep_console_sessions(NOW + 100) == 1
        assert await store.console_session("h" * 64, NOW) is None
        await store.create_console_session(session)
        await store.delete_console_session("h" * 64)
        assert await store.console_session("h" * 64, NOW) is None
    run(body)


@covers("usage")
def test_usage_counts_tasks_and_money_per_bucket_and_type(run: Any) -> None:
    async def body(store: Store) -> list[UsageRow]:
        account_id = await funded(store)
        new_id = counter_ids()
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
            UsageRow(NOW + HOUR, "TurnstileTaskProxyless", 1, 1, 0, 30_000)]
        assert await store.usage(account_id + 1, NOW, NOW + 7200, 3600) == []
        return rows
    assert run(body) == [UsageRow(NOW, "ImageToTextTask", 2, 1, 1, 0),
                         UsageRow(NOW + HOUR, "TurnstileTaskProxyless", 1, 1, 0, 30_000)]


@covers("solve_durations")
def test_solve_durations_are_the_latest_solved_tasks_newest_first(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        other = await store.create_account("u", "b" * 32, NOW - 10)
        await store.adjust_balance(other, 10**8, "topup", "test", "", NOW - 10)
        new_id = counter_ids()
        first = await task(store, account_id, NOW, new_id)
        await store.finish_task(first, NOW + 2.5, solution={"text": "x"})
        second = await task(store, other, NOW + 1, new_id, "TurnstileTaskProxyless")
        await store.finish_task(second, NOW + 5, solution={"token": "t"})
        failed = await task(store, account_id, NOW + 1, new_id)
        await store.finish_task(failed, NOW + 6, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        assert await store.solve_durations(None, NOW) == [("TurnstileTaskProxyless", 4.0),
                                                          ("ImageToTextTask", 2.5)]
        assert await store.solve_durations(account_id, NOW) == [("ImageToTextTask", 2.5)]
        assert await store.solve_durations(None, NOW, limit=1) == [
            ("TurnstileTaskProxyless", 4.0)]
        assert await store.solve_durations(None, NOW + 3) == [("TurnstileTaskProxyless", 4.0)]
    run(body)


@covers("recent_tasks")
def test_recent_tasks_are_the_accounts_latest_without_payloads(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        other = await store.create_account("u", "b" * 32, NOW - 10)
        await store.adjust_balance(other, 10**8, "topup", "test", "", NOW - 10)
        new_id = counter_ids()
        first = await task(store, account_id, NOW, new_id)
        second = await task(store, account_id, NOW + 5, new_id)
        third = await task(store, account_id, NOW + 6, new_id)
        await task(store, other, NOW + 7, new_id)
        recent = await store.recent_tasks(account_id, 2)
        assert [t.id for t in recent] == [third, second]
        assert all(t.payload == {} for t in recent)
        assert [t.id for t in await store.recent_tasks(account_id)] == [third, second, first]
    run(body)


@covers("open_tasks")
def test_open_tasks_count_queued_and_leased_per_type(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        new_id = counter_ids()
        done = await task(store, account_id, NOW, new_id)
        await store.finish_task(done, NOW + 1, solution={"text": "x"})
        await task(store, account_id, NOW + 5, new_id)
        await task(store, account_id, NOW + 6, new_id, "TurnstileTaskProxyless")
        await store.claim_tasks(["TurnstileTaskProxyless"], 1, "w1", 60, NOW + 7)
        assert await store.open_tasks() == {"ImageToTextTask": (1, 0),
                                            "TurnstileTaskProxyless": (0, 1)}
    run(body)


@covers("workers_online")
def test_workers_online_has_last_seen_and_leases(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await funded(store)
        new_id = counter_ids()
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
