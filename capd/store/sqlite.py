"""The embedded backend: one SQLite file in WAL mode.

A locked file never stalls the event loop (issue 12). Two connections:

- the **writer** runs every statement that writes, and every statement of a transaction.
  A write unit (a transaction, one statement, a migration) holds an ``asyncio.Lock`` from
  start to end, so no other request's statement lands inside a transaction. It first
  tries the file's lock inline, on the loop, without waiting (busy timeout 0): the lock is
  almost always free, and then the unit runs inline start to end, as cheap as ever.
  Only when another process (the CLI, ``capd backup``, a checkpoint) holds the lock does
  the unit's first statement go to the writer's own thread, to wait there in SQLite's
  busy timeout; once it holds the lock nothing waits, and the rest runs inline. Sending
  every statement to the thread instead was measured: a createTask and its finish took
  ~1.8 ms of CPU instead of ~0.45 ms (ten thread hops). A unit's busy timeout counts from
  when it asked for the writer: units queued behind one that waits do not each wait a
  whole timeout after it, so a createTask answers 503 ERROR_SERVICE_UNAVAILABLE within
  the busy timeout while the lock outlasts it.
- the **reader** runs single ``SELECT`` statements synchronously on the loop. In WAL mode
  a reader never waits for a writer (it reads the last committed state), so these cost a
  few microseconds and never queue behind a writer that waits for the lock: poll-path cache
  misses, caller and ban lookups, ``PRAGMA data_version``. A reader sees every commit made
  before its statement starts, so a read after an awaited write sees that write. Its busy
  timeout is short (``READER_BUSY_TIMEOUT_MS``): WAL makes a reader wait only in rare cases
  (a recovery after a crash), and the loop must not wait long for one.

A connection holds its mutex through a busy wait, so the loop touches the writer's
connection only while the writer's thread is idle, never while it waits. Reads inside a
transaction go through the writer (they must see the transaction's own writes). The
console's long reads (``_read_long``) run on a third connection in a worker thread.

``sqlite:///:memory:`` is private to its one connection: no other process can lock it and
a second connection would see another database, so there the one connection serves both
roles, inline, and there is no thread.

Statements go through ``_one``, ``_all`` (reader), ``_write``/``_run``, ``_Tx`` or
``_unit`` (writer), which turn an outage (locked, full, read-only or unreadable file) into
StoreUnavailable where it happens: no wrapper per method, so the poll path's cache hits
cost nothing extra.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

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

_T = TypeVar("_T")

# SQLite's primary result codes that mean "cannot answer now", not "wrong statement"
_OUTAGE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
                           sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
                           sqlite3.SQLITE_PROTOCOL})

# the reader's busy timeout: a WAL reader waits only in rare moments (another connection
# recovering the log after a crash); past this the read is StoreUnavailable, and the loop
# has stalled at most this long
READER_BUSY_TIMEOUT_MS = 100
_WRITER_THREADS = 1  # one thread: the write connection's statements run in order
# a write unit that waited behind others for the writer waits for the file's lock only for
# what is left of its busy timeout, rounded down to this step (few distinct PRAGMA texts,
# so the connection's statement cache is not churned)
_BUSY_STEP_MS = 100


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


def _reads_only(sql: str) -> bool:
    """A statement the reader may run: a plain SELECT (in SQLite, one never writes)."""
    return sql.lstrip()[:6].upper() == "SELECT"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """The file's lock is held by another connection (and we did not wait for it)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY


def _row(cur: sqlite3.Cursor) -> Any:
    return cur.fetchone()


def _rows(cur: sqlite3.Cursor) -> list[Any]:
    return cur.fetchall()


def _cursor(cur: sqlite3.Cursor) -> sqlite3.Cursor:
    return cur


