"""A database that cannot answer surfaces as StoreUnavailable, never as a driver's error;
a statement that is wrong stays an ordinary error (it is a bug, not an outage)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from capd.errors import InsufficientFunds
from capd.store.base import StoreUnavailable
from capd.store.postgres import PostgresStore
from capd.store.postgres import _is_outage as postgres_outage
from capd.store.sqlite import SQLiteStore
from capd.store.sqlite import _is_outage as sqlite_outage
from tests.helpers import free_port
from tests.store.contract import NOW, counter_ids, new_task


def test_a_locked_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    async def body() -> None:
        store = SQLiteStore(str(tmp_path / "capd.db"), busy_timeout_ms=50)
        await store.migrate()
        account_id = await store.create_account("t", "a" * 32, NOW, opening_units=1000)
        other = sqlite3.connect(tmp_path / "capd.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.create_task(new_task(account_id), counter_ids())
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # the failed transaction left nothing behind: the store goes on
        assert await store.create_task(new_task(account_id), counter_ids()) == 1000
        await store.close()
    asyncio.run(body())


def test_store_errors_that_are_answers_pass_through(tmp_path: Path) -> None:
    async def body() -> None:
        store = SQLiteStore(str(tmp_path / "capd.db"))
        await store.migrate()
        account_id = await store.create_account("t", "a" * 32, NOW)
        with pytest.raises(InsufficientFunds):
            await store.create_task(new_task(account_id), counter_ids())
        await store.close()
    asyncio.run(body())


def test_unreachable_postgres_is_store_unavailable() -> None:
    async def body() -> None:
        store = PostgresStore(f"postgresql://capd@127.0.0.1:{free_port()}/capd")
        with pytest.raises(StoreUnavailable):
            await store.account(1)
        await store.close()
    asyncio.run(body())


def test_sqlite_outages_are_told_from_mistakes_by_result_code() -> None:
    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as mistake:
        db.execute("SELECT * FROM no_such_table")
    assert not sqlite_outage(mistake.value)
    for message in ("database is locked", "database or disk is full", "disk I/O error"):
        error = sqlite3.OperationalError(message)
        error.sqlite_errorcode = {"database is locked": sqlite3.SQLITE_BUSY,  # type: ignore[attr-defined]
                                  "database or disk is full": sqlite3.SQLITE_FULL,
                                  "disk I/O error": sqlite3.SQLITE_IOERR | (3 << 8)}[message]
        assert sqlite_outage(error), message
    assert sqlite_outage(OSError("no space left"))
    assert not sqlite_outage(sqlite3.IntegrityError("UNIQUE constraint failed"))


def test_postgres_outages_are_connection_and_resource_errors() -> None:
    import asyncpg

    assert postgres_outage(ConnectionRefusedError())
    assert postgres_outage(TimeoutError())
    assert postgres_outage(asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert postgres_outage(asyncpg.exceptions.AdminShutdownError("shutting down"))
    assert postgres_outage(asyncpg.exceptions.TooManyConnectionsError("too many"))
    assert not postgres_outage(asyncpg.exceptions.UniqueViolationError("duplicate"))
    assert not postgres_outage(ValueError("bad"))


def test_store_unavailable_is_an_os_error_and_not_an_answer() -> None:
    from capd.errors import CapdError

    assert issubclass(StoreUnavailable, OSError)
    assert not issubclass(StoreUnavailable, CapdError)
