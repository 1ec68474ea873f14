"""The scale-out backend: one PostgreSQL database shared by several API and worker nodes.

Every primitive is one statement or one transaction, so the guarantees hold across
processes: reservations are conditional updates, the queue hands each task to one
claimer (``FOR UPDATE SKIP LOCKED``), completion happens once (row lock + state check),
and counters and bans live in shared tables. New work is announced with NOTIFY so that
idle pollers on every node wake at once instead of polling the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from capd.domain.money import MAX_UNITS
from capd.errors import InsufficientFunds
from capd.store.base import (
    Account,
    AdminToken,
    Ban,
    Caller,
    ConsoleSession,
    KeyRecord,
    LedgerEntry,
    NewTask,
    Task,
    TaskState,
    UsageRow,
    WorkerActivity,
    WorkerToken,
    usage_rows,
)
from capd.store.migrations import migration_scripts

log = logging.getLogger("capd.store")

CHANNEL = "capd_tasks"
# keys, whitelists and bans changed somewhere: every node drops its read caches at once
INVALIDATE = "capd_invalidate"
CACHE_TTL_S = 2.0  # a safety net under NOTIFY: no cached read outlives this
_CACHE_LIMIT = 50_000
_MIGRATION_LOCK = 0x63617064  # "capd": one node migrates at a time
_TASK_COLS = (
    "id, account_id, type, payload, options, state, price_units, reserved_units, created_at,"
    " deadline_at, lease_until, lease_owner, attempts, ended_at, solution, error_code,"
    " cost_units, client_ip, callback_url, reported_at"
)
_TASK_COLS_LIGHT = _TASK_COLS.replace("payload,", "'{}' AS payload,")
_BAN_COLS = "id, scope, ip, account_id, reason, started_at, ends_at, lifted_at"
_FINAL_CACHE_LIMIT = 50_000


def _task(row: Any) -> Task:
    return Task(
        id=row[0], account_id=row[1], type=row[2], payload=orjson.loads(row[3]),
        options=orjson.loads(row[4]), state=TaskState(row[5]), price_units=row[6],
        reserved_units=row[7], created_at=row[8], deadline_at=row[9], lease_until=row[10],
        lease_owner=row[11], attempts=row[12], ended_at=row[13],
        solution=orjson.loads(row[14]) if row[14] is not None else None,
        error_code=row[15], cost_units=row[16], client_ip=row[17], callback_url=row[18],
        reported_at=row[19],
    )


def _ban(row: Any) -> Ban:
    return Ban(*row)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's RESET ALL round trip: capd keeps no session state on
    pooled connections (LISTEN has its own connection, locks are transaction-scoped), and
    the reset doubled the round trips of every poll (measured in bench/bench_postgres.py)."""