class _Tx:
    """One transaction on the writer: the store's write lock is held from ``BEGIN
    IMMEDIATE`` to ``COMMIT`` or ``ROLLBACK``. Only the BEGIN may wait (on the writer's
    thread); once it holds the file's lock, nothing waits, and the statements run inline."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._store._inline(_row, sql, args)
        return row

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        rows: list[Any] = self._store._inline(_rows, sql, args)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        self._store._inline(_cursor, sql, args)

    async def __aenter__(self) -> _Tx:
        store = self._store
        deadline = time.monotonic() + store._busy_timeout_s
        await store._write_lock.acquire()
        try:
            await store._take_lock(deadline, store._begin_now,
                                   lambda: store._begin_waiting(deadline))
        except BaseException:
            store._write_lock.release()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        store = self._store
        try:
            store._end(kind is None)
        finally:
            store._write_lock.release()


class _Db:
    """The connection as the shared transitions see it (``capd.store.transitions.Db``): a
    single SELECT on the reader, on the loop; any other statement, and every transaction,
    on the writer."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        if _reads_only(sql):
            row: Sequence[Any] | None = self._store._one(sql, args)
            return row
        row = await self._store._write(_row, sql, args)
        return row

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        if _reads_only(sql):
            return self._store._all(sql, args)
        rows: list[Any] = await self._store._write(_rows, sql, args)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await self._store._write(_cursor, sql, args)

    async def fetch_long(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        return await self._store._read_long(sql, args)

    def transaction(self) -> _Tx:
        return _Tx(self._store)

    async def keys_changed(self, tx: Tx) -> None:
        # and again once it commits: PRAGMA data_version on the reader tells of the commit
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
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._reader: sqlite3.Connection | None = None  # the console's long reads
        self._reader_lock = threading.Lock()
        create_private_file(path)  # owner-only (0600); its -wal and -shm take its mode
        # the writer
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_ms / 1000)
        self._db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        # a new file takes it now, before its first table; an older one at its next VACUUM
        # (``reclaim_space``): freed pages can then go back in steps (issue 12)
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only a power cut
        # may lose the last transactions, never corrupt the file.
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._write_lock = asyncio.Lock()  # held by the write unit in flight
        self._writer: ThreadPoolExecutor | None = None  # None: nothing ever waits
        self._last_job: Future[Any] | None = None  # the writer thread's latest
        self._rdb = self._db  # the reader
        if path != ":memory:":
            # on the loop the writer never waits: a busy file is an error at once, and the
            # unit goes to the writer's thread to wait there
            self._db.execute("PRAGMA busy_timeout = 0")
            self._writer = ThreadPoolExecutor(_WRITER_THREADS,
                                              thread_name_prefix="capd-sqlite-writer")
            self._rdb = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                        timeout=READER_BUSY_TIMEOUT_MS / 1000)
            self._rdb.execute(f"PRAGMA busy_timeout = {READER_BUSY_TIMEOUT_MS}")
            self._rdb.execute("PRAGMA query_only = ON")  # a write sent here is a bug
        self._closed = False
        OneProcess.__init__(self)
        # Read caches for the poll path: keys, bans and finished tasks. PRAGMA data_version
        # on the reader tells us (in ~2 us) when any other connection has committed: the
        # CLI revoking a key or lifting a ban, and our own writer too, whose writes that
        # change what is cached also clear the caches before they start.
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
            version = self._rdb.execute("PRAGMA data_version").fetchone()[0]
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

    # -- the reader: single SELECTs, on the loop --------------------------------------------
    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self._rdb.execute(sql, args).fetchone()
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._rdb.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    # -- the writer --------------------------------------------------------------------------
    # A write unit (a transaction, one statement, a migration) holds ``_write_lock``. It
    # first tries the file's lock inline, without waiting (busy timeout 0): almost always
    # free, and then the unit runs inline as before, at no extra cost. Only when another
    # process holds the lock does it wait, on the writer's thread, for what is left of
    # its busy timeout. The loop touches the writer's connection only while that thread
    # is idle (``_thread_idle``), so never while it waits.
    async def _write(self, take: Callable[[sqlite3.Cursor], _T], sql: str,
                     args: Sequence[Any] = ()) -> _T:
        """One autocommitted statement on the writer, between transactions."""
        deadline = time.monotonic() + self._busy_timeout_s
        async with self._write_lock:
            return await self._take_lock(
                deadline, lambda: self._execute(take, sql, args),
                lambda: self._execute_waiting(deadline, take, sql, args))

    async def _run(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """A statement that returns no rows; its cursor tells rowcount and lastrowid."""
        return await self._write(_cursor, sql, args)

    async def _unit(self, fn: Callable[[], _T]) -> _T:
        """``fn`` (which uses ``self._db`` as it likes, waiting for locks) whole on the
        writer's thread: migrations, space reclaiming."""
        async with self._write_lock:
            if self._writer is None:
                try:
                    return fn()
                except sqlite3.OperationalError as exc:
                    _reraise(exc)
            return await self._on_writer(self._waiting_for, fn,
                                         time.monotonic() + self._busy_timeout_s)

    def _inline(self, take: Callable[[sqlite3.Cursor], _T], sql: str,
                args: Sequence[Any]) -> _T:
        """A statement of the transaction in flight (its unit holds the file's lock)."""
        try:
            return take(self._db.execute(sql, args))
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    async def _take_lock(self, deadline: float, now: Callable[[], _T],
                         waiting: Callable[[], _T]) -> _T:
        """``now()`` inline if the file's lock is free, else ``waiting()`` on the writer's
        thread (each takes the lock by its first statement); the caller holds the write
        lock."""
        if self._writer is None or self._thread_idle():
            try:
                self._abandoned()
                return now()
            except sqlite3.OperationalError as exc:
                if self._writer is None or not _is_busy(exc):
                    _reraise(exc)
        return await self._on_writer(waiting)

    def _thread_idle(self) -> bool:
        return self._last_job is None or self._last_job.done()

    async def _on_writer(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the writer's thread; the caller holds the write lock. An outage
        is StoreUnavailable."""
        assert self._writer is not None
        job = self._last_job = self._writer.submit(fn, *args)
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # the statement may still run (say a BEGIN, once the lock is free): roll back
            # whatever it leaves open right after it, before the next unit's statements
            # (which find the thread busy until then), so the file is not left locked
            self._last_job = self._writer.submit(self._abandoned)
            raise
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    def _execute(self, take: Callable[[sqlite3.Cursor], _T], sql: str,
                 args: Sequence[Any]) -> _T:
        return take(self._db.execute(sql, args))

    def _abandoned(self) -> None:
        """Roll back a transaction whose owner was cancelled while its BEGIN waited on the
        writer's thread (the next unit must not run inside it)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _begin_now(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _end(self, commit: bool) -> None:
        db = self._db
        try:
            if not commit:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                return
            try:
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT (disk full) may leave it open
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            _reraise(exc)

    # on the writer's thread:
    def _waiting_for(self, fn: Callable[[], _T], deadline: float) -> _T:
        """``fn()`` with the busy timeout set to what is left until ``deadline``: a unit's
        timeout counts from when it asked for the writer, so that waiting behind other
        units (each waiting for the same lock) does not add up; with nothing left it
        tries the lock once. The timeout goes back to 0 (the loop's) after."""
        self._abandoned()
        left_ms = int((deadline - time.monotonic()) * 1000)
        ms = max(left_ms - left_ms % _BUSY_STEP_MS, 0)
        if ms >= self._busy_timeout_ms - _BUSY_STEP_MS:
            ms = self._busy_timeout_ms
        self._db.execute(f"PRAGMA busy_timeout = {ms}")
        try:
            return fn()
        finally:
            self._db.execute("PRAGMA busy_timeout = 0")

    def _execute_waiting(self, deadline: float, take: Callable[[sqlite3.Cursor], _T],
                         sql: str, args: Sequence[Any]) -> _T:
        return self._waiting_for(lambda: self._execute(take, sql, args), deadline)

    def _begin_waiting(self, deadline: float) -> None:
        self._waiting_for(self._begin_now, deadline)

    # -- the console's long reads ------------------------------------------------------------
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
        """A long read-only query (the console's 30-day views) on a third connection in a
        worker thread, so that the event loop, which runs the reader's statements, keeps
        serving the API meanwhile."""
        if self.path == ":memory:":  # a second connection would see another database
            return self._all(sql, args)
        return await asyncio.to_thread(self._read_sync, sql, args)

    # -- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        return await self._unit(self._migrate)

    def _migrate(self) -> int:
        db = self._db
        register_sqlite_functions(db)  # capd_sha256() and others, for migration 0006
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, sql in migration_scripts("sqlite"):
            if version <= current:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                latest = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
                if (latest or 0) >= version:
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
        """Stop the writer's thread (after the unit in flight) and close the connections."""
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._rdb.close()
            self._db.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # -- accounts and keys -----------------------------------------------------------------
    async def add_key(self, account_id: int, key: str, now: float) -> None:
        self._invalidate()
        await self._run(self._sql.insert_key,
                        (secret_digest(key), key_hint(key), account_id, now))

    async def revoke_key_digest(self, digest: str, now: float) -> bool:
        self._invalidate()
        return (await self._run(self._sql.revoke_key, (now, digest))).rowcount == 1

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
        cur = await self._run("INSERT OR IGNORE INTO whitelist (account_id, network)"
                               " VALUES (?, ?)", (account_id, network))
        return cur.rowcount == 1

    async def whitelist_remove(self, account_id: int, network: str) -> bool:
        self._invalidate()
        cur = await self._run("DELETE FROM whitelist WHERE account_id = ? AND network = ?",
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
        await self._run("UPDATE bans SET ends_at = MAX(ends_at, ?) WHERE id = ?",
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
        cur = await self._run("UPDATE bans SET lifted_at = ?, lifted_by = ? WHERE id = ?"
                               " AND lifted_at IS NULL", (now, by, ban_id))
        return cur.rowcount == 1

    async def blocklist_add(self, domain: str, now: float) -> bool:
        cur = await self._run("INSERT OR IGNORE INTO blocklist (domain, added_at) VALUES (?, ?)",
                               (domain, now))
        return cur.rowcount == 1

    async def blocklist_remove(self, domain: str) -> bool:
        return (await self._run("DELETE FROM blocklist WHERE domain = ?", (domain,))).rowcount == 1

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
        await self._run("INSERT INTO proxy_bans (address, port, until) VALUES (?, ?, ?)"
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
        cur = await self._run(
            "INSERT INTO worker_tokens (token_hash, name, types, created_at) VALUES (?, ?, ?, ?)",
            (token_hash, name, orjson.dumps(list(types)).decode() if types else None, now))
        return int(cur.lastrowid or 0)

    async def revoke_worker_token(self, token_hash: str, now: float) -> bool:
        self._invalidate()
        cur = await self._run("UPDATE worker_tokens SET revoked_at = ? WHERE token_hash = ?"
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
        return await self._unit(self._reclaim)

    def _reclaim(self) -> int:  # on the writer's thread, holding the write lock
        db = self._db

        def pragma(name: str) -> Any:
            return db.execute(f"PRAGMA {name}").fetchone()[0]

        def size() -> int:
            return int(pragma("page_count")) * int(pragma("page_size"))

        before = size()
        if pragma("auto_vacuum") != 2:  # 2: INCREMENTAL
            # a database made before migration 4: one full rewrite turns the mode on
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("VACUUM")
        else:
            # run to completion: a single step (as execute() does) frees only one page
            db.executescript("PRAGMA incremental_vacuum;")
        # WAL: the main file shrinks when the log is written back (skipped while readers
        # hold it; the next checkpoint does it then)
        pragma("wal_checkpoint(TRUNCATE)")
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
        await self._run("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name)"
                         " DO UPDATE SET value = excluded.value", (name, value))
