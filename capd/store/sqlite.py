"""The embedded backend: one SQLite file in WAL mode.

Statements run synchronously on the caller's thread (the event loop): each is a few
microseconds against a local file, far less than a hop to a thread pool would cost, and
running them on one thread serialises the server's transactions for free. Other
processes (the CLI) share the file through SQLite's own locking with a busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
from capd.store.counters import MemoryCounters
from capd.store.migrations import migration_scripts

_TASK_COLS = (
    "id, account_id, type, payload, options, state, price_units, reserved_units, created_at,"
    " deadline_at, lease_until, lease_owner, attempts, ended_at, solution, error_code,"
    " cost_units, client_ip, callback_url, reported_at"
)
# the poll path reads a task without its payload (an image can be 70 KB of base64)
_TASK_COLS_LIGHT = _TASK_COLS.replace("payload,", "'{}',")
_CACHE_LIMIT = 50_000
_BAN_COLS = "id, scope, ip, account_id, reason, started_at, ends_at, lifted_at"


def _task(row: tuple[Any, ...]) -> Task:
    return Task(
        id=row[0], account_id=row[1], type=row[2], payload=orjson.loads(row[3]),
        options=orjson.loads(row[4]), state=TaskState(row[5]), price_units=row[6],
        reserved_units=row[7], created_at=row[8], deadline_at=row[9], lease_until=row[10],
        lease_owner=row[11], attempts=row[12], ended_at=row[13],
        solution=orjson.loads(row[14]) if row[14] is not None else None,
        error_code=row[15], cost_units=row[16], client_ip=row[17], callback_url=row[18],
        reported_at=row[19],
    )


def _ban(row: tuple[Any, ...]) -> Ban:
    return Ban(*row)


class SQLiteStore:
    """Store backend on one SQLite database file."""

    backend = "sqlite"

    def __init__(self, path: str, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._reader: sqlite3.Connection | None = None  # the console's long reads
        self._reader_lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_ms / 1000)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only a power cut
        # may lose the last transactions, never corrupt the file.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._counters = MemoryCounters()
        # Read caches for the poll path: keys, bans and finished tasks. Our own writes clear
        # them; PRAGMA data_version tells us (in ~2 us) when another connection, such as
        # the CLI revoking a key or lifting a ban, has committed.
        self._data_version = -1
        self._callers: dict[str, Caller | None] = {}
        self._ban_cache: dict[tuple[str, str, int | None], Ban | None] = {}
        self._final_tasks: dict[int, Task] = {}
        self._worker_tokens: dict[str, WorkerToken | None] = {}
        # last time a worker asked for each type; one serving process in SQLite mode
        self._worker_seen: dict[str, float] = {}

    def _fresh(self) -> None:
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._invalidate()

    def _invalidate(self) -> None:
        self._callers.clear()
        self._ban_cache.clear()
        self._worker_tokens.clear()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self._db.execute(sql, args).fetchone()

    # -- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self._one("SELECT MAX(version) FROM schema_version")
        current = row[0] or 0
        for version, sql in migration_scripts("sqlite"):
            if version <= current:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                if (self._one("SELECT MAX(version) FROM schema_version")[0] or 0) >= version:
                    db.execute("ROLLBACK")
                    continue
                for statement in sql.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            current = version
        return current

    async def close(self) -> None:
        self._db.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    async def subscribe(self, on_task: Callable[[str], None]) -> None:
        """One serving process: the dispatcher hears of new work directly."""

    # -- accounts and keys -----------------------------------------------------------------
    async def create_account(self, name: str, key: str, now: float, *, opening_units: int = 0,
                             actor: str = "operator", note: str = "") -> int:
        if not 0 <= opening_units <= MAX_UNITS:
            raise ValueError("opening balance outside the supported range")
        self._invalidate()
        with self._tx() as db:
            cur = db.execute("INSERT INTO accounts (name, balance_units, created_at)"
                             " VALUES (?, ?, ?)", (name, opening_units, now))
            account_id = int(cur.lastrowid or 0)
            db.execute("INSERT INTO api_keys (key, account_id, created_at) VALUES (?, ?, ?)",
                       (key, account_id, now))
            if opening_units:
                db.execute("INSERT INTO ledger (account_id, at, kind, amount_units, actor, note)"
                           " VALUES (?, ?, 'topup', ?, ?, ?)",
                           (account_id, now, opening_units, actor, note))
        return account_id

    async def find_accounts(self, query: str, limit: int = 50) -> list[Account]:
        text = query.strip()
        if not text or limit <= 0:
            return []
        by_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else -1
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT id, name, balance_units, reserved_units, created_at FROM accounts"
            " WHERE id = ? OR name LIKE ? ESCAPE '\\'"
            " OR id IN (SELECT account_id FROM api_keys WHERE key = ?)"
            " ORDER BY id LIMIT ?", (by_id, pattern, text, limit))
        return [Account(*r) for r in rows]

    async def add_key(self, account_id: int, key: str, now: float) -> None:
        self._invalidate()
        self._db.execute("INSERT INTO api_keys (key, account_id, created_at) VALUES (?, ?, ?)",
                         (key, account_id, now))

    async def revoke_key(self, key: str, now: float) -> bool:
        self._invalidate()
        cur = self._db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE key = ? AND revoked_at IS NULL", (now, key))
        return cur.rowcount == 1

    async def caller_for_key(self, key: str) -> Caller | None:
        self._fresh()
        if key in self._callers:
            return self._callers[key]
        row = self._one("SELECT account_id FROM api_keys WHERE key = ? AND revoked_at IS NULL",
                        (key,))
        caller = None
        if row is not None:
            nets = self._db.execute("SELECT network FROM whitelist WHERE account_id = ?",
                                    (row[0],)).fetchall()
            caller = Caller(row[0], tuple(n[0] for n in nets))
        if len(self._callers) >= _CACHE_LIMIT:
            self._callers.clear()  # an unknown-key storm must not grow memory
        self._callers[key] = caller
        return caller

    async def account(self, account_id: int) -> Account | None:
        row = self._one("SELECT id, name, balance_units, reserved_units, created_at"
                        " FROM accounts WHERE id = ?", (account_id,))
        return Account(*row) if row else None

    async def account_for_key(self, key: str) -> Account | None:
        row = self._one("SELECT account_id FROM api_keys WHERE key = ?", (key,))
        return await self.account(row[0]) if row else None

    async def keys(self, account_id: int) -> list[KeyRecord]:
        rows = self._db.execute("SELECT key, account_id, created_at, revoked_at FROM api_keys"
                                " WHERE account_id = ? ORDER BY created_at", (account_id,))
        return [KeyRecord(*r) for r in rows]

    async def whitelist(self, account_id: int) -> list[str]:
        rows = self._db.execute("SELECT network FROM whitelist WHERE account_id = ?"
                                " ORDER BY network", (account_id,))
        return [r[0] for r in rows]

    async def whitelist_add(self, account_id: int, network: str) -> bool:
        self._invalidate()
        cur = self._db.execute("INSERT OR IGNORE INTO whitelist (account_id, network)"
                               " VALUES (?, ?)", (account_id, network))
        return cur.rowcount == 1

    async def whitelist_remove(self, account_id: int, network: str) -> bool:
        self._invalidate()
        cur = self._db.execute("DELETE FROM whitelist WHERE account_id = ? AND network = ?",
                               (account_id, network))
        return cur.rowcount == 1

    # -- money -------------------------------------------------------------------------------
    async def adjust_balance(self, account_id: int, amount_units: int, kind: str, actor: str,
                             note: str, now: float) -> int:
        with self._tx() as db:
            row = db.execute("SELECT balance_units, reserved_units FROM accounts WHERE id = ?",
                             (account_id,)).fetchone()
            if row is None:
                raise KeyError(account_id)
            if row[0] + amount_units < row[1]:
                raise InsufficientFunds()
            if row[0] + amount_units > MAX_UNITS:
                raise ValueError("balance would leave the supported range")
            db.execute("INSERT INTO ledger (account_id, at, kind, amount_units, actor, note)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (account_id, now, kind, amount_units, actor, note))
            db.execute("UPDATE accounts SET balance_units = balance_units + ? WHERE id = ?",
                       (amount_units, account_id))
        return int(row[0] + amount_units)

    async def ledger(self, account_id: int, limit: int = 20) -> list[LedgerEntry]:
        rows = self._db.execute(
            "SELECT id, account_id, at, kind, amount_units, task_id, actor, note FROM ledger"
            " WHERE account_id = ? ORDER BY id DESC LIMIT ?", (account_id, limit))
        return [LedgerEntry(*r) for r in rows]

    async def ledger_sum(self, account_id: int) -> int:
        row = self._one("SELECT COALESCE(SUM(amount_units), 0) FROM ledger WHERE account_id = ?",
                        (account_id,))
        return int(row[0])

    # -- tasks -------------------------------------------------------------------------------
    async def create_task(self, task: NewTask, new_id: Callable[[], int]) -> int:
        payload = orjson.dumps(task.payload).decode()
        options = orjson.dumps(task.options).decode()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE accounts SET reserved_units = reserved_units + ?"
                " WHERE id = ? AND balance_units - reserved_units >= ?",
                (task.price_units, task.account_id, task.price_units))
            if cur.rowcount != 1:
                raise InsufficientFunds()
            for _ in range(20):
                task_id = new_id()
                try:
                    db.execute(
                        "INSERT INTO tasks (id, account_id, type, payload, options, state,"
                        " price_units, reserved_units, created_at, deadline_at, client_ip,"
                        " callback_url) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                        (task_id, task.account_id, task.type, payload, options,
                         task.price_units, task.price_units, task.created_at, task.deadline_at,
                         task.client_ip, task.callback_url))
                    return task_id
                except sqlite3.IntegrityError:
                    continue
            raise RuntimeError("could not draw an unused task id")

    async def get_task(self, task_id: int, with_payload: bool = True) -> Task | None:
        if not with_payload:
            # a finished task never changes what a poll reads, so it can be kept
            final = self._final_tasks.get(task_id)
            if final is not None:
                return final
        cols = _TASK_COLS if with_payload else _TASK_COLS_LIGHT
        row = self._one(f"SELECT {cols} FROM tasks WHERE id = ?", (task_id,))
        if row is None:
            return None
        task = _task(row)
        if not with_payload and task.state in (TaskState.SOLVED, TaskState.FAILED):
            if len(self._final_tasks) >= _CACHE_LIMIT:
                self._final_tasks.clear()
            self._final_tasks[task_id] = task
        return task

    async def claim_tasks(self, types: list[str], limit: int, owner: str, lease_s: float,
                          now: float) -> list[Task]:
        if not types or limit <= 0:
            return []
        marks = ",".join("?" * len(types))
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE tasks SET state = 'leased', lease_until = ?, lease_owner = ?,"
                f" attempts = attempts + 1 WHERE id IN ("
                f"  SELECT id FROM tasks WHERE type IN ({marks})"
                f"   AND state IN ('queued', 'leased')"
                f"   AND (state = 'queued' OR lease_until <= ?) AND deadline_at > ?"
                f"  ORDER BY created_at, id LIMIT ?) RETURNING {_TASK_COLS}",
                (now + lease_s, owner, *types, now, now, limit)).fetchall()
        return sorted((_task(r) for r in rows), key=lambda t: (t.created_at, t.id))

    async def finish_task(self, task_id: int, now: float, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None) -> Task | None:
        if (solution is None) == (error_code is None):
            raise ValueError("finish_task needs exactly one of solution and error_code")
        with self._tx() as db:
            row = db.execute("SELECT state, account_id, reserved_units, price_units, lease_owner,"
                             " lease_until FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None or row[0] not in ("queued", "leased"):
                return None
            state, account_id, reserved, price, lease_owner, lease_until = row
            if owner is not None and (state != "leased" or lease_owner != owner
                                      or lease_until is None or lease_until <= now):
                return None
            charge = price if solution is not None else 0
            db.execute(
                "UPDATE tasks SET state = ?, ended_at = ?, solution = ?, error_code = ?,"
                " cost_units = ?, reserved_units = 0, lease_until = NULL WHERE id = ?",
                ("solved" if solution is not None else "failed", now,
                 orjson.dumps(solution).decode() if solution is not None else None,
                 error_code, charge, task_id))
            db.execute("UPDATE accounts SET reserved_units = reserved_units - ?,"
                       " balance_units = balance_units - ? WHERE id = ?",
                       (reserved, charge, account_id))
            if charge:
                db.execute("INSERT INTO ledger (account_id, at, kind, amount_units, task_id,"
                           " actor, note) VALUES (?, ?, 'charge', ?, ?, 'capd', 'task solved')",
                           (account_id, now, -charge, task_id))
            done = db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE id = ?",
                              (task_id,)).fetchone()
        return _task(done)

    async def extend_lease(self, task_id: int, owner: str, until: float,
                           now: float) -> float | None:
        row = self._db.execute(
            "UPDATE tasks SET lease_until = MIN(?, deadline_at) WHERE id = ?"
            " AND state = 'leased' AND lease_owner = ? AND lease_until > ?"
            " RETURNING lease_until", (until, task_id, owner, now)).fetchone()
        return float(row[0]) if row else None

    async def overdue_tasks(self, now: float, limit: int = 100) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {_TASK_COLS} FROM tasks WHERE state IN ('queued', 'leased')"
            f" AND deadline_at <= ? ORDER BY deadline_at LIMIT ?", (now, limit)).fetchall()
        return [_task(r) for r in rows]

    async def report_task(self, task_id: int, account_id: int, refund: bool, now: float,
                          window_s: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tasks SET reported_at = ? WHERE id = ? AND account_id = ?"
                " AND state = 'solved' AND reported_at IS NULL AND ended_at >= ?"
                " RETURNING cost_units", (now, task_id, account_id, now - window_s))
            row = cur.fetchone()
            if row is None:
                return False
            if refund and row[0] > 0:
                db.execute("INSERT INTO ledger (account_id, at, kind, amount_units, task_id,"
                           " actor, note) VALUES (?, ?, 'refund', ?, ?, 'capd',"
                           " 'reported incorrect')", (account_id, now, row[0], task_id))
                db.execute("UPDATE accounts SET balance_units = balance_units + ? WHERE id = ?",
                           (row[0], account_id))
        return True

    async def queue_depth(self, task_type: str) -> int:
        row = self._one("SELECT COUNT(*) FROM tasks WHERE type = ? AND state = 'queued'",
                        (task_type,))
        return int(row[0])

    # -- limits and bans ---------------------------------------------------------------------
    async def incr_counter(self, name: str, window_s: float, now: float) -> int:
        return self._counters.incr(name, window_s, now)

    async def incr_counters(self, counters: list[tuple[str, float]], now: float) -> list[int]:
        return [self._counters.incr(name, window_s, now) for name, window_s in counters]

    async def sweep_counters(self, now: float) -> int:
        return self._counters.sweep(now)

    async def add_ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                      now: float, ends_at: float) -> int:
        self._invalidate()
        cur = self._db.execute(
            "INSERT INTO bans (scope, ip, account_id, reason, started_at, ends_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (scope, ip, account_id, reason, now, ends_at))
        return int(cur.lastrowid or 0)

    async def active_ban(self, scope: str, ip: str, account_id: int | None,
                         now: float) -> Ban | None:
        self._fresh()
        cache_key = (scope, ip, account_id)
        if cache_key in self._ban_cache:
            cached = self._ban_cache[cache_key]
            if cached is None or cached.ends_at > now:
                return cached
        row = self._one(
            f"SELECT {_BAN_COLS} FROM bans WHERE ip = ? AND scope = ? AND ends_at > ?"
            f" AND lifted_at IS NULL AND account_id IS ? ORDER BY ends_at DESC LIMIT 1",
            (ip, scope, now, account_id))
        ban = _ban(row) if row else None
        if len(self._ban_cache) >= _CACHE_LIMIT:
            self._ban_cache.clear()
        self._ban_cache[cache_key] = ban
        return ban

    async def extend_ban(self, ban_id: int, ends_at: float) -> None:
        self._invalidate()
        self._db.execute("UPDATE bans SET ends_at = MAX(ends_at, ?) WHERE id = ?",
                         (ends_at, ban_id))

    async def bans(self, now: float, active_only: bool = True,
                   account_id: int | None = None) -> list[Ban]:
        sql = f"SELECT {_BAN_COLS} FROM bans WHERE 1 = 1"
        args: list[Any] = []
        if active_only:
            sql += " AND ends_at > ? AND lifted_at IS NULL"
            args.append(now)
        if account_id is not None:
            sql += " AND account_id = ?"
            args.append(account_id)
        return [_ban(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    async def lift_ban(self, ban_id: int, now: float, by: str) -> bool:
        self._invalidate()
        cur = self._db.execute("UPDATE bans SET lifted_at = ?, lifted_by = ? WHERE id = ?"
                               " AND lifted_at IS NULL", (now, by, ban_id))
        return cur.rowcount == 1

    async def blocklist_add(self, domain: str, now: float) -> bool:
        cur = self._db.execute("INSERT OR IGNORE INTO blocklist (domain, added_at) VALUES (?, ?)",
                               (domain, now))
        return cur.rowcount == 1

    async def blocklist_remove(self, domain: str) -> bool:
        return self._db.execute("DELETE FROM blocklist WHERE domain = ?", (domain,)).rowcount == 1

    async def blocklist(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT domain FROM blocklist ORDER BY domain")]

    async def blocked_domain(self, host: str) -> str | None:
        labels = host.split(".")
        candidates = [".".join(labels[i:]) for i in range(len(labels))]
        marks = ",".join("?" * len(candidates))
        row = self._one(f"SELECT domain FROM blocklist WHERE domain IN ({marks}) LIMIT 1",
                        tuple(candidates))
        return row[0] if row else None

    async def ban_proxy(self, address: str, port: int, until: float) -> None:
        self._db.execute("INSERT INTO proxy_bans (address, port, until) VALUES (?, ?, ?)"
                         " ON CONFLICT (address, port) DO UPDATE SET"
                         " until = MAX(until, excluded.until)", (address.lower(), port, until))

    async def proxy_banned(self, address: str, port: int, now: float) -> bool:
        row = self._one("SELECT 1 FROM proxy_bans WHERE address = ? AND port = ? AND until > ?",
                        (address.lower(), port, now))
        return row is not None

    # -- workers -----------------------------------------------------------------------------
    async def create_worker_token(self, token_hash: str, name: str,
                                  types: tuple[str, ...] | None, now: float) -> int:
        self._invalidate()
        cur = self._db.execute(
            "INSERT INTO worker_tokens (token_hash, name, types, created_at) VALUES (?, ?, ?, ?)",
            (token_hash, name, orjson.dumps(list(types)).decode() if types else None, now))
        return int(cur.lastrowid or 0)

    async def revoke_worker_token(self, token_hash: str, now: float) -> bool:
        self._invalidate()
        cur = self._db.execute("UPDATE worker_tokens SET revoked_at = ? WHERE token_hash = ?"
                               " AND revoked_at IS NULL", (now, token_hash))
        return cur.rowcount == 1

    async def worker_token(self, token_hash: str) -> WorkerToken | None:
        self._fresh()
        if token_hash in self._worker_tokens:
            return self._worker_tokens[token_hash]
        row = self._one("SELECT id, name, types, created_at FROM worker_tokens"
                        " WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,))
        token = None
        if row is not None:
            types = tuple(orjson.loads(row[2])) if row[2] else None
            token = WorkerToken(row[0], row[1], types, row[3])
        if len(self._worker_tokens) >= _CACHE_LIMIT:
            self._worker_tokens.clear()
        self._worker_tokens[token_hash] = token
        return token

    async def note_workers(self, types: list[str], now: float) -> None:
        for task_type in types:
            self._worker_seen[task_type] = max(now, self._worker_seen.get(task_type, 0.0))

    async def worker_seen_since(self, task_type: str, since: float) -> bool:
        return self._worker_seen.get(task_type, float("-inf")) >= since

    # -- operator views ----------------------------------------------------------------------
    async def stats(self, now: float) -> dict[str, Any]:
        db = self._db
        by_state = [
            {"type": t, "state": s, "count": n}
            for t, s, n in db.execute("SELECT type, state, COUNT(*) FROM tasks"
                                      " GROUP BY type, state ORDER BY type, state")]
        latencies = [r[0] for r in db.execute(
            "SELECT ended_at - created_at FROM tasks WHERE state = 'solved'"
            " ORDER BY id DESC LIMIT 10000")]
        charges = db.execute("SELECT COUNT(*), COALESCE(-SUM(amount_units), 0) FROM ledger"
                             " WHERE kind = 'charge'").fetchone()
        refunds = db.execute("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM ledger"
                             " WHERE kind = 'refund'").fetchone()
        return {"tasks": by_state, "solve_latencies_s": latencies,
                "charges": {"count": charges[0], "units": charges[1]},
                "refunds": {"count": refunds[0], "units": refunds[1]}}

    async def meta_get(self, name: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE name = ?", (name,))
        return row[0] if row else None

    async def meta_set(self, name: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name)"
                         " DO UPDATE SET value = excluded.value", (name, value))

    # -- console (web dashboard): admin tokens, sessions, read-only views -----------------
    async def create_admin_token(self, token_hash: str, name: str, now: float) -> int:
        cur = self._db.execute("INSERT INTO admin_tokens (token_hash, name, created_at)"
                               " VALUES (?, ?, ?)", (token_hash, name, now))
        return int(cur.lastrowid or 0)

    async def revoke_admin_token(self, token_hash: str, now: float) -> bool:
        cur = self._db.execute("UPDATE admin_tokens SET revoked_at = ? WHERE token_hash = ?"
                               " AND revoked_at IS NULL", (now, token_hash))
        return cur.rowcount == 1

    async def admin_token(self, token_hash: str) -> AdminToken | None:
        row = self._one("SELECT id, name, created_at FROM admin_tokens WHERE token_hash = ?"
                        " AND revoked_at IS NULL", (token_hash,))
        return AdminToken(*row) if row else None

    async def create_console_session(self, session: ConsoleSession) -> None:
        s = session
        self._db.execute(
            "INSERT INTO console_sessions (token_hash, kind, account_id, api_key,"
            " admin_token_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (s.token_hash, s.kind, s.account_id, s.api_key, s.admin_token_hash, s.csrf,
             s.created_at, s.expires_at))

    async def console_session(self, token_hash: str, now: float) -> ConsoleSession | None:
        row = self._one("SELECT token_hash, kind, account_id, api_key, admin_token_hash, csrf,"
                        " created_at, expires_at FROM console_sessions"
                        " WHERE token_hash = ? AND expires_at > ?", (token_hash, now))
        return ConsoleSession(*row) if row else None

    async def set_console_session_key(self, token_hash: str, api_key: str) -> None:
        self._db.execute("UPDATE console_sessions SET api_key = ? WHERE token_hash = ?",
                         (api_key, token_hash))

    async def delete_console_session(self, token_hash: str) -> None:
        self._db.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))

    async def sweep_console_sessions(self, now: float) -> int:
        return self._db.execute("DELETE FROM console_sessions WHERE expires_at <= ?",
                                (now,)).rowcount

    def _read_sync(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, check_same_thread=False,
                                               timeout=self._busy_timeout_s)
            return self._reader.execute(sql, args).fetchall()

    async def _read_heavy(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """A long read-only query (the console's 30-day views): on a second connection in
        a worker thread (WAL lets it read beside the writer), so the event loop, which
        runs every other statement, keeps serving the API meanwhile."""
        if self.path == ":memory:":  # a second connection would see another database
            return self._db.execute(sql, args).fetchall()
        return await asyncio.to_thread(self._read_sync, sql, args)

    async def usage(self, account_id: int | None, since: float, until: float, bucket_s: float,
                    ip: str | None = None) -> list[UsageRow]:
        where, args = "", list[Any]()
        if account_id is not None:
            where += " AND t.account_id = ?"
            args.append(account_id)
        if ip is not None:
            where += " AND t.client_ip = ?"
            args.append(ip)
        # the refund lookup runs only for reported tasks (few), inside the CASE
        rows = await self._read_heavy(
            f"SELECT CAST(t.created_at / ? AS INTEGER) * ?, t.type, COUNT(*),"
            f" SUM(t.state = 'solved'), SUM(t.state = 'failed'), SUM(t.cost_units) - COALESCE("
            f"SUM(CASE WHEN t.reported_at IS NOT NULL THEN (SELECT l.amount_units FROM ledger l"
            f" WHERE l.task_id = t.id AND l.kind = 'refund') END), 0) FROM tasks t"
            f" WHERE t.created_at >= ? AND t.created_at < ?{where} GROUP BY 1, 2",
            (bucket_s, bucket_s, since, until, *args))
        return usage_rows(rows)

    async def solve_durations(self, account_id: int | None, since: float,
                              limit: int = 10_000) -> list[tuple[str, float]]:
        sql = ("SELECT type, ended_at - created_at FROM tasks WHERE state = 'solved'"
               " AND ended_at >= ?")
        args: list[Any] = [since]
        if account_id is not None:
            sql += " AND account_id = ?"
            args.append(account_id)
        rows = await self._read_heavy(sql + " ORDER BY ended_at DESC LIMIT ?", (*args, limit))
        return [(r[0], float(r[1])) for r in rows]

    async def recent_tasks(self, account_id: int, limit: int = 50) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {_TASK_COLS_LIGHT} FROM tasks WHERE account_id = ?"
            f" ORDER BY created_at DESC, id DESC LIMIT ?", (account_id, limit)).fetchall()
        return [_task(r) for r in rows]

    async def workers_online(self, now: float) -> list[WorkerActivity]:
        leases = {r[0]: (r[1], r[2]) for r in self._db.execute(
            "SELECT type, COUNT(*), SUM(lease_owner LIKE 'builtin-%') FROM tasks"
            " WHERE state = 'leased' AND lease_until > ? GROUP BY type", (now,))}
        types = sorted(set(leases) | set(self._worker_seen))
        return [WorkerActivity(t, self._worker_seen.get(t), *leases.get(t, (0, 0)))
                for t in types]

    async def open_tasks(self) -> dict[str, tuple[int, int]]:
        rows = self._db.execute(
            "SELECT type, SUM(state = 'queued'), SUM(state = 'leased') FROM tasks"
            " WHERE state IN ('queued', 'leased') GROUP BY type")
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

