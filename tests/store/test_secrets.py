"""Store contract for secrets at rest (issue 13 item 4): API keys kept as digests with a
hint, proxy credentials and callback URL credentials dropped when a task ends (the outbox
keeps the URL until the callback is settled), and migration 0006 turning a database of
clear keys into one of digests."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from capd.store import sqlite_path
from capd.store.base import CallbackState, ConsoleSession, Store, Task
from capd.store.migrations import migration_scripts
from capd.store.secrets import secret_digest
from tests.store.conftest import open_backend
from tests.store.contract import NOW, PERSISTENT, counter_ids, covers, new_task

persistent = pytest.mark.parametrize("location", PERSISTENT, indirect=True)

KEY = "5ec2e7a11b0b5ec2e7a11b0b5ec2e7a1"
OTHER_KEY = "0ddba11c0ffee0ddba11c0ffee0ddba1"
PROXY_TASK = {"websiteURL": "https://shop.example/login", "websiteKey": "k" * 40,
              "proxyType": "http", "proxyAddress": "203.0.113.7", "proxyPort": 3128,
              "proxyLogin": "proxyuser", "proxyPassword": "s3cret-pass"}
HOOK = "https://hookuser:hookpass@hook.example/cb?order=7"
BARE_HOOK = "https://hook.example/cb?order=7"


def raw(location: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a persistent backend's database directly; its rows."""
    if location.startswith("sqlite://"):
        db = sqlite3.connect(sqlite_path(location), isolation_level=None, timeout=30)
        try:
            return [tuple(r) for r in db.execute(sql, args).fetchall()]
        finally:
            db.close()

    async def fetch() -> list[tuple[Any, ...]]:
        import asyncpg

        base, _, search_path = location.partition("?search_path=")
        conn = await asyncpg.connect(base, server_settings={"search_path": search_path}
                                     if search_path else None)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def run_script(location: str, statements: list[str]) -> None:
    """Run statements in order on a persistent backend's database, in one connection."""
    if location.startswith("sqlite://"):
        db = sqlite3.connect(sqlite_path(location), isolation_level=None)
        try:
            for statement in statements:
                db.execute(statement)
        finally:
            db.close()
        return

    async def go() -> None:
        import asyncpg

        base, _, search_path = location.partition("?search_path=")
        conn = await asyncpg.connect(base, server_settings={"search_path": search_path}
                                     if search_path else None)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


def database_text(location: str) -> str:
    """Every row of every table of a persistent backend's database, as text."""
    if location.startswith("sqlite://"):
        db = sqlite3.connect(sqlite_path(location))
        try:
            return "\n".join(db.iterdump())
        finally:
            db.close()
    tables = [r[0] for r in raw(location, "SELECT table_name FROM information_schema.tables"
                                          " WHERE table_schema = current_schema()")]
    return "\n".join(str(r) for t in tables for r in raw(location, f"SELECT t::text FROM {t} t"))


def render(task: Task) -> str:
    return orjson.dumps({"taskId": task.id}).decode()


async def proxy_task(store: Store, callback_url: str | None = HOOK) -> tuple[int, int]:
    """(account id, task id) of a queued task with proxy credentials and a callback URL."""
    account_id = await store.create_account("t", KEY, NOW)
    await store.adjust_balance(account_id, 1000, "topup", "test", "", NOW)
    task = dataclasses.replace(new_task(account_id, task_type="RecaptchaV2Task"),
                               payload=dict(PROXY_TASK), callback_url=callback_url)
    return account_id, await store.create_task(task, counter_ids())


