"""SQLite while another process holds the write lock (issue 12): the writer waits on its own
thread, reads go on beside it, and the store stays whole whatever happens to the waiter."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capd.store.base import StoreUnavailable, TaskState
from capd.store.sqlite import SQLiteStore
from tests.store.contract import NOW, counter_ids, funded, new_task

KEY = "k" * 32
LONG_WAIT_MS = 60_000  # the writer's busy timeout: far longer than any test here runs


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "capd.db")


@pytest.fixture
def other(path: str) -> Iterator[sqlite3.Connection]:
    """Another process's connection (the CLI, a backup, a checkpoint), autocommit."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield connection
    if connection.in_transaction:
        connection.execute("ROLLBACK")
    connection.close()


async def writer_waiting(store: SQLiteStore) -> None:
    """Returns once a write unit waits on the writer's thread for the file's lock."""
    while not (store._write_lock.locked() and not store._thread_idle()):
        await asyncio.sleep(0)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("capd-sqlite-writer")]


def test_reads_answer_while_a_write_waits_for_the_lock(path: str,
                                                       other: sqlite3.Connection) -> None:
    async def body() -> None:
        store = SQLiteStore(path, busy_timeout_ms=LONG_WAIT_MS)
        await store.migrate()
        account_id = await funded(store, key=KEY)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        await store.finish_task(task_id, NOW, solution={"text": "abc"})
        other.execute("BEGIN IMMEDIATE")
        create = asyncio.create_task(store.create_task(new_task(account_id), counter_ids(2000)))
        await writer_waiting(store)
        # everything a poll of a solved task reads, cached or not
        store._final_tasks.clear()
        store._invalidate()
        caller = await store.caller_for_key(KEY)
        task = await store.get_task(task_id, with_payload=False)
        ban = await store.active_ban("ip", "198.51.100.1", None, NOW)
        account = await store.account(account_id)
        assert not create.done()  # the reads did not wait for the writer
        assert caller is not None and caller.account_id == account_id
        assert task is not None and task.state == TaskState.SOLVED
        assert ban is None and account is not None
        other.execute("ROLLBACK")
        assert await create == 2000
        await store.close()
    asyncio.run(body())


def test_a_write_waits_on_its_thread_then_is_store_unavailable(
        path: str, other: sqlite3.Connection) -> None:
    async def body() -> None:
        store = SQLiteStore(path, busy_timeout_ms=200)
        await store.migrate()
        account_id = await funded(store, key=KEY)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await store.create_task(new_task(account_id), counter_ids())
        other.execute("ROLLBACK")
        assert await store.create_task(new_task(account_id), counter_ids()) == 1000
        await store.close()
    asyncio.run(body())


def test_writes_queued_behind_a_waiting_one_share_its_busy_timeout(
        path: str, other: sqlite3.Connection) -> None:
    busy_s, writes = 1.0, 5

    async def body() -> None:
        store = SQLiteStore(path, busy_timeout_ms=int(busy_s * 1000))
        await store.migrate()
        account_id = await funded(store, key=KEY)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(store.create_task(new_task(account_id), counter_ids(1000 * n))
              for n in range(1, writes + 1)), return_exceptions=True)
        took = time.monotonic() - started
        other.execute("ROLLBACK")
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        # each waited for what was left of its own timeout, not a whole one after the
        # others' (that would be writes * busy_s)
        assert took < (writes - 2) * busy_s
        await store.close()
    asyncio.run(body())


def test_a_cancelled_transaction_leaves_nothing_behind(path: str,
                                                       other: sqlite3.Connection) -> None:
    async def body() -> None:
        store = SQLiteStore(path, busy_timeout_ms=LONG_WAIT_MS)
        await store.migrate()
        account_id = await funded(store, key=KEY)
        task_id = await store.create_task(new_task(account_id), counter_ids())
        other.execute("BEGIN IMMEDIATE")
        finish = asyncio.create_task(store.finish_task(task_id, NOW, solution={"text": "x"}))
        await writer_waiting(store)
        finish.cancel()
        other.execute("ROLLBACK")
        with pytest.raises(asyncio.CancelledError):
            await finish
        async with store._write_lock:  # once the writer's queue has run: the file is free
            assert not await store._on_writer(lambda: store._db.in_transaction)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        # the next units run whole, outside whatever the cancelled one left open
        assert await store.create_task(new_task(account_id), counter_ids(2000)) == 2000
        await store.adjust_balance(account_id, 5, "topup", "test", "", NOW)
        account = await store.account(account_id)
        assert account is not None
        assert account.balance_units == await store.ledger_sum(account_id)
        await store.close()
    asyncio.run(body())


def test_a_commit_by_another_connection_reaches_the_caches(path: str,
                                                           other: sqlite3.Connection) -> None:
    async def body() -> None:
        store = SQLiteStore(path)
        await store.migrate()
        await funded(store, key=KEY)
        assert await store.caller_for_key(KEY) is not None  # now cached
        other.execute("UPDATE api_keys SET revoked_at = 1 WHERE revoked_at IS NULL")
        await asyncio.sleep(0)  # seen from the next turn of the loop (one check a turn)
        assert await store.caller_for_key(KEY) is None
        await store.close()
    asyncio.run(body())


def test_a_key_revoked_while_it_is_looked_up_is_not_kept_in_the_cache(
        path: str, other: sqlite3.Connection) -> None:
    async def body() -> None:
        store = SQLiteStore(path, busy_timeout_ms=LONG_WAIT_MS)
        await store.migrate()
        await funded(store, key=KEY)
        other.execute("BEGIN IMMEDIATE")
        revoke = asyncio.create_task(store.revoke_key(KEY, NOW))
        await writer_waiting(store)
        assert await store.caller_for_key(KEY) is not None  # read (and cached) meanwhile
        other.execute("ROLLBACK")
        assert await revoke
        assert await store.caller_for_key(KEY) is None
        await store.close()
    asyncio.run(body())


def test_close_stops_the_writer_thread(path: str) -> None:
    before = set(writer_threads())

    async def body() -> None:
        store = SQLiteStore(path)
        await store.migrate()
        await funded(store, key=KEY)
        assert set(writer_threads()) - before  # the writes ran on it
        await store.close()
    asyncio.run(body())
    assert set(writer_threads()) <= before


def test_an_in_memory_database_runs_its_statements_inline() -> None:
    before = set(writer_threads())

    async def body() -> None:
        store = SQLiteStore(":memory:")
        await store.migrate()
        account_id = await funded(store, key=KEY)
        assert await store.create_task(new_task(account_id), counter_ids()) == 1000
        assert set(writer_threads()) == before
        await store.close()
    asyncio.run(body())
