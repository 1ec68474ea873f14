"""The embedded backend: one SQLite file in WAL mode.

Statements run synchronously on the caller's thread (the event loop): each is a few
microseconds against a local file, far less than a hop to a thread pool would cost, and
running them on one thread serialises the server's transactions for free. Other
processes (the CLI) share the file through SQLite's own locking with a busy timeout.

Every statement goes through ``_one``, ``_all`` or ``_run``, which turn an outage (locked,
full, read-only or unreadable file) into StoreUnavailable where it happens: no wrapper
per method, so the poll path's cache hits cost nothing extra.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from capd.store.base import Ban, Caller, StoreUnavailable, WorkerToken
from capd.store.counters import Bounded, FinalTasks, OneProcess
from capd.store.migrations import migration_scripts
from capd.store.outbox import OutboxStatements, SqlOutbox
from capd.store.retention import RetentionStatements, SqlRetention
from capd.store.secrets import (
    create_private_file,
    key_hint,
    register_sqlite_functions,
    secret_digest,
)
from capd.store.transitions import (
    BAN_COLS,
    SQLITE,
    SqlTransitions,
    Statements,
    Tx,
    ban_from_row,
)

# SQLite's primary result codes that mean "cannot answer now", not "wrong statement"
_OUTAGE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
                           sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
                           sqlite3.SQLITE_PROTOCOL})


def _is_outage(exc: BaseException) -> bool:
    """A locked, full, read-only or unreadable database file (and the OS errors behind it)."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is None or code & 0xFF in _OUTAGE_CODES
    return isinstance(exc, OSError)


def _reraise(exc: sqlite3.OperationalError) -> NoReturn:
    """StoreUnavailable for an outage; any other error (a wrong statement) as it is."""
    if _is_outage(exc):
        raise StoreUnavailable(f"SQLite: {exc}") from exc
    raise exc


