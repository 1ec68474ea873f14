"""Migration 0005 (issue 12): twin active bans made before it fold into the one with the
latest end, and the slot then holds one ban."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from capd.store import open_store
from capd.store.migrations import migration_scripts

INSERT = ("INSERT INTO bans (id, scope, ip, account_id, reason, started_at, ends_at,"
          " lifted_at, lifted_by) VALUES ({})")


def twins(now: float) -> list[tuple[Any, ...]]:
    """(id, scope, ip, account, reason, start, end, lifted_at, lifted_by)"""
    return [
        (1, "ip", "192.0.2.1", None, "r", now - 60, now + 600, None, None),
        (2, "ip", "192.0.2.1", None, "r", now - 30, now + 900, None, None),  # latest end
        (3, "ip", "192.0.2.1", None, "r", now - 900, now - 100, None, None),  # ended
        (4, "ip", "192.0.2.1", None, "r", now - 50, now + 950, now - 10, "op"),  # lifted
        (5, "account_ip", "192.0.2.1", 7, "r", now - 60, now + 600, None, None),
        (6, "account_ip", "192.0.2.1", 8, "r", now - 60, now + 600, None, None),
    ]


async def _sqlite(path: Path, now: float) -> list[tuple[Any, ...]]:
    store = open_store(f"sqlite:///{path}")
    await store.migrate()
    await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP INDEX bans_one_active")
    for row in twins(now):
        db.execute(INSERT.format(", ".join("?" * len(row))), row)
    [script] = [sql for version, sql in migration_scripts("sqlite") if version == 5]
    for statement in script.split(";\n"):
        db.execute(statement)
    rows = db.execute("SELECT id, lifted_at, lifted_by FROM bans ORDER BY id").fetchall()
    db.close()
    return rows


async def _postgres(url: str, now: float) -> list[tuple[Any, ...]]:
    store = open_store(url)
    await store.migrate()
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP INDEX bans_one_active")
        for row in twins(now):
            await conn.execute(INSERT.format(", ".join(f"${i + 1}" for i in range(len(row)))),
                               *row)
        [script] = [sql for version, sql in migration_scripts("postgres") if version == 5]
        await conn.execute(script)
        rows = await conn.fetch("SELECT id, lifted_at, lifted_by FROM bans ORDER BY id")
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_twin_bans_fold_into_the_latest_end(backend: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    now = time.time()
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'capd.db'}"
        rows = asyncio.run(_sqlite(tmp_path / "capd.db", now))
    else:
        url = str(request.getfixturevalue("pg_url"))
        rows = asyncio.run(_postgres(url, now))
    by_id = {r[0]: r[1:] for r in rows}
    assert by_id[2] == (None, None) and by_id[5] == (None, None) and by_id[6] == (None, None)
    lifted_at, lifted_by = by_id[1]  # a running twin: lifted now, as merged
    assert lifted_by == "merged" and lifted_at is not None and abs(lifted_at - now) < 60
    assert by_id[3] == (None, "merged")  # an ended one stays ended
    assert by_id[4] == (now - 10, "op")  # a lifted one is left alone

    async def after() -> None:
        store = open_store(url)
        try:
            assert [b.id for b in await store.bans(now)] == [2, 5, 6]
            assert await store.add_ban("ip", "192.0.2.1", None, "r", now, now + 1000) == 2
        finally:
            await store.close()
    asyncio.run(after())
