"""At most one active ban per IP and per account+IP, held by the database (issue 12):
many nodes noting violations at the same address at the same moment start one ban."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from capd.domain.limits import LimitRules
from capd.policy import Policy
from capd.store.base import Store
from capd.store.postgres import PostgresStore
from tests.store.contract import NOW

NODES = 4  # stores, each with its own connection pool: several nodes
CALLS_PER_NODE = 25
POOL = 4  # connections per store: the calls of one node overlap on several connections
RULES = LimitRules(max_polls_per_task=120, max_polls_per_s=10, ban_duration_s=600,
                   unknown_key_ban_threshold=1, violation_block_threshold=1,
                   violation_window_s=60, poll_window_s=600)


async def nodes(pg_url: str) -> list[Store]:
    stores: list[Store] = [PostgresStore(pg_url, max_connections=POOL) for _ in range(NODES)]
    await stores[0].migrate()
    for store in stores:  # each opens its pool before the calls race
        await store.bans(NOW)
    return stores


async def open_rows(pg_url: str) -> list[Any]:
    """Every ban row not lifted and not retired, straight from the table."""
    conn = await asyncpg.connect(pg_url)
    try:
        return list(await conn.fetch(
            "SELECT id, scope, ip, account_id, ends_at FROM bans"
            " WHERE lifted_at IS NULL AND lifted_by IS NULL"))
    finally:
        await conn.close()


def test_concurrent_violations_on_several_nodes_start_one_ban(pg_url: str) -> None:
    async def main() -> None:
        stores = await nodes(pg_url)
        try:
            policies = [Policy(s, RULES, lambda: NOW) for s in stores]
            # threshold 1: every unknown key and every violation asks for the ban at once
            await asyncio.gather(*(
                call for p in policies for _ in range(CALLS_PER_NODE)
                for call in (p.note_unknown_key("203.0.113.7"),
                             p.note_violation(5, "203.0.113.7", "zero balance"))))
            rows = await open_rows(pg_url)
            assert sorted((r["scope"], r["account_id"]) for r in rows) == [
                ("account_ip", 5), ("ip", None)], rows
            active = await stores[1].bans(NOW)
            assert len(active) == 2
            for ban in active:
                assert await stores[2].lift_ban(ban.id, NOW, "op")
            for store in stores:
                assert await store.bans(NOW) == []
                assert await store.active_ban("ip", "203.0.113.7", None, NOW) is None
                assert await store.active_ban("account_ip", "203.0.113.7", 5, NOW) is None
        finally:
            for store in stores:
                await store.close()
    asyncio.run(main())


def test_concurrent_bans_at_an_ended_ban_start_one_new_one(pg_url: str) -> None:
    async def main() -> None:
        stores = await nodes(pg_url)
        try:
            old = await stores[0].add_ban("ip", "203.0.113.8", None, "r", NOW - 700, NOW - 100)
            ends = [NOW + 600 + i for i in range(NODES * CALLS_PER_NODE)]
            ids = await asyncio.gather(*(
                stores[i % NODES].add_ban("ip", "203.0.113.8", None, "r", NOW, end)
                for i, end in enumerate(ends)))
            assert len(set(ids)) == 1 and old not in ids
            rows = await open_rows(pg_url)
            assert [(r["id"], r["ends_at"]) for r in rows] == [(ids[0], max(ends))]
            assert await stores[3].lift_ban(ids[0], NOW, "op")
            assert await stores[1].bans(NOW) == []
        finally:
            for store in stores:
                await store.close()
    asyncio.run(main())


def test_concurrent_first_calls_on_a_node_open_one_pool(pg_url: str) -> None:
    async def main() -> None:
        first = PostgresStore(pg_url)
        await first.migrate()
        await first.close()
        store = PostgresStore(pg_url, max_connections=POOL)
        opened: list[Any] = []
        real_create = asyncpg.create_pool

        async def counting(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)  # let the other first calls reach the check meanwhile
            pool = await real_create(*args, **kwargs)
            opened.append(pool)
            return pool

        asyncpg.create_pool = counting
        try:
            await asyncio.gather(*(store.bans(NOW) for _ in range(8)))
        finally:
            asyncpg.create_pool = real_create
            await store.close()
        assert len(opened) == 1
        assert all(p._closed for p in opened)

    asyncio.run(main())