class _Db:
    """The connection as the shared transitions see it (``capd.store.transitions.Db``).

    The coroutines never suspend: a transaction runs start to end without yielding to the
    event loop, so no other request's statements can land inside it."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._store._one(sql, args)
        return row

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return self._store._all(sql, args)

    async def execute(self, sql: str, *args: Any) -> None:
        self._store._run(sql, args)

    async def fetch_long(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self._store._read_long(sql, args)

    def transaction(self) -> _Db:
        return self

    async def __aenter__(self) -> _Db:
        self._store._run("BEGIN IMMEDIATE")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        store = self._store
        if kind is not None:
            store._run("ROLLBACK")
            return
        try:
            store._run("COMMIT")
        except BaseException:
            if store._db.in_transaction:  # a failed COMMIT (disk full) may leave it open
                store._run("ROLLBACK")
            raise

    async def keys_changed(self, tx: Tx) -> None:
        self._store._invalidate()

    async def task_queued(self, tx: Tx, task_type: str) -> None:
        """One serving process: the dispatcher hears of new work directly."""


class SQLiteStore(SqlTransitions, SqlRetention, SqlOutbox, OneProcess):
    """Store backend on one SQLite database file."""

    backend = "sqlite"
    _sql = Statements(SQLITE)
    _retention_sql = RetentionStatements(SQLITE)
    _outbox_sql = OutboxStatements(SQLITE)

    def __init__(self, path: str, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._reader: sqlite3.Connection | None = None  # the console's long reads
        self._reader_lock = threading.Lock()
        create_private_file(path)  # owner-only (0600); its -wal and -shm take its mode
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_ms / 1000)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # a new file takes it now, before its first table; an older one at its next VACUUM
        # (``reclaim_space``): freed pages can then go back in steps (issue 12)
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only a power cut
        # may lose the last transactions, never corrupt the file.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        OneProcess.__init__(self)
        # Read caches for the poll path: keys, bans and finished tasks. Our own writes clear
        # them; PRAGMA data_version tells us (in ~2 us) when another connection, such as
        # the CLI revoking a key or lifting a ban, has committed.
        self._data_version = -1
        self._fresh_this_turn = False
        self._callers: Bounded[str, Caller | None] = Bounded()
        self._ban_cache: Bounded[tuple[str, str, int | None], Ban | None] = Bounded()
        self._final_tasks = FinalTasks()
        self._worker_tokens: Bounded[str, WorkerToken | None] = Bounded()
        self._tdb = _Db(self)

    def _fresh(self) -> None:
        """Drop the read caches when another connection has committed since we looked.

        Asked once per turn of the event loop: the lookups of one request (key, IP ban,
        account block) run in one turn without suspending, so they share one check, and a
        commit elsewhere is seen by the next turn."""
        if self._fresh_this_turn:
            return
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError as exc:
            _reraise(exc)
        if version != self._data_version:
            self._data_version = version
            self._invalidate()
        self._fresh_this_turn = True
        asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._fresh_this_turn = False

    def _invalidate(self) -> None:
        self._callers.clear()
        self._ban_cache.clear()
        self._worker_tokens.clear()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self._db.execute(sql, args).fetchone()
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _run(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """A statement that returns no rows; its cursor tells rowcount and lastrowid."""
        try:
            return self._db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _read_sync(self, sql: str, args: Sequence[Any]) -> list[Any]:
        with self._reader_lock:
            try:
                if self._reader is None:
                    self._reader = sqlite3.connect(self.path, check_same_thread=False,
                                                   timeout=self._busy_timeout_s)
                return self._reader.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                _reraise(exc)

    async def _read_long(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """A long read-only query (the console's 30-day views) on a second connection in a
        worker thread (WAL lets it read beside the writer), so that the event loop, which
        runs every other statement, keeps serving the API meanwhile."""
        if self.path == ":memory:":  # a second connection would see another database
            return self._all(sql, args)
        return await asyncio.to_thread(self._read_sync, sql, args)

    # -- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        try:
            return self._migrate()
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _migrate(self) -> int:
        db = self._db
        register_sqlite_functions(db)  # capd_sha256() and others, for migration 0006
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

    # -- accounts and keys -----------------------------------------------------------------
    async def add_key(self, account_id: int, key: str, now: float) -> None:
        self._invalidate()
        self._run(self._sql.insert_key, (secret_digest(key), key_hint(key), account_id, now))

    async def revoke_key_digest(self, digest: str, now: float) -> bool:
        self._invalidate()
        return self._run(self._sql.revoke_key, (now, digest)).rowcount == 1

    async def caller_for_key_digest(self, digest: str) -> Caller | None:
        self._fresh()
        if digest in self._callers:
            return self._callers[digest]
        row = self._one("SELECT account_id FROM api_keys WHERE key_hash = ?"
                        " AND revoked_at IS NULL", (digest,))
        caller = None
        if row is not None:
            nets = self._all("SELECT network FROM whitelist WHERE account_id = ?", (row[0],))
            caller = Caller(row[0], tuple(n[0] for n in nets))
        self._callers.put(digest, caller)
        return caller

    async def whitelist_add(self, account_id: int, network: str) -> bool:
        self._invalidate()
        cur = self._run("INSERT OR IGNORE INTO whitelist (account_id, network)"
                               " VALUES (?, ?)", (account_id, network))
        return cur.rowcount == 1

    async def whitelist_remove(self, account_id: int, network: str) -> bool:
        self._invalidate()
        cur = self._run("DELETE FROM whitelist WHERE account_id = ? AND network = ?",
                               (account_id, network))
        return cur.rowcount == 1

    # -- money -------------------------------------------------------------------------------
    # -- tasks -------------------------------------------------------------------------------
    # -- limits and bans ---------------------------------------------------------------------
    async def active_ban(self, scope: str, ip: str, account_id: int | None,
                         now: float) -> Ban | None:
        self._fresh()
        cache_key = (scope, ip, account_id)
        if cache_key in self._ban_cache:
            cached = self._ban_cache[cache_key]
            if cached is None or cached.ends_at > now:
                return cached
        row = self._one(
            f"SELECT {BAN_COLS} FROM bans WHERE ip = ? AND scope = ? AND ends_at > ?"
            f" AND lifted_at IS NULL AND account_id IS ? ORDER BY ends_at DESC LIMIT 1",
            (ip, scope, now, account_id))
        ban = ban_from_row(row) if row else None
        self._ban_cache.put(cache_key, ban)
        return ban

    async def extend_ban(self, ban_id: int, ends_at: float) -> None:
        self._invalidate()
        self._run("UPDATE bans SET ends_at = MAX(ends_at, ?) WHERE id = ?",
                         (ends_at, ban_id))

    async def bans(self, now: float, active_only: bool = True,
                   account_id: int | None = None) -> list[Ban]:
        sql = f"SELECT {BAN_COLS} FROM bans WHERE 1 = 1"
        args: list[Any] = []
        if active_only:
            sql += " AND ends_at > ? AND lifted_at IS NULL"
            args.append(now)
        if account_id is not None:
            sql += " AND account_id = ?"
            args.append(account_id)
        return [ban_from_row(r) for r in self._all(sql + " ORDER BY id", args)]

    async def lift_ban(self, ban_id: int, now: float, by: str) -> bool:
        self._invalidate()
        cur = self._run("UPDATE bans SET lifted_at = ?, lifted_by = ? WHERE id = ?"
                               " AND lifted_at IS NULL", (now, by, ban_id))
        return cur.rowcount == 1

    async def blocklist_add(self, domain: str, now: float) -> bool:
        cur = self._run("INSERT OR IGNORE INTO blocklist (domain, added_at) VALUES (?, ?)",
                               (domain, now))
        return cur.rowcount == 1

    async def blocklist_remove(self, domain: str) -> bool:
        return self._run("DELETE FROM blocklist WHERE domain = ?", (domain,)).rowcount == 1

    async def blocklist(self) -> list[str]:
        return [r[0] for r in self._all("SELECT domain FROM blocklist ORDER BY domain")]

    async def blocked_domain(self, host: str) -> str | None:
        labels = host.split(".")
        candidates = [".".join(labels[i:]) for i in range(len(labels))]
        marks = ",".join("?" * len(candidates))
        row = self._one(f"SELECT domain FROM blocklist WHERE domain IN ({marks}) LIMIT 1",
                        tuple(candidates))
        return row[0] if row else None

    async def ban_proxy(self, address: str, port: int, until: float) -> None:
        self._run("INSERT INTO proxy_bans (address, port, until) VALUES (?, ?, ?)"
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
        cur = self._run(
            "INSERT INTO worker_tokens (token_hash, name, types, created_at) VALUES (?, ?, ?, ?)",
            (token_hash, name, orjson.dumps(list(types)).decode() if types else None, now))
        return int(cur.lastrowid or 0)

    async def revoke_worker_token(self, token_hash: str, now: float) -> bool:
        self._invalidate()
        cur = self._run("UPDATE worker_tokens SET revoked_at = ? WHERE token_hash = ?"
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
        self._worker_tokens.put(token_hash, token)
        return token

    # -- retention ---------------------------------------------------------------------------
    async def reclaim_space(self) -> int:
        try:
            return self._reclaim()
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _reclaim(self) -> int:
        def size() -> int:
            pages = self._one("PRAGMA page_count")[0]
            return int(pages) * int(self._one("PRAGMA page_size")[0])

        before = size()
        if self._one("PRAGMA auto_vacuum")[0] != 2:  # 2: INCREMENTAL
            # a database made before migration 4: one full rewrite turns the mode on
            self._run("PRAGMA auto_vacuum = INCREMENTAL")
            self._run("VACUUM")
        else:
            # run to completion: a single step (as execute() does) frees only one page
            self._db.executescript("PRAGMA incremental_vacuum;")
        # WAL: the main file shrinks when the log is written back (skipped while readers
        # hold it; the next checkpoint does it then)
        self._one("PRAGMA wal_checkpoint(TRUNCATE)")
        return max(before - size(), 0)

    # -- operator views ----------------------------------------------------------------------
    async def stats(self, now: float) -> dict[str, Any]:
        by_state = [
            {"type": t, "state": s, "count": n}
            for t, s, n in self._all("SELECT type, state, COUNT(*) FROM tasks"
                                     " GROUP BY type, state ORDER BY type, state")]
        latencies = [r[0] for r in self._all(
            "SELECT ended_at - created_at FROM tasks WHERE state = 'solved'"
            " ORDER BY id DESC LIMIT 10000")]
        charges = self._one("SELECT COUNT(*), COALESCE(-SUM(amount_units), 0) FROM ledger"
                            " WHERE kind = 'charge'")
        refunds = self._one("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM ledger"
                            " WHERE kind = 'refund'")
        return {"tasks": by_state, "solve_latencies_s": latencies,
                "charges": {"count": charges[0], "units": charges[1]},
                "refunds": {"count": refunds[0], "units": refunds[1]}}

    async def meta_get(self, name: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE name = ?", (name,))
        return row[0] if row else None

    async def meta_set(self, name: str, value: str) -> None:
        self._run("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name)"
                         " DO UPDATE SET value = excluded.value", (name, value))