class PostgresStore:
    """Store backend on a PostgreSQL database (asyncpg connection pool)."""

    backend = "postgres"

    def __init__(self, url: str, min_connections: int = 1, max_connections: int = 10) -> None:
        self.url = url
        self._min = min_connections
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        # a finished task never changes what a poll reads: safe to keep on any node
        self._final_tasks: dict[int, Task] = {}
        # Key and ban reads are cached only while this node listens for invalidations
        # (a serving node); each entry also expires after CACHE_TTL_S.
        self._caching = False
        self._generation = 0
        self._callers: dict[str, tuple[float, Caller | None]] = {}
        self._ban_cache: dict[tuple[str, str, int | None], tuple[float, Ban | None]] = {}

    async def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self._min, max_size=self._max, reset=_keep_session,
                max_inactive_connection_lifetime=0)
        return self._pool

    def _invalidate(self, *_: Any) -> None:
        self._generation += 1  # a read that started before this must not be cached
        self._callers.clear()
        self._ban_cache.clear()

    def _stop_caching(self, *_: Any) -> None:
        self._caching = False
        self._invalidate()

    async def _changed(self, conn: Any) -> None:
        """Tell every node (this one included) that keys, whitelists or bans changed."""
        self._invalidate()
        await conn.execute("SELECT pg_notify($1, '')", INVALIDATE)

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
    async def create_account(self, name: str, key: str, now: float, *, opening_units: int = 0,
                             actor: str = "operator", note: str = "") -> int:
        if not 0 <= opening_units <= MAX_UNITS:
            raise ValueError("opening balance outside the supported range")
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            account_id = await conn.fetchval(
                "INSERT INTO accounts (name, balance_units, created_at) VALUES ($1, $2, $3)"
                " RETURNING id", name, opening_units, now)
            await conn.execute("INSERT INTO api_keys (key, account_id, created_at)"
                               " VALUES ($1, $2, $3)", key, account_id, now)
            if opening_units:
                await conn.execute(
                    "INSERT INTO ledger (account_id, at, kind, amount_units, actor, note)"
                    " VALUES ($1, $2, 'topup', $3, $4, $5)", account_id, now, opening_units,
                    actor, note)
            await self._changed(conn)
        return int(account_id)

    async def find_accounts(self, query: str, limit: int = 50) -> list[Account]:
        text = query.strip()
        if not text or limit <= 0:
            return []
        by_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else -1
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await (await self._p()).fetch(
            "SELECT id, name, balance_units, reserved_units, created_at FROM accounts"
            " WHERE id = $1 OR name ILIKE $2 ESCAPE '\\'"
            " OR id IN (SELECT account_id FROM api_keys WHERE key = $3)"
            " ORDER BY id LIMIT $4", by_id, pattern, text, limit)
        return [Account(*r) for r in rows]

    async def _write(self, sql: str, *args: Any) -> str:
        """One statement that changes keys, whitelists or bans, announced to every node."""
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            status: str = await conn.execute(sql, *args)
            await self._changed(conn)
        return status

    async def add_key(self, account_id: int, key: str, now: float) -> None:
        await self._write("INSERT INTO api_keys (key, account_id, created_at)"
                          " VALUES ($1, $2, $3)", key, account_id, now)

    async def revoke_key(self, key: str, now: float) -> bool:
        status = await self._write(
            "UPDATE api_keys SET revoked_at = $1 WHERE key = $2 AND revoked_at IS NULL",
            now, key)
        return bool(status.endswith(" 1"))

    async def caller_for_key(self, key: str) -> Caller | None:
        if self._caching:
            hit = self._callers.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        generation = self._generation
        caller = await self._read_caller(key)
        if self._caching and generation == self._generation:
            if len(self._callers) >= _CACHE_LIMIT:
                self._callers.clear()
            self._callers[key] = (time.monotonic() + CACHE_TTL_S, caller)
        return caller

    async def _read_caller(self, key: str) -> Caller | None:
        row = await (await self._p()).fetchrow(
            "SELECT k.account_id, COALESCE(array_agg(w.network) FILTER"
            " (WHERE w.network IS NOT NULL), '{}') FROM api_keys k"
            " LEFT JOIN whitelist w ON w.account_id = k.account_id"
            " WHERE k.key = $1 AND k.revoked_at IS NULL GROUP BY k.account_id", key)
        return Caller(row[0], tuple(row[1])) if row else None

    async def account(self, account_id: int) -> Account | None:
        row = await (await self._p()).fetchrow(
            "SELECT id, name, balance_units, reserved_units, created_at FROM accounts"
            " WHERE id = $1", account_id)
        return Account(*row) if row else None

    async def account_for_key(self, key: str) -> Account | None:
        row = await (await self._p()).fetchrow(
            "SELECT a.id, a.name, a.balance_units, a.reserved_units, a.created_at"
            " FROM accounts a JOIN api_keys k ON k.account_id = a.id WHERE k.key = $1", key)
        return Account(*row) if row else None

    async def keys(self, account_id: int) -> list[KeyRecord]:
        rows = await (await self._p()).fetch(
            "SELECT key, account_id, created_at, revoked_at FROM api_keys"
            " WHERE account_id = $1 ORDER BY created_at, key", account_id)
        return [KeyRecord(*r) for r in rows]

    async def whitelist(self, account_id: int) -> list[str]:
        rows = await (await self._p()).fetch(
            "SELECT network FROM whitelist WHERE account_id = $1 ORDER BY network", account_id)
        return [r[0] for r in rows]

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
    async def adjust_balance(self, account_id: int, amount_units: int, kind: str, actor: str,
                             note: str, now: float) -> int:
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT balance_units, reserved_units FROM accounts"
                                      " WHERE id = $1 FOR UPDATE", account_id)
            if row is None:
                raise KeyError(account_id)
            if row[0] + amount_units < row[1]:
                raise InsufficientFunds()
            if row[0] + amount_units > MAX_UNITS:
                raise ValueError("balance would leave the supported range")
            await conn.execute(
                "INSERT INTO ledger (account_id, at, kind, amount_units, actor, note)"
                " VALUES ($1, $2, $3, $4, $5, $6)", account_id, now, kind, amount_units, actor,
                note)
            await conn.execute("UPDATE accounts SET balance_units = balance_units + $1"
                               " WHERE id = $2", amount_units, account_id)
        return int(row[0] + amount_units)

    async def ledger(self, account_id: int, limit: int = 20) -> list[LedgerEntry]:
        rows = await (await self._p()).fetch(
            "SELECT id, account_id, at, kind, amount_units, task_id, actor, note FROM ledger"
            " WHERE account_id = $1 ORDER BY id DESC LIMIT $2", account_id, limit)
        return [LedgerEntry(*r) for r in rows]

    async def ledger_sum(self, account_id: int) -> int:
        value = await (await self._p()).fetchval(
            "SELECT COALESCE(SUM(amount_units), 0) FROM ledger WHERE account_id = $1",
            account_id)
        return int(value)

    # -- tasks -------------------------------------------------------------------------------
    async def create_task(self, task: NewTask, new_id: Callable[[], int]) -> int:
        payload = orjson.dumps(task.payload).decode()
        options = orjson.dumps(task.options).decode()
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            reserved = await conn.fetchval(
                "UPDATE accounts SET reserved_units = reserved_units + $1"
                " WHERE id = $2 AND balance_units - reserved_units >= $1 RETURNING id",
                task.price_units, task.account_id)
            if reserved is None:
                raise InsufficientFunds()
            for _ in range(20):
                task_id = new_id()
                inserted = await conn.fetchval(
                    "INSERT INTO tasks (id, account_id, type, payload, options, state,"
                    " price_units, reserved_units, created_at, deadline_at, client_ip,"
                    " callback_url) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6, $7, $8, $9,"
                    " $10) ON CONFLICT (id) DO NOTHING RETURNING id",
                    task_id, task.account_id, task.type, payload, options, task.price_units,
                    task.created_at, task.deadline_at, task.client_ip, task.callback_url)
                if inserted is not None:
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, task.type)
                    return int(inserted)
            raise RuntimeError("could not draw an unused task id")

    async def get_task(self, task_id: int, with_payload: bool = True) -> Task | None:
        if not with_payload:
            final = self._final_tasks.get(task_id)
            if final is not None:
                return final
        cols = _TASK_COLS if with_payload else _TASK_COLS_LIGHT
        row = await (await self._p()).fetchrow(f"SELECT {cols} FROM tasks WHERE id = $1",
                                               task_id)
        if row is None:
            return None
        task = _task(row)
        if not with_payload and task.state in (TaskState.SOLVED, TaskState.FAILED):
            if len(self._final_tasks) >= _FINAL_CACHE_LIMIT:
                self._final_tasks.clear()
            self._final_tasks[task_id] = task
        return task

    async def claim_tasks(self, types: list[str], limit: int, owner: str, lease_s: float,
                          now: float) -> list[Task]:
        if not types or limit <= 0:
            return []
        rows = await (await self._p()).fetch(
            f"UPDATE tasks SET state = 'leased', lease_until = $1, lease_owner = $2,"
            f" attempts = attempts + 1 WHERE id IN ("
            f"  SELECT id FROM tasks WHERE type = ANY($3::text[])"
            f"   AND state IN ('queued', 'leased')"
            f"   AND (state = 'queued' OR lease_until <= $4) AND deadline_at > $4"
            f"  ORDER BY created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING {_TASK_COLS}",
            now + lease_s, owner, types, now, limit)
        return sorted((_task(r) for r in rows), key=lambda t: (t.created_at, t.id))

    async def finish_task(self, task_id: int, now: float, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None) -> Task | None:
        if (solution is None) == (error_code is None):
            raise ValueError("finish_task needs exactly one of solution and error_code")
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT state, account_id, reserved_units, price_units, lease_owner, lease_until"
                " FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            if row is None or row[0] not in ("queued", "leased"):
                return None
            state, account_id, reserved, price, lease_owner, lease_until = row
            if owner is not None and (state != "leased" or lease_owner != owner
                                      or lease_until is None or lease_until <= now):
                return None
            charge = price if solution is not None else 0
            done = await conn.fetchrow(
                f"UPDATE tasks SET state = $1, ended_at = $2, solution = $3, error_code = $4,"
                f" cost_units = $5, reserved_units = 0, lease_until = NULL WHERE id = $6"
                f" RETURNING {_TASK_COLS}",
                "solved" if solution is not None else "failed", now,
                orjson.dumps(solution).decode() if solution is not None else None,
                error_code, charge, task_id)
            await conn.execute("UPDATE accounts SET reserved_units = reserved_units - $1,"
                               " balance_units = balance_units - $2 WHERE id = $3",
                               reserved, charge, account_id)
            if charge:
                await conn.execute(
                    "INSERT INTO ledger (account_id, at, kind, amount_units, task_id, actor,"
                    " note) VALUES ($1, $2, 'charge', $3, $4, 'capd', 'task solved')",
                    account_id, now, -charge, task_id)
        return _task(done)

    async def extend_lease(self, task_id: int, owner: str, until: float,
                           now: float) -> float | None:
        value = await (await self._p()).fetchval(
            "UPDATE tasks SET lease_until = LEAST($1, deadline_at) WHERE id = $2"
            " AND state = 'leased' AND lease_owner = $3 AND lease_until > $4"
            " RETURNING lease_until", until, task_id, owner, now)
        return float(value) if value is not None else None

    async def overdue_tasks(self, now: float, limit: int = 100) -> list[Task]:
        rows = await (await self._p()).fetch(
            f"SELECT {_TASK_COLS} FROM tasks WHERE state IN ('queued', 'leased')"
            f" AND deadline_at <= $1 ORDER BY deadline_at LIMIT $2", now, limit)
        return [_task(r) for r in rows]

    async def report_task(self, task_id: int, account_id: int, refund: bool, now: float,
                          window_s: float) -> bool:
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            cost = await conn.fetchval(
                "UPDATE tasks SET reported_at = $1 WHERE id = $2 AND account_id = $3"
                " AND state = 'solved' AND reported_at IS NULL AND ended_at >= $4"
                " RETURNING cost_units", now, task_id, account_id, now - window_s)
            if cost is None:
                return False
            if refund and cost > 0:
                await conn.execute(
                    "INSERT INTO ledger (account_id, at, kind, amount_units, task_id, actor,"
                    " note) VALUES ($1, $2, 'refund', $3, $4, 'capd', 'reported incorrect')",
                    account_id, now, cost, task_id)
                await conn.execute("UPDATE accounts SET balance_units = balance_units + $1"
                                   " WHERE id = $2", cost, account_id)
        return True

    async def queue_depth(self, task_type: str) -> int:
        value = await (await self._p()).fetchval(
            "SELECT COUNT(*) FROM tasks WHERE type = $1 AND state = 'queued'", task_type)
        return int(value)

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

    async def add_ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                      now: float, ends_at: float) -> int:
        pool = await self._p()
        async with pool.acquire() as conn, conn.transaction():
            value = await conn.fetchval(
                "INSERT INTO bans (scope, ip, account_id, reason, started_at, ends_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                scope, ip, account_id, reason, now, ends_at)
            await self._changed(conn)
        return int(value)

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
            f"SELECT {_BAN_COLS} FROM bans WHERE ip = $1 AND scope = $2 AND ends_at > $3"
            f" AND lifted_at IS NULL AND account_id IS NOT DISTINCT FROM $4"
            f" ORDER BY ends_at DESC LIMIT 1", ip, scope, now, account_id)
        ban = _ban(row) if row else None
        if self._caching and generation == self._generation:
            if len(self._ban_cache) >= _CACHE_LIMIT:
                self._ban_cache.clear()
            self._ban_cache[cache_key] = (time.monotonic() + CACHE_TTL_S, ban)
        return ban

    async def extend_ban(self, ban_id: int, ends_at: float) -> None:
        await self._write("UPDATE bans SET ends_at = GREATEST(ends_at, $1) WHERE id = $2",
                          ends_at, ban_id)

    async def bans(self, now: float, active_only: bool = True,
                   account_id: int | None = None) -> list[Ban]:
        sql = f"SELECT {_BAN_COLS} FROM bans WHERE TRUE"
        args: list[Any] = []
        if active_only:
            args.append(now)
            sql += f" AND ends_at > ${len(args)} AND lifted_at IS NULL"
        if account_id is not None:
            args.append(account_id)
            sql += f" AND account_id = ${len(args)}"
        rows = await (await self._p()).fetch(sql + " ORDER BY id", *args)
        return [_ban(r) for r in rows]

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

    async def note_workers(self, types: list[str], now: float) -> None:
        await (await self._p()).execute(
            "INSERT INTO worker_seen (type, seen_at) SELECT unnest($1::text[]), $2"
            " ON CONFLICT (type) DO UPDATE SET"
            " seen_at = GREATEST(worker_seen.seen_at, excluded.seen_at)", types, now)

    async def worker_seen_since(self, task_type: str, since: float) -> bool:
        value = await (await self._p()).fetchval(
            "SELECT 1 FROM worker_seen WHERE type = $1 AND seen_at >= $2", task_type, since)
        return value is not None

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

    # -- console (web dashboard): admin tokens, sessions, read-only views -----------------
    async def create_admin_token(self, token_hash: str, name: str, now: float) -> int:
        value = await (await self._p()).fetchval(
            "INSERT INTO admin_tokens (token_hash, name, created_at) VALUES ($1, $2, $3)"
            " RETURNING id", token_hash, name, now)
        return int(value)

    async def revoke_admin_token(self, token_hash: str, now: float) -> bool:
        status = await (await self._p()).execute(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE token_hash = $2"
            " AND revoked_at IS NULL", now, token_hash)
        return bool(status.endswith(" 1"))

    async def admin_token(self, token_hash: str) -> AdminToken | None:
        row = await (await self._p()).fetchrow(
            "SELECT id, name, created_at FROM admin_tokens WHERE token_hash = $1"
            " AND revoked_at IS NULL", token_hash)
        return AdminToken(*row) if row else None

    async def create_console_session(self, session: ConsoleSession) -> None:
        s = session
        await (await self._p()).execute(
            "INSERT INTO console_sessions (token_hash, kind, account_id, api_key,"
            " admin_token_hash, csrf, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", s.token_hash, s.kind, s.account_id,
            s.api_key, s.admin_token_hash, s.csrf, s.created_at, s.expires_at)

    async def console_session(self, token_hash: str, now: float) -> ConsoleSession | None:
        row = await (await self._p()).fetchrow(
            "SELECT token_hash, kind, account_id, api_key, admin_token_hash, csrf, created_at,"
            " expires_at FROM console_sessions WHERE token_hash = $1 AND expires_at > $2",
            token_hash, now)
        return ConsoleSession(*row) if row else None

    async def set_console_session_key(self, token_hash: str, api_key: str) -> None:
        await (await self._p()).execute(
            "UPDATE console_sessions SET api_key = $1 WHERE token_hash = $2", api_key,
            token_hash)

    async def delete_console_session(self, token_hash: str) -> None:
        await (await self._p()).execute("DELETE FROM console_sessions WHERE token_hash = $1",
                                        token_hash)

    async def sweep_console_sessions(self, now: float) -> int:
        status = await (await self._p()).execute(
            "DELETE FROM console_sessions WHERE expires_at <= $1", now)
        return int(status.split()[-1])

    async def usage(self, account_id: int | None, since: float, until: float, bucket_s: float,
                    ip: str | None = None) -> list[UsageRow]:
        args: list[Any] = [float(bucket_s), since, until]
        where = ""
        if account_id is not None:
            args.append(account_id)
            where += f" AND t.account_id = ${len(args)}"
        if ip is not None:
            args.append(ip)
            where += f" AND t.client_ip = ${len(args)}"
        # the refund lookup runs only for reported tasks (few), inside the CASE
        rows = await (await self._p()).fetch(
            f"SELECT floor(t.created_at / $1) * $1, t.type, COUNT(*),"
            f" COUNT(*) FILTER (WHERE t.state = 'solved'),"
            f" COUNT(*) FILTER (WHERE t.state = 'failed'), SUM(t.cost_units) - COALESCE("
            f"SUM(CASE WHEN t.reported_at IS NOT NULL THEN (SELECT l.amount_units FROM ledger l"
            f" WHERE l.task_id = t.id AND l.kind = 'refund') END), 0) FROM tasks t"
            f" WHERE t.created_at >= $2 AND t.created_at < $3{where} GROUP BY 1, 2", *args)
        return usage_rows(tuple(r) for r in rows)

    async def solve_durations(self, account_id: int | None, since: float,
                              limit: int = 10_000) -> list[tuple[str, float]]:
        sql = ("SELECT type, ended_at - created_at FROM tasks WHERE state = 'solved'"
               " AND ended_at >= $1")
        args: list[Any] = [since]
        if account_id is not None:
            args.append(account_id)
            sql += f" AND account_id = ${len(args)}"
        args.append(limit)
        rows = await (await self._p()).fetch(
            sql + f" ORDER BY ended_at DESC LIMIT ${len(args)}", *args)
        return [(r[0], float(r[1])) for r in rows]

    async def recent_tasks(self, account_id: int, limit: int = 50) -> list[Task]:
        rows = await (await self._p()).fetch(
            f"SELECT {_TASK_COLS_LIGHT} FROM tasks WHERE account_id = $1"
            f" ORDER BY created_at DESC, id DESC LIMIT $2", account_id, limit)
        return [_task(r) for r in rows]

    async def workers_online(self, now: float) -> list[WorkerActivity]:
        pool = await self._p()
        leases = {r[0]: (int(r[1]), int(r[2])) for r in await pool.fetch(
            "SELECT type, COUNT(*), COUNT(*) FILTER (WHERE lease_owner LIKE 'builtin-%')"
            " FROM tasks WHERE state = 'leased' AND lease_until > $1 GROUP BY type", now)}
        seen = {r[0]: float(r[1]) for r in await pool.fetch(
            "SELECT type, seen_at FROM worker_seen")}
        return [WorkerActivity(t, seen.get(t), *leases.get(t, (0, 0)))
                for t in sorted(set(leases) | set(seen))]

    async def open_tasks(self) -> dict[str, tuple[int, int]]:
        rows = await (await self._p()).fetch(
            "SELECT type, COUNT(*) FILTER (WHERE state = 'queued'),"
            " COUNT(*) FILTER (WHERE state = 'leased') FROM tasks"
            " WHERE state IN ('queued', 'leased') GROUP BY type")
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}