# -- keys ---------------------------------------------------------------------------------------
@covers("create_account", "add_key", "keys")
def test_keys_are_kept_as_digest_and_hint(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", KEY, NOW)
        await store.add_key(account_id, OTHER_KEY, NOW + 1)
        assert [(k.digest, k.hint) for k in await store.keys(account_id)] == [
            (secret_digest(KEY), KEY[:4]), (secret_digest(OTHER_KEY), OTHER_KEY[:4])]
        assert all(k.key_id == k.digest[:16] for k in await store.keys(account_id))
    run(body)


@covers("caller_for_key_digest", "revoke_key_digest", "caller_for_key")
def test_a_key_is_found_and_revoked_by_its_digest(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", KEY, NOW)
        caller = await store.caller_for_key_digest(secret_digest(KEY))
        assert caller is not None and caller.account_id == account_id
        assert await store.caller_for_key_digest(KEY) is None  # the key is not its digest
        assert await store.revoke_key_digest(secret_digest(KEY), NOW)
        assert not await store.revoke_key_digest(secret_digest(KEY), NOW)
        assert await store.caller_for_key(KEY) is None
    run(body)


@covers("keys_by_id")
def test_a_key_is_found_by_its_id(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", KEY, NOW)
        await store.add_key(account_id, OTHER_KEY, NOW)
        [found] = await store.keys_by_id(secret_digest(KEY)[:16])
        assert (found.digest, found.account_id) == (secret_digest(KEY), account_id)
        assert await store.keys_by_id(KEY[:16]) == []
    run(body)


@covers("find_accounts", "account_for_key")
def test_an_account_is_found_by_its_key_not_by_its_digest(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", KEY, NOW)
        assert [a.id for a in await store.find_accounts(KEY)] == [account_id]
        assert await store.find_accounts(secret_digest(KEY)) == []
        found = await store.account_for_key(KEY)
        assert found is not None and found.id == account_id
    run(body)


@persistent
def test_no_clear_key_is_written_to_the_database(run: Any, location: str) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", KEY, NOW)
        await store.add_key(account_id, OTHER_KEY, NOW)
        await store.create_console_session(ConsoleSession(
            "h" * 64, "account", account_id, secret_digest(KEY), None, "c", NOW, NOW + 60))
        await store.set_console_session_key("h" * 64, secret_digest(OTHER_KEY))
    run(body)
    text = database_text(location)
    assert secret_digest(KEY) in text  # the dump is complete enough to show the digest
    assert KEY not in text and OTHER_KEY not in text


# -- credentials dropped when a task ends -------------------------------------------------------
@covers("create_task", "claim_tasks", "get_task")
def test_an_open_task_keeps_its_proxy_credentials_for_the_worker(run: Any) -> None:
    async def body(store: Store) -> None:
        _, task_id = await proxy_task(store)
        [claimed] = await store.claim_tasks(["RecaptchaV2Task"], 1, "w", 30, NOW)
        assert claimed.payload == PROXY_TASK and claimed.callback_url == HOOK
        stored = await store.get_task(task_id)
        assert stored is not None and stored.payload == PROXY_TASK
    run(body)


@pytest.mark.parametrize("outcome", [{"solution": {"gRecaptchaResponse": "r"}},
                                     {"error_code": "ERROR_CAPTCHA_UNSOLVABLE"}],
                         ids=["solved", "failed"])
@covers("finish_task", "get_task")
def test_a_finished_task_keeps_no_proxy_credentials(run: Any, outcome: dict[str, Any]) -> None:
    async def body(store: Store) -> None:
        _, task_id = await proxy_task(store)
        finished = await store.finish_task(task_id, NOW + 1, **outcome)
        kept = {k: v for k, v in PROXY_TASK.items()
                if k not in ("proxyLogin", "proxyPassword")}
        assert finished is not None and finished.payload == kept
        stored = await store.get_task(task_id)
        assert stored is not None and stored.payload == kept
    run(body)


@covers("finish_task", "get_task")
def test_a_finished_task_keeps_no_callback_credentials(run: Any) -> None:
    async def body(store: Store) -> None:
        _, task_id = await proxy_task(store)
        finished = await store.finish_task(task_id, NOW + 1, error_code="ERROR_NO_SLOT_AVAILABLE")
        assert finished is not None and finished.callback_url == BARE_HOOK
        stored = await store.get_task(task_id, with_payload=False)
        assert stored is not None and stored.callback_url == BARE_HOOK
    run(body)


@covers("finish_task")
def test_a_task_without_credentials_is_finished_unchanged(run: Any) -> None:
    async def body(store: Store) -> None:
        account_id = await store.create_account("t", KEY, NOW)
        await store.adjust_balance(account_id, 1000, "topup", "test", "", NOW)
        task = dataclasses.replace(new_task(account_id), callback_url=BARE_HOOK)
        task_id = await store.create_task(task, counter_ids())
        finished = await store.finish_task(task_id, NOW + 1, solution={"text": "x"})
        assert finished is not None
        assert (finished.payload, finished.callback_url) == ({"body": "x"}, BARE_HOOK)
    run(body)


@covers("finish_task", "claim_callbacks", "settle_callback")
def test_the_outbox_keeps_the_callback_credentials_while_pending(run: Any) -> None:
    async def body(store: Store) -> None:
        _, task_id = await proxy_task(store)
        await store.finish_task(task_id, NOW, error_code="ERROR_CAPTCHA_UNSOLVABLE",
                                callback=render)
        [first] = await store.claim_callbacks(NOW, 30, 10, 2)
        assert first.url == HOOK  # delivered where the client asked, credentials included
        assert await store.settle_callback(first.id, CallbackState.PENDING, NOW + 1)
        [retry] = await store.claim_callbacks(NOW + 1, 30, 10, 2)
        assert retry.url == HOOK
    run(body)


@persistent
@pytest.mark.parametrize("final", [CallbackState.DELIVERED, CallbackState.FAILED])
def test_a_settled_callback_keeps_no_credentials(run: Any, location: str,
                                                 final: CallbackState) -> None:
    async def body(store: Store) -> None:
        _, task_id = await proxy_task(store)
        await store.finish_task(task_id, NOW, error_code="ERROR_CAPTCHA_UNSOLVABLE",
                                callback=render)
        [cb] = await store.claim_callbacks(NOW, 30, 10, 2)
        assert await store.settle_callback(cb.id, final, NOW)
    run(body)
    assert raw(location, "SELECT url, state FROM callbacks_outbox") == [(BARE_HOOK, final.value)]
    text = database_text(location)
    assert "hookpass" not in text and "s3cret-pass" not in text


# -- migration 0006: a database of clear keys ---------------------------------------------------
def old_database(location: str) -> None:
    """A database at the version before 0006, holding what was kept in clear then: keys, a
    console session's key, the demo key in meta, proxy and callback credentials."""
    scripts = [(v, sql) for v, sql in migration_scripts(
        "sqlite" if location.startswith("sqlite://") else "postgres") if v < 6]
    statements = ["CREATE TABLE schema_version (version INTEGER NOT NULL)"]
    for version, sql in scripts:  # as each backend's migrate() runs them
        if location.startswith("sqlite://"):
            statements += [s for s in sql.split(";\n") if s.strip()]
        else:
            statements.append(sql)
        statements.append(f"INSERT INTO schema_version (version) VALUES ({version})")
    task_cols = ("id, account_id, type, payload, options, state, price_units, reserved_units,"
                 " created_at, deadline_at, client_ip, callback_url, ended_at")
    payload = orjson.dumps(PROXY_TASK).decode().replace("'", "''")
    statements += [
        f"INSERT INTO accounts (id, name, balance_units, created_at) VALUES (1, 'demo', 500,"
        f" {NOW})",
        f"INSERT INTO api_keys (key, account_id, created_at) VALUES ('{KEY}', 1, {NOW})",
        f"INSERT INTO api_keys (key, account_id, created_at, revoked_at)"
        f" VALUES ('{OTHER_KEY}', 1, {NOW}, {NOW})",
        "INSERT INTO meta (name, value) VALUES ('demo_key', '" + KEY + "')",
        f"INSERT INTO console_sessions (token_hash, kind, account_id, api_key, csrf,"
        f" created_at, expires_at) VALUES ('{'h' * 64}', 'account', 1, '{KEY}', 'c', {NOW},"
        f" {NOW + 3600})",
        f"INSERT INTO tasks ({task_cols}) VALUES (10, 1, 'RecaptchaV2Task', '{payload}', '{{}}',"
        f" 'failed', 1, 0, {NOW}, {NOW + 60}, '198.51.100.1', '{HOOK}', {NOW + 1})",
        f"INSERT INTO tasks ({task_cols}) VALUES (11, 1, 'RecaptchaV2Task', '{payload}', '{{}}',"
        f" 'queued', 1, 1, {NOW}, {NOW + 60}, '198.51.100.1', '{HOOK}', NULL)",
        f"INSERT INTO callbacks_outbox (task_id, account_id, url, body, created_at, next_at,"
        f" state) VALUES (10, 1, '{HOOK}', '{{}}', {NOW}, {NOW}, 'delivered')",
        "UPDATE accounts SET reserved_units = 1 WHERE id = 1",
    ]
    run_script(location, statements)


def migrated(location: str, check: Callable[[Store], Awaitable[Any]]) -> Any:
    """Make the old database, migrate it with capd, and run ``check`` on the store."""
    old_database(location)

    async def go() -> Any:
        store = open_backend(location)
        try:
            assert await store.migrate() >= 6
            return await check(store)
        finally:
            await store.close()
    return asyncio.run(go())


@persistent
def test_migrated_keys_authenticate_as_before(location: str) -> None:
    async def check(store: Store) -> None:
        caller = await store.caller_for_key(KEY)
        assert caller is not None and caller.account_id == 1
        assert await store.caller_for_key(OTHER_KEY) is None  # revoked stays revoked
        assert sorted((k.hint, k.revoked_at is None) for k in await store.keys(1)) == [
            (OTHER_KEY[:4], False), (KEY[:4], True)]
    migrated(location, check)


@persistent
def test_migration_leaves_no_clear_key(location: str) -> None:
    migrated(location, lambda store: asyncio.sleep(0))
    text = database_text(location)
    assert secret_digest(KEY) in text
    assert KEY not in text and OTHER_KEY not in text


@persistent
def test_migration_keeps_console_sessions_by_key_digest(location: str) -> None:
    session = migrated(location, lambda store: store.console_session("h" * 64, NOW))
    assert session is not None and session.key_digest == secret_digest(KEY)


@persistent
def test_migration_names_the_demo_account_instead_of_its_key(location: str) -> None:
    async def check(store: Store) -> None:
        assert await store.meta_get("demo_key") is None
        assert await store.meta_get("demo_account") == "1"
    migrated(location, check)


@persistent
def test_migration_drops_the_credentials_of_ended_tasks_only(location: str) -> None:
    async def check(store: Store) -> None:
        ended, still_open = await store.get_task(10), await store.get_task(11)
        assert ended is not None and still_open is not None
        assert "proxyPassword" not in ended.payload and ended.callback_url == BARE_HOOK
        assert still_open.payload == PROXY_TASK and still_open.callback_url == HOOK
        # the open one loses them when it ends
        finished = await store.finish_task(11, NOW + 2, error_code="ERROR_CAPTCHA_UNSOLVABLE")
        assert finished is not None and "proxyLogin" not in finished.payload
    migrated(location, check)
    assert raw(location, "SELECT url FROM callbacks_outbox") == [(BARE_HOOK,)]


# -- files --------------------------------------------------------------------------------------
def test_a_new_sqlite_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    import os
    import stat

    from capd.store.sqlite import SQLiteStore

    old = os.umask(0o022)
    try:
        store = SQLiteStore(str(tmp_path / "capd.db"))
        asyncio.run(store.migrate())
        asyncio.run(store.create_account("t", KEY, NOW))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        asyncio.run(store.close())
    finally:
        os.umask(old)
    assert modes == {"capd.db": 0o600, "capd.db-wal": 0o600, "capd.db-shm": 0o600}
