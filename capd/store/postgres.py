"""The scale-out backend: one PostgreSQL database shared by several API and worker nodes.

Every primitive is one statement or one transaction, so the guarantees hold across
processes: reservations are conditional updates, the queue hands each task to one
claimer (``FOR UPDATE SKIP LOCKED``), completion happens once (row lock + state check),
and counters and bans live in shared tables. New work is announced with NOTIFY so that
idle pollers on every node wake at once instead of polling the table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from capd.store.base import (
    Ban,
    Caller,
    Claimer,
    WorkerToken,
    raises_store_unavailable,
)
from capd.store.counters import Bounded, FinalTasks
from capd.store.migrations import migration_scripts
from capd.store.outbox import OutboxStatements, SqlOutbox
from capd.store.retention import RetentionStatements, SqlRetention
from capd.store.secrets import key_hint, secret_digest
from capd.store.transitions import (
    BAN_COLS,
    POSTGRES,
    POSTGRES_CALLER_CLOCK,
    SqlTransitions,
    Statements,
    Tx,
    ban_from_row,
)

log = logging.getLogger("capd.store")

CHANNEL = "capd_tasks"
# keys, whitelists and bans changed somewhere: every node drops its read caches at once
INVALIDATE = "capd_invalidate"
CACHE_TTL_S = 2.0  # a safety net under NOTIFY: no cached read outlives this
_MIGRATION_LOCK = 0x63617064  # "capd": one node migrates at a time
# the server is down, restarting, refusing connections or out of resources; the pool
# timed out or lost its connection
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError)


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, _OUTAGES)


class _Conn:
    """One pooled connection inside a transaction (``capd.store.transitions.Tx``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._conn.fetchrow(sql, *args)
        return row

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await self._conn.fetch(sql, *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)


class _Db:
    """The pool as the shared transitions see it (``capd.store.transitions.Db``): a lone
    statement autocommits on any pooled connection; a transaction holds one."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await (await self._store._p()).fetchrow(sql, *args)
        return row

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await (await self._store._p()).fetch(sql, *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await (await self._store._p()).execute(sql, *args)

    async def fetch_long(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        """The server does the work: the event loop only awaits it."""
        return await self.fetch(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        pool = await self._store._p()
        async with pool.acquire() as conn, conn.transaction():
            yield _Conn(conn)

    async def keys_changed(self, tx: Tx) -> None:
        self._store._invalidate()
        await tx.execute("SELECT pg_notify($1, '')", INVALIDATE)

    async def task_queued(self, tx: Tx, task_type: str) -> None:
        await tx.execute("SELECT pg_notify($1, $2)", CHANNEL, task_type)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's RESET ALL round trip: capd keeps no session state on
    pooled connections (LISTEN has its own connection, locks are transaction-scoped), and
    the reset doubled the round trips of every poll (measured in bench/bench_postgres.py)."""


@raises_store_unavailable(_is_outage)
class PostgresStore(SqlTransitions, SqlRetention, SqlOutbox):
    """Store backend on a PostgreSQL database (asyncpg connection pool)."""

    backend = "postgres"
    _sql = Statements(POSTGRES)
    _retention_sql = RetentionStatements(POSTGRES)
    _outbox_sql = OutboxStatements(POSTGRES)

    def __init__(self, url: str, min_connections: int = 1, max_connections: int = 10,
                 database_clock: bool = True) -> None:
        self.url = url
        if not database_clock:  # leases and deadlines by the caller's now (tests)
            self._sql = Statements(POSTGRES_CALLER_CLOCK)
        self._min = min_connections
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        # a finished task never changes what a poll reads: safe to keep on any node
        self._final_tasks = FinalTasks()
        # Key and ban reads are cached only while this node listens for invalidations
        # (a serving node); each entry also expires after CACHE_TTL_S.
        self._caching = False
        self._generation = 0
        self._callers: Bounded[str, tuple[float, Caller | None]] = Bounded()
        self._ban_cache: Bounded[tuple[str, str, int | None], tuple[float, Ban | None]] = (
            Bounded())
        self._tdb = _Db(self)

    async def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            # concurrent first calls share one pool: the lock is taken only until it opens
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.url, min_size=self._min, max_size=self._max,
                        reset=_keep_session, max_inactive_connection_lifetime=0)
        return self._pool

    def _invalidate(self, *_: Any) -> None:
        self._generation += 1  # a read that started before this must not be cached
        self._callers.clear()
        self._ban_cache.clear()

    def _stop_caching(self, *_: Any) -> None:
        self._caching = False
        self._invalidate()

    async def _changed(self, conn: asyncpg.Connection) -> None:
        """Tell every node (this one included) that keys, whitelists or bans changed."""
        await self._tdb.keys_changed(_Conn(conn))

    # -- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version"
                               " (version INTEGER NOT NULL)")
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0)"
                                          " FROM schema_version")
            for version, sql in migration_scripts("postgres"):
                if version > current:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)",
                                       version)
                    current = version
        return int(current)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def subscribe(self, on_task: Callable[[str], None]) -> None:
        """Call ``on_task(type)`` whenever any node queues work (LISTEN/NOTIFY)."""
        if self._listener is None:
            self._listener = await asyncpg.connect(self.url)
            await self._listener.add_listener(INVALIDATE, self._invalidate)
            self._listener.add_termination_listener(self._stop_caching)
            self._caching = True

        def handler(conn: Any, pid: int, channel: str, payload: str) -> None:
            on_task(payload)

        await self._listener.add_listener(CHANNEL, handler)

    # -- accounts and keys -----------------------------------------------------------------
    async def _write(self, sql: str, *args: Any) -> str:
        """One statement that changes keys, whitelists or bans, announced to every node."""
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(sql, *args)
            await self._changed(conn)
        return status

    async def add_key(self, account_id: int, key: str, now: float) -> None:
        await self._write(self._sql.insert_key, secret_digest(key), key_hint(key), account_id,
                          now)

    async def revoke_key_digest(self, digest: str, now: float) -> bool:
        status = await self._write(self._sql.revoke_key, now, digest)
        return bool(status.endswith(" 1"))

    async def caller_for_key_digest(self, digest: str) -> Caller | None:
        if self._caching:
            hit = self._callers.get(digest)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        generation = self._generation
        caller = await self._read_caller(digest)
        if self._caching and generation == self._generation:
            self._callers.put(digest, (time.monotonic() + CACHE_TTL_S, caller))
        return caller

    async def _read_caller(self, digest: str) -> Caller | None:
        row = await (await self._p()).fetchrow(
            "SELECT k.account_id, COALESCE(array_agg(w.network) FILTER"
            " (WHERE w.network IS NOT NULL), '{}') FROM api_keys k"
            " LEFT JOIN whitelist w ON w.account_id = k.account_id"
            " WHERE k.key_hash = $1 AND k.revoked_at IS NULL GROUP BY k.account_id", digest)
        return Caller(row[0], tuple(row[1])) if row else None

    async def whitelist_add(self, account_id: int, network: str) -> bool:
        status = await self._write(
            "INSERT INTO whitelist (account_id, network) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            account_id, network)
        return bool(status.endswith(" 1"))

    async def whitelist_remove(self, account_id: int, network: str) -> bool:
        status = await self._write(
            "DELETE FROM whitelist WHERE account_id = $1 AND network = $2", account_id, network)
        return bool(status.endswith(" 1"))

    # -- money -------------------------------------------------------------------------------
    # -- tasks -------------------------------------------------------------------------------
    # -- limits and bans ---------------------------------------------------------------------
    async def incr_counter(self, name: str, window_s: float, now: float) -> int:
        value = await (await self._p()).fetchval(
            "INSERT INTO counters AS c (name, count, window_end)"
            " VALUES ($1, 1, $2::float8 + $3::float8)"
            " ON CONFLICT (name) DO UPDATE SET"
            "  count = CASE WHEN c.window_end <= $2 THEN 1 ELSE c.count + 1 END,"
            "  window_end = CASE WHEN c.window_end <= $2 THEN $2::float8 + $3::float8"
            "   ELSE c.window_end END"
            " RETURNING count", name, now, window_s)
        return int(value)

    async def incr_counters(self, counters: list[tuple[str, float]], now: float) -> list[int]:
        names = [name for name, _ in counters]
        rows = await (await self._p()).fetch(
            "INSERT INTO counters AS c (name, count, window_end)"
            " SELECT n, 1, $2::float8 + w FROM unnest($1::text[], $3::float8[]) AS t(n, w)"
            " ON CONFLICT (name) DO UPDATE SET"
            "  count = CASE WHEN c.window_end <= $2 THEN 1 ELSE c.count + 1 END,"
            "  window_end = CASE WHEN c.window_end <= $2 THEN excluded.window_end"
            "   ELSE c.window_end END"
            " RETURNING name, count", names, now, [float(w) for _, w in counters])
        counts = {r[0]: int(r[1]) for r in rows}
        return [counts[name] for name in names]

    async def sweep_counters(self, now: float) -> int:
        """Delete counters whose window has ended (called by the deadline sweeper)."""
        status = await (await self._p()).execute(
            "DELETE FROM counters WHERE window_end <= $1", now)
        return int(status.split()[-1])

    async def active_ban(self, scope: str, ip: str, account_id: int | None,
                         now: float) -> Ban | None:
        cache_key = (scope, ip, account_id)
        if self._caching:
            hit = self._ban_cache.get(cache_key)
            if hit is not None and hit[0] > time.monotonic() and (
                    hit[1] is None or hit[1].ends_at > now):
                return hit[1]
        generation = self._generation
        row = await (await self._p()).fetchrow(
            f"SELECT {BAN_COLS} FROM bans WHERE ip = $1 AND scope = $2 AND ends_at > $3"
            f" AND lifted_at IS NULL AND account_id IS NOT DISTINCT FROM $4"
            f" ORDER BY ends_at DESC LIMIT 1", ip, scope, now, account_id)
        ban = ban_from_row(row) if row else None
        if self._caching and generation == self._generation:
            self._ban_cache.put(cache_key, (time.monotonic() + CACHE_TTL_S, ban))
        return ban

    async def extend_ban(self, ban_id: int, ends_at: float) -> None:
        await self._write("UPDATE bans SET ends_at = GREATEST(ends_at, $1) WHERE id = $2",
                          ends_at, ban_id)

    async def bans(self, now: float, active_only: bool = True,
                   account_id: int | None = None) -> list[Ban]:
        sql = f"SELECT {BAN_COLS} FROM bans WHERE TRUE"
        args: list[Any] = []
        if active_only:
            args.append(now)
            sql += f" AND ends_at > ${len(args)} AND lifted_at IS NULL"
        if account_id is not None:
            args.append(account_id)
            sql += f" AND account_id = ${len(args)}"
        rows = await (await self._p()).fetch(sql + " ORDER BY id", *args)
        return [ban_from_row(r) for r in rows]

    async def lift_ban(self, ban_id: int, now: float, by: str) -> bool:
        status = await self._write(
            "UPDATE bans SET lifted_at = $1, lifted_by = $2 WHERE id = $3"
            " AND lifted_at IS NULL", now, by, ban_id)
        return bool(status.endswith(" 1"))

    async def blocklist_add(self, domain: str, now: float) -> bool:
        status = await (await self._p()).execute(
            "INSERT INTO blocklist (domain, added_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            domain, now)
        return bool(status.endswith(" 1"))

    async def blocklist_remove(self, domain: str) -> bool:
        status = await (await self._p()).execute("DELETE FROM blocklist WHERE domain = $1",
                                                 domain)
        return bool(status.endswith(" 1"))

    async def blocklist(self) -> list[str]:
        rows = await (await self._p()).fetch("SELECT domain FROM blocklist ORDER BY domain")
        return [r[0] for r in rows]

    async def blocked_domain(self, host: str) -> str | None:
        labels = host.split(".")
        candidates = [".".join(labels[i:]) for i in range(len(labels))]
        value = await (await self._p()).fetchval(
            "SELECT domain FROM blocklist WHERE domain = ANY($1::text[]) LIMIT 1", candidates)
        return str(value) if value is not None else None

    async def ban_proxy(self, address: str, port: int, until: float) -> None:
        await (await self._p()).execute(
            "INSERT INTO proxy_bans (address, port, until) VALUES ($1, $2, $3)"
            " ON CONFLICT (address, port) DO UPDATE SET"
            " until = GREATEST(proxy_bans.until, excluded.until)", address.lower(), port, until)

    async def proxy_banned(self, address: str, port: int, now: float) -> bool:
        value = await (await self._p()).fetchval(
            "SELECT 1 FROM proxy_bans WHERE address = $1 AND port = $2 AND until > $3",
            address.lower(), port, now)
        return value is not None

    # -- workers -----------------------------------------------------------------------------
    async def create_worker_token(self, token_hash: str, name: str,
                                  types: tuple[str, ...] | None, now: float) -> int:
        value = await (await self._p()).fetchval(
            "INSERT INTO worker_tokens (token_hash, name, types, created_at)"
            " VALUES ($1, $2, $3, $4) RETURNING id", token_hash, name,
            orjson.dumps(list(types)).decode() if types else None, now)
        return int(value)

    async def revoke_worker_token(self, token_hash: str, now: float) -> bool:
        status = await (await self._p()).execute(
            "UPDATE worker_tokens SET revoked_at = $1 WHERE token_hash = $2"
            " AND revoked_at IS NULL", now, token_hash)
        return bool(status.endswith(" 1"))

    async def worker_token(self, token_hash: str) -> WorkerToken | None:
        row = await (await self._p()).fetchrow(
            "SELECT id, name, types, created_at FROM worker_tokens"
            " WHERE token_hash = $1 AND revoked_at IS NULL", token_hash)
        if row is None:
            return None
        return WorkerToken(row[0], row[1], tuple(orjson.loads(row[2])) if row[2] else None,
                           row[3])

    async def note_workers(self, types: list[str], now: float,
                           claimer: Claimer = Claimer.EXTERNAL) -> None:
        # external_seen_at: GREATEST ignores NULLs, so a reader's NULL keeps the old time
        external = now if claimer == Claimer.EXTERNAL else None
        await (await self._p()).execute(
            "INSERT INTO worker_seen (type, seen_at, external_seen_at)"
            " SELECT unnest($1::text[]), $2, $3::double precision"
            " ON CONFLICT (type) DO UPDATE SET"
            " seen_at = GREATEST(worker_seen.seen_at, excluded.seen_at),"
            " external_seen_at = GREATEST(worker_seen.external_seen_at,"
            " excluded.external_seen_at)", types, now, external)

    async def worker_seen_since(self, task_type: str, since: float, *,
                                external: bool = False) -> bool:
        column = "external_seen_at" if external else "seen_at"
        value = await (await self._p()).fetchval(
            f"SELECT 1 FROM worker_seen WHERE type = $1 AND {column} >= $2", task_type, since)
        return value is not None

    async def _workers_seen(self) -> dict[str, float]:
        rows = await (await self._p()).fetch("SELECT type, seen_at FROM worker_seen")
        return {r[0]: float(r[1]) for r in rows}

    # -- retention ---------------------------------------------------------------------------
    async def reclaim_space(self) -> int:
        """A plain VACUUM of the pruned tables: their dead rows become reusable space (it
        takes no lock that blocks reads or writes); the files rarely shrink, so 0."""
        await (await self._p()).execute("VACUUM tasks, callbacks_outbox")
        return 0

    # -- operator views ----------------------------------------------------------------------
    async def stats(self, now: float) -> dict[str, Any]:
        pool = await self._p()
        by_state = [{"type": r[0], "state": r[1], "count": r[2]} for r in await pool.fetch(
            "SELECT type, state, COUNT(*) FROM tasks GROUP BY type, state ORDER BY type, state")]
        latencies = [r[0] for r in await pool.fetch(
            "SELECT ended_at - created_at FROM tasks WHERE state = 'solved'"
            " ORDER BY ended_at DESC LIMIT 10000")]
        charges = await pool.fetchrow("SELECT COUNT(*), COALESCE(-SUM(amount_units), 0)"
                                      " FROM ledger WHERE kind = 'charge'")
        refunds = await pool.fetchrow("SELECT COUNT(*), COALESCE(SUM(amount_units), 0)"
                                      " FROM ledger WHERE kind = 'refund'")
        return {"tasks": by_state, "solve_latencies_s": latencies,
                "charges": {"count": charges[0], "units": int(charges[1])},
                "refunds": {"count": refunds[0], "units": int(refunds[1])}}

    async def meta_get(self, name: str) -> str | None:
        value = await (await self._p()).fetchval("SELECT value FROM meta WHERE name = $1", name)
        return str(value) if value is not None else None

    async def meta_set(self, name: str, value: str) -> None:
        await (await self._p()).execute(
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name)"
            " DO UPDATE SET value = excluded.value", name, value)
