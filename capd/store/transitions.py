"""The task and money transitions: one state machine, written once for every backend.

A task moves through ``TaskState`` (``capd.store.base``); every move is one atomic
transition, and the money it moves goes with it in the same transaction. An account holds
``balance`` (B, the sum of its ledger) and ``reserved`` (R, prices of its open tasks);
always ``0 <= R <= B <= MAX_UNITS``.

Task transitions (from -> to: guard; money):

- ``create_task``   (new) -> queued: B - R >= price, else InsufficientFunds (nothing
  written); R += price, the task reserves its price.
- ``claim_tasks``   queued, or leased with the lease over -> leased: a type asked for,
  deadline ahead, oldest first, each task to one claimer; attempts + 1, lease to
  now + lease_s; a ``Claimer.READER`` (the built-in reading) skips tasks handed to
  humans. No money.
- ``hand_to_humans`` leased -> queued, for humans from now on (the human fallback): the
  owner holds a live lease, deadline ahead; the lease is cleared, the deadline kept,
  the task announced as queued. No money (the reservation stays).
- ``extend_lease``  leased -> leased: the owner holds a live lease; the lease end moves,
  never past the deadline. No money.
- ``finish_task``   queued or leased -> solved (with a solution): with ``owner``, only the
  holder of a live lease; capture: R -= reserved, B -= price, ledger ``charge`` of -price.
- ``finish_task``   queued or leased -> failed (with an error code): same guard;
  release: R -= reserved.
- either ``finish_task``, given ``callback`` and a task with a callback URL, also writes
  its pending callback outbox row in the same transaction (``capd.store.outbox``), with
  the URL as given; the task row itself keeps no proxy credentials in its payload and no
  user:password in its callback URL from then on (``capd.store.secrets``).
- ``report_task``   solved, not yet reported -> solved and reported: the account's own
  task, ended within ``window_s``; with ``refund``, B += cost and a ledger ``refund``.

Account transitions:

- ``create_account``  0 <= opening <= MAX_UNITS, else ValueError; B = opening, with a
  ledger ``topup`` when it is positive; the account and its key in the same transaction.
- ``adjust_balance``  R <= B + amount, else InsufficientFunds; B + amount <= MAX_UNITS,
  else ValueError; B += amount with a ledger entry of the given kind.

``solved`` and ``failed`` are final: nothing leaves them (a report only stamps
``reported_at``), so each task is charged at most once and refunded at most once (the
ledger's unique (task_id, kind) index says the same in SQL).

The SQL backends share the statements below, written with PostgreSQL's numbered ``$n``
placeholders; a ``Dialect`` fills the few places where SQLite and PostgreSQL differ (row
locks, list parameters, rounding down, and the clock of leases and deadlines: the caller's
``now`` on SQLite, the database's own on PostgreSQL, issue 12); ``Db.fetch_long`` lets
SQLite run the console's long reads off the event loop. ``capd.store.memory`` applies the
same rules (the ``may_*`` and ``check_*`` functions) to Python objects.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from capd.constants import KEY_ID_CHARS, MAX_UNITS
from capd.errors import InsufficientFunds
from capd.store.base import (
    OPEN_STATES,
    Account,
    AdminToken,
    Ban,
    Caller,
    Claimer,
    ConsoleSession,
    KeyRecord,
    LedgerEntry,
    NewTask,
    Task,
    TaskState,
    UsageRow,
    WorkerActivity,
    usage_rows,
)
from capd.store.counters import FinalTasks
from capd.store.secrets import (
    has_proxy_secrets,
    key_hint,
    secret_digest,
    without_proxy_secrets,
    without_userinfo,
)

SYSTEM_ACTOR = "capd"  # the ledger's actor for charges and refunds
CHARGE_NOTE = "task solved"
REFUND_NOTE = "reported incorrect"
NEW_ID_TRIES = 20  # draws of ``new_id`` before create_task gives up


# -- the rules, in Python ------------------------------------------------------------------
def check_balance_move(balance: int, reserved: int, amount: int) -> int:
    """The balance after moving it by ``amount``; raises InsufficientFunds when it would fall
    below what is reserved and ValueError when it would pass MAX_UNITS."""
    after = balance + amount
    if after < reserved:
        raise InsufficientFunds()
    if after > MAX_UNITS:
        raise ValueError("balance would leave the supported range")
    return after


def check_opening(opening_units: int) -> None:
    """Raises ValueError unless an opening balance is within 0..MAX_UNITS."""
    if not 0 <= opening_units <= MAX_UNITS:
        raise ValueError("opening balance is out of range")


def finish_outcome(solution: dict[str, Any] | None, error_code: str | None) -> TaskState:
    """The final state a finish leads to; exactly one of solution and error code."""
    if (solution is None) == (error_code is None):
        raise ValueError("finish_task needs exactly one of solution and error_code")
    return TaskState.SOLVED if solution is not None else TaskState.FAILED


def may_finish(state: str, lease_owner: str | None, lease_until: float | None,
               owner: str | None, now: float) -> bool:
    """Whether a task in ``state`` may be finished (by ``owner``, when given)."""
    return may_finish_live(state, lease_owner, lease_until is not None and lease_until > now,
                           owner)


def may_finish_live(state: str, lease_owner: str | None, lease_live: bool,
                    owner: str | None) -> bool:
    """``may_finish`` given whether the task's lease is live (by the clock that rules)."""
    if state not in OPEN_STATES:
        return False
    return owner is None or (state == TaskState.LEASED and lease_owner == owner
                             and lease_live)


def may_claim(state: str, lease_until: float | None, deadline_at: float, now: float) -> bool:
    """Whether a task is up for claiming (the type and order are the caller's)."""
    return deadline_at > now and (state == TaskState.QUEUED or (
        state == TaskState.LEASED and lease_until is not None and lease_until <= now))


def may_extend(state: str, lease_owner: str | None, lease_until: float | None, owner: str,
               now: float) -> bool:
    return (state == TaskState.LEASED and lease_owner == owner and lease_until is not None
            and lease_until > now)


def may_hand_to_humans(state: str, lease_owner: str | None, lease_until: float | None,
                       deadline_at: float, owner: str, now: float) -> bool:
    """Whether ``owner`` may hand the task to humans: its live lease, deadline ahead."""
    return deadline_at > now and may_extend(state, lease_owner, lease_until, owner, now)


def may_report(state: str, task_account: int, reported_at: float | None,
               ended_at: float | None, account_id: int, now: float, window_s: float) -> bool:
    return (state == TaskState.SOLVED and task_account == account_id and reported_at is None
            and ended_at is not None and ended_at >= now - window_s)


# -- rows ----------------------------------------------------------------------------------
TASK_COLS = (
    "id, account_id, type, payload, options, state, price_units, reserved_units, created_at,"
    " deadline_at, lease_until, lease_owner, attempts, ended_at, solution, error_code,"
    " cost_units, client_ip, callback_url, reported_at"
)
# the poll path reads a task without its payload (an image can be 70 KB of base64)
TASK_COLS_LIGHT = TASK_COLS.replace("payload,", "'{}' AS payload,")
BAN_COLS = "id, scope, ip, account_id, reason, started_at, ends_at, lifted_at"


def task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0], account_id=row[1], type=row[2], payload=orjson.loads(row[3]),
        options=orjson.loads(row[4]), state=TaskState(row[5]), price_units=row[6],
        reserved_units=row[7], created_at=row[8], deadline_at=row[9], lease_until=row[10],
        lease_owner=row[11], attempts=row[12], ended_at=row[13],
        solution=orjson.loads(row[14]) if row[14] is not None else None,
        error_code=row[15], cost_units=row[16], client_ip=row[17], callback_url=row[18],
        reported_at=row[19],
    )


def ban_from_row(row: Sequence[Any]) -> Ban:
    return Ban(*row)


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- the SQL, once -------------------------------------------------------------------------
class Tx(Protocol):
    """Statements inside one transaction (or one autocommitted statement each)."""

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None: ...

    async def fetch(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]: ...

    async def execute(self, sql: str, *args: Any) -> None: ...


class Db(Tx, Protocol):
    """A backend's connection: autocommitted statements, transactions, and announcements."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    async def fetch_long(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        """A long read-only query (the console's 30-day views): a backend whose statements
        run on the event loop runs it elsewhere, so the API keeps serving meanwhile."""

    async def keys_changed(self, tx: Tx) -> None:
        """Inside ``tx``: accounts, keys, whitelists or bans changed (drop read caches)."""

    async def task_queued(self, tx: Tx, task_type: str) -> None:
        """Inside ``tx``: a task of this type was queued (wake its solvers)."""


@dataclass(frozen=True)
class AccountSearch:
    """What an operator's account search matches: an id, a name fragment, an exact key."""

    text: str
    account_id: int  # -1 when the text is not an id
    like_pattern: str  # the text as a literal LIKE fragment (escape character: backslash)


def account_search(query: str) -> AccountSearch | None:
    text = query.strip()
    if not text:
        return None
    account_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else -1
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return AccountSearch(text, account_id, f"%{escaped}%")


@dataclass(frozen=True)
class Dialect:
    """Where the two SQL dialects differ, for the statements below."""

    name: str
    row_lock: str  # after a SELECT of the row a transition is about to change
    skip_locked: str  # after the claim's inner SELECT
    sql: Callable[[str], str]  # a statement's "$1" placeholders to the driver's own
    text_list_match: str  # "{col} matches any of the text list ${n}"
    text_list: Callable[[Sequence[str]], Any]  # a Python list as that parameter
    ilike: str  # the case-insensitive LIKE operator
    floor: str  # "{x} rounded down" for a non-negative number of seconds
    greatest: str  # the larger of two values: "{greatest}(a, b)"
    # The clock of lease expiry and deadlines, in unix seconds: None, the caller's ``now``
    # (SQLite: one process, its injected clock); else an expression of the database's own
    # clock (PostgreSQL: several nodes, whose clocks may disagree, share the leases).
    db_clock: str | None = None

    def now(self, n: int) -> str:
        """The present, as lease and deadline comparisons see it: parameter ``$n`` (the
        caller's ``now``, passed only where ``now_args`` says) or the database's clock."""
        return self.db_clock or f"${n}"

    def now_args(self, now: float) -> tuple[float, ...]:
        """The trailing ``now`` parameter of a statement written with ``now(n)``."""
        return () if self.db_clock else (now,)

    def moved(self, t: int, base: int) -> str:
        """A time ``$t`` that the caller computed on its own clock, whose present is
        ``$base``, on the clock of ``now``: the same ``$t - $base`` seconds ahead."""
        if self.db_clock is None:
            return f"${t}"
        return (f"({self.db_clock} + (CAST(${t} AS DOUBLE PRECISION)"
                f" - CAST(${base} AS DOUBLE PRECISION)))")


_DOLLAR = re.compile(r"\$(\d+)")

SQLITE = Dialect(
    name="sqlite", row_lock="", skip_locked="",  # BEGIN IMMEDIATE locks the whole file
    sql=lambda text: _DOLLAR.sub(r"?\1", text),  # SQLite's ?NNN: numbered, reusable
    text_list_match="{col} IN (SELECT value FROM json_each(${n}))",
    text_list=lambda values: json_text(list(values)),
    ilike="LIKE",  # SQLite's LIKE ignores ASCII case already
    floor="CAST({x} AS INTEGER)",  # truncation: the same as floor for times after 1970
    greatest="MAX")  # SQLite's MAX of two arguments is a scalar function

POSTGRES = Dialect(
    name="postgres", row_lock=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED",
    sql=lambda text: text,
    text_list_match="{col} = ANY(${n}::text[])",
    text_list=list,
    ilike="ILIKE",
    floor="floor({x})",
    greatest="GREATEST",
    db_clock="CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)")
# PostgreSQL with leases and deadlines on the caller's clock, for tests that drive time
POSTGRES_CALLER_CLOCK = dataclasses.replace(POSTGRES, db_clock=None)


class Statements:
    """The transitions' SQL in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = d = dialect
        q = d.sql
        account_cols = "a.id, a.name, a.balance_units, a.reserved_units, a.created_at"
        self.account = q(f"SELECT {account_cols} FROM accounts a WHERE a.id = $1")
        self.account_for_key = q(f"SELECT {account_cols} FROM accounts a"
                                 f" JOIN api_keys k ON k.account_id = a.id"
                                 f" WHERE k.key_hash = $1")
        self.find_accounts = q(
            f"SELECT {account_cols} FROM accounts a WHERE a.id = $1"
            f" OR a.name {d.ilike} $2 ESCAPE '\\'"
            " OR a.id IN (SELECT account_id FROM api_keys WHERE key_hash = $3)"
            " ORDER BY a.id LIMIT $4")
        self.keys = q("SELECT key_hash, hint, account_id, created_at, revoked_at FROM api_keys"
                      " WHERE account_id = $1 ORDER BY created_at, key_hash")
        self.keys_by_id = q("SELECT key_hash, hint, account_id, created_at, revoked_at"
                            f" FROM api_keys WHERE substr(key_hash, 1, {KEY_ID_CHARS}) = $1"
                            " ORDER BY key_hash")
        self.whitelist = q("SELECT network FROM whitelist WHERE account_id = $1"
                           " ORDER BY network")
        self.ledger = q("SELECT id, account_id, at, kind, amount_units, task_id, actor, note"
                        " FROM ledger WHERE account_id = $1 ORDER BY id DESC LIMIT $2")
        self.ledger_sum = q("SELECT COALESCE(SUM(amount_units), 0) FROM ledger"
                            " WHERE account_id = $1")
        self.task = q(f"SELECT {TASK_COLS} FROM tasks WHERE id = $1")
        self.task_light = q(f"SELECT {TASK_COLS_LIGHT} FROM tasks WHERE id = $1")
        self.overdue = q(f"SELECT {TASK_COLS} FROM tasks WHERE state IN ('queued', 'leased')"
                         f" AND deadline_at <= {d.now(2)} ORDER BY deadline_at LIMIT $1")
        # the redundant IN term lets SQLite use the partial index tasks_open (its planner does
        # not see that state = 'queued' implies the index's condition): without it every
        # createTask scanned the whole task table
        self.queue_depth = q("SELECT COUNT(*) FROM tasks WHERE type = $1 AND state = 'queued'"
                             " AND state IN ('queued', 'leased')")
        self.insert_account = q("INSERT INTO accounts (name, created_at, balance_units)"
                                " VALUES ($1, $2, $3) RETURNING id")
        self.insert_key = q("INSERT INTO api_keys (key_hash, hint, account_id, created_at)"
                            " VALUES ($1, $2, $3, $4)")
        self.revoke_key = q("UPDATE api_keys SET revoked_at = $1 WHERE key_hash = $2"
                            " AND revoked_at IS NULL")
        self.insert_ledger = q("INSERT INTO ledger (account_id, at, kind, amount_units,"
                               " task_id, actor, note) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        self.move_balance = q("UPDATE accounts SET balance_units = balance_units + $1"
                              " WHERE id = $2")
        self.funds = q("SELECT balance_units, reserved_units FROM accounts WHERE id = $1"
                       + d.row_lock)
        self.reserve = q("UPDATE accounts SET reserved_units = reserved_units + $1"
                         " WHERE id = $2 AND balance_units - reserved_units >= $1 RETURNING id")
        # an id the ledger names (a charged task since deleted by retention) is never
        # drawn again: the ledger's task ids stay unambiguous (ledger_once_per_task)
        self.task_id_in_ledger = q("SELECT 1 FROM ledger WHERE task_id = $1 LIMIT 1")
        self.insert_task = q(
            "INSERT INTO tasks (id, account_id, type, payload, options, state, price_units,"
            " reserved_units, created_at, deadline_at, client_ip, callback_url, proxy_secrets)"
            f" VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6, $7, {d.moved(8, 7)}, $9, $10, $11)"
            " ON CONFLICT (id) DO NOTHING RETURNING id")
        type_match = d.text_list_match.format(col="type", n=3)

        def claim(only: str) -> str:
            return q(
                f"UPDATE tasks SET state = 'leased', lease_until = {d.moved(1, 4)},"
                f" lease_owner = $2, attempts = attempts + 1 WHERE id IN ("
                f"  SELECT id FROM tasks WHERE {type_match}"
                f"   AND state IN ('queued', 'leased'){only}"
                f"   AND (state = 'queued' OR lease_until <= {d.now(4)})"
                f"   AND deadline_at > {d.now(4)}"
                f"  ORDER BY created_at, id LIMIT $5{d.skip_locked}) RETURNING {TASK_COLS}")
        self.claim = claim("")
        self.claim_for_reader = claim(" AND for_humans = 0")  # the built-in reading
        self.hand_to_humans = q(
            "UPDATE tasks SET state = 'queued', lease_until = NULL, lease_owner = NULL,"
            " for_humans = 1 WHERE id = $1 AND state = 'leased' AND lease_owner = $2"
            f" AND lease_until > {d.now(3)} AND deadline_at > {d.now(3)} RETURNING type")
        self.task_to_finish = q("SELECT state, account_id, reserved_units, price_units,"
                                f" lease_owner, CASE WHEN lease_until > {d.now(2)} THEN 1"
                                " ELSE 0 END, proxy_secrets, callback_url"
                                " FROM tasks WHERE id = $1" + d.row_lock)
        self.payload = q("SELECT payload FROM tasks WHERE id = $1")
        # the payload less its proxy credentials ($7; NULL: it has none), the callback URL
        # less its user:password ($8)
        self.finish = q(
            f"UPDATE tasks SET state = $1, ended_at = $2, solution = $3, error_code = $4,"
            f" cost_units = $5, reserved_units = 0, lease_until = NULL,"
            f" payload = COALESCE($7, payload), callback_url = $8, proxy_secrets = 0"
            f" WHERE id = $6 RETURNING {TASK_COLS}")
        # the finished task's callback, due at once (capd.store.outbox delivers it)
        self.queue_callback = q(
            "INSERT INTO callbacks_outbox (task_id, account_id, url, body, created_at,"
            " next_at) VALUES ($1, $2, $3, $4, $5, $5)")
        self.settle = q("UPDATE accounts SET reserved_units = reserved_units - $1,"
                        " balance_units = balance_units - $2 WHERE id = $3")
        until = f"{d.greatest}(lease_until, {d.moved(1, 4)})"
        self.extend_keep_later = q(
            f"UPDATE tasks SET lease_until = CASE WHEN {until} < deadline_at THEN {until}"
            " ELSE deadline_at END WHERE id = $2 AND state = 'leased' AND lease_owner = $3"
            f" AND lease_until > {d.now(4)} RETURNING lease_until")
        until = d.moved(1, 4)
        self.extend = q(
            f"UPDATE tasks SET lease_until = CASE WHEN {until} < deadline_at THEN {until}"
            " ELSE deadline_at END WHERE id = $2 AND state = 'leased' AND lease_owner = $3"
            f" AND lease_until > {d.now(4)} RETURNING lease_until")
        self.report = q(
            "UPDATE tasks SET reported_at = $1 WHERE id = $2 AND account_id = $3"
            " AND state = 'solved' AND reported_at IS NULL AND ended_at >= $4"
            " RETURNING cost_units")

        # -- the console: admin tokens, sessions, read-only views --------------------------
        self.insert_admin_token = q("INSERT INTO admin_tokens (token_hash, name, created_at)"
                                    " VALUES ($1, $2, $3) RETURNING id")
        self.revoke_admin_token = q("UPDATE admin_tokens SET revoked_at = $1"
                                    " WHERE token_hash = $2 AND revoked_at IS NULL RETURNING id")
        self.admin_token = q("SELECT id, name, created_at FROM admin_tokens"
                             " WHERE token_hash = $1 AND revoked_at IS NULL")
        session_cols = ("token_hash, kind, account_id, key_hash, admin_token_hash, csrf,"
                        " created_at, expires_at")
        self.insert_session = q(f"INSERT INTO console_sessions ({session_cols})"
                                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        self.session = q(f"SELECT {session_cols} FROM console_sessions"
                         " WHERE token_hash = $1 AND expires_at > $2")
        self.session_key = q("UPDATE console_sessions SET key_hash = $1 WHERE token_hash = $2")
        self.delete_session = q("DELETE FROM console_sessions WHERE token_hash = $1")
        self.sweep_sessions = q("DELETE FROM console_sessions WHERE expires_at <= $1"
                                " RETURNING token_hash")
        # usage, by (only this account?, only this ip?): the statement each filter needs,
        # so that an index on either can serve it. The refund lookup runs only for
        # reported tasks (few), inside the CASE.
        bucket = d.floor.format(x="t.created_at / $1") + " * $1"
        self.usage: dict[tuple[bool, bool], str] = {}
        for by_account in (False, True):
            for by_ip in (False, True):
                where = (" AND t.account_id = $4" if by_account else "") + (
                    f" AND t.client_ip = ${4 + by_account}" if by_ip else "")
                self.usage[(by_account, by_ip)] = q(
                    f"SELECT {bucket}, t.type, COUNT(*),"
                    " SUM(CASE WHEN t.state = 'solved' THEN 1 ELSE 0 END),"
                    " SUM(CASE WHEN t.state = 'failed' THEN 1 ELSE 0 END),"
                    " SUM(t.cost_units) - COALESCE(SUM(CASE WHEN t.reported_at IS NOT NULL"
                    " THEN (SELECT l.amount_units FROM ledger l WHERE l.task_id = t.id"
                    " AND l.kind = 'refund') END), 0)"
                    f" FROM tasks t WHERE t.created_at >= $2 AND t.created_at < $3{where}"
                    " GROUP BY 1, 2")
        durations = ("SELECT type, ended_at - created_at FROM tasks WHERE state = 'solved'"
                     " AND ended_at >= $1")
        self.solve_durations = {
            False: q(durations + " ORDER BY ended_at DESC LIMIT $2"),
            True: q(durations + " AND account_id = $3 ORDER BY ended_at DESC LIMIT $2")}
        self.recent_tasks = q(f"SELECT {TASK_COLS_LIGHT} FROM tasks WHERE account_id = $1"
                              " ORDER BY created_at DESC, id DESC LIMIT $2")
        self.live_leases = q(
            "SELECT type, COUNT(*), SUM(CASE WHEN lease_owner LIKE 'builtin-%' THEN 1 ELSE 0"
            " END) FROM tasks WHERE state = 'leased' AND state IN ('queued', 'leased')"
            f" AND lease_until > {d.now(1)}"
            " GROUP BY type")
        # bans (issue 12): one active ban per slot (scope, ip, account), held by the unique
        # partial index bans_one_active (migration 0005); a slot's ban past its end is
        # retired ('expired') before the next one starts, a live one is extended
        slot = ("scope = $1 AND ip = $2 AND COALESCE(account_id, 0) = COALESCE(CAST($3 AS"
                " BIGINT), 0) AND lifted_at IS NULL AND lifted_by IS NULL")
        self.retire_expired_ban = q(
            f"UPDATE bans SET lifted_by = 'expired' WHERE {slot} AND ends_at <= $4")
        self.upsert_ban = q(
            "INSERT INTO bans (scope, ip, account_id, reason, started_at, ends_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (scope, ip, COALESCE(account_id, 0))"
            " WHERE lifted_at IS NULL AND lifted_by IS NULL"
            f" DO UPDATE SET ends_at = {d.greatest}(bans.ends_at, excluded.ends_at)"
            " RETURNING id")
        self.open_tasks = q(
            "SELECT type, SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN state = 'leased' THEN 1 ELSE 0 END) FROM tasks"
            " WHERE state IN ('queued', 'leased') GROUP BY type")


class SqlTransitions:
    """The transitions, and the plain reads both dialects write alike, as Store methods
    for a SQL backend: the backend sets ``_sql`` (the statements of its dialect), ``_tdb``
    (its connection as a ``Db``) and ``_final_tasks`` (its cache of finished tasks for the
    poll path). Cached reads (keys, bans) stay with each backend: they cache differently."""

    _sql: Statements
    _tdb: Db
    _final_tasks: FinalTasks

    @property
    def database_clock(self) -> bool:
        """Whether leases and deadlines follow the database's clock (``Store``)."""
        return self._sql.dialect.db_clock is not None

    if TYPE_CHECKING:  # the backend's own (not defined here, so the MRO finds it)
        async def _workers_seen(self) -> dict[str, float]:
            """type -> when a worker last asked for it (``OneProcess`` keeps it in memory,
            PostgreSQL in a table every node writes)."""

        async def caller_for_key_digest(self, digest: str) -> Caller | None: ...

        async def revoke_key_digest(self, digest: str, now: float) -> bool: ...

    async def caller_for_key(self, key: str) -> Caller | None:
        return await self.caller_for_key_digest(secret_digest(key))

    async def revoke_key(self, key: str, now: float) -> bool:
        return await self.revoke_key_digest(secret_digest(key), now)

    async def account(self, account_id: int) -> Account | None:
        row = await self._tdb.fetchrow(self._sql.account, account_id)
        return Account(*row) if row else None

    async def account_for_key(self, key: str) -> Account | None:
        """The account a key (live or revoked) belongs to."""
        row = await self._tdb.fetchrow(self._sql.account_for_key, secret_digest(key))
        return Account(*row) if row else None

    async def keys(self, account_id: int) -> list[KeyRecord]:
        return [KeyRecord(*r) for r in await self._tdb.fetch(self._sql.keys, account_id)]

    async def keys_by_id(self, key_id: str) -> list[KeyRecord]:
        return [KeyRecord(*r) for r in await self._tdb.fetch(self._sql.keys_by_id, key_id)]

    async def find_accounts(self, query: str, limit: int = 50) -> list[Account]:
        search = account_search(query)
        if search is None or limit <= 0:
            return []
        rows = await self._tdb.fetch(self._sql.find_accounts, search.account_id,
                                     search.like_pattern, secret_digest(search.text), limit)
        return [Account(*r) for r in rows]

    async def whitelist(self, account_id: int) -> list[str]:
        return [r[0] for r in await self._tdb.fetch(self._sql.whitelist, account_id)]

    async def ledger(self, account_id: int, limit: int = 20) -> list[LedgerEntry]:
        rows = await self._tdb.fetch(self._sql.ledger, account_id, limit)
        return [LedgerEntry(*r) for r in rows]

    async def ledger_sum(self, account_id: int) -> int:
        row = await self._tdb.fetchrow(self._sql.ledger_sum, account_id)
        return int(row[0]) if row else 0

    async def get_task(self, task_id: int, with_payload: bool = True) -> Task | None:
        if not with_payload:
            final = self._final_tasks.get(task_id)
            if final is not None:
                return final
        row = await self._tdb.fetchrow(self._sql.task if with_payload else self._sql.task_light,
                                       task_id)
        if row is None:
            return None
        task = task_from_row(row)
        if not with_payload:
            self._final_tasks.keep(task)
        return task

    async def overdue_tasks(self, now: float, limit: int = 100) -> list[Task]:
        sql = self._sql
        rows = await self._tdb.fetch(sql.overdue, limit, *sql.dialect.now_args(now))
        return [task_from_row(r) for r in rows]

    async def queue_depth(self, task_type: str) -> int:
        row = await self._tdb.fetchrow(self._sql.queue_depth, task_type)
        return int(row[0]) if row else 0

    async def create_account(self, name: str, key: str, now: float, *, opening_units: int = 0,
                             actor: str = "operator", note: str = "") -> int:
        check_opening(opening_units)
        sql = self._sql
        async with self._tdb.transaction() as tx:
            row = await tx.fetchrow(sql.insert_account, name, now, opening_units)
            assert row is not None
            account_id = int(row[0])
            await tx.execute(sql.insert_key, secret_digest(key), key_hint(key), account_id, now)
            if opening_units > 0:
                await tx.execute(sql.insert_ledger, account_id, now, "topup", opening_units,
                                 None, actor, note)
            await self._tdb.keys_changed(tx)
        return account_id

    async def adjust_balance(self, account_id: int, amount_units: int, kind: str,
                             actor: str, note: str, now: float) -> int:
        sql = self._sql
        async with self._tdb.transaction() as tx:
            row = await tx.fetchrow(sql.funds, account_id)
            if row is None:
                raise KeyError(account_id)
            after = check_balance_move(row[0], row[1], amount_units)
            await tx.execute(sql.insert_ledger, account_id, now, kind, amount_units, None,
                             actor, note)
            await tx.execute(sql.move_balance, amount_units, account_id)
        return int(after)

    async def create_task(self, task: NewTask, new_id: Callable[[], int]) -> int:
        payload, options = json_text(task.payload), json_text(task.options)
        sql = self._sql
        async with self._tdb.transaction() as tx:
            if await tx.fetchrow(sql.reserve, task.price_units, task.account_id) is None:
                raise InsufficientFunds()
            for _ in range(NEW_ID_TRIES):
                task_id = new_id()
                if await tx.fetchrow(sql.task_id_in_ledger, task_id) is not None:
                    continue
                row = await tx.fetchrow(
                    sql.insert_task, task_id, task.account_id, task.type, payload, options,
                    task.price_units, task.created_at, task.deadline_at, task.client_ip,
                    task.callback_url, int(has_proxy_secrets(task.payload)))
                if row is not None:
                    await self._tdb.task_queued(tx, task.type)
                    return int(row[0])
            raise RuntimeError("could not draw an unused task id")

    async def claim_tasks(self, types: list[str], limit: int, owner: str,
                          lease_s: float, now: float,
                          claimer: Claimer = Claimer.EXTERNAL) -> list[Task]:
        if not types or limit <= 0:
            return []
        sql = self._sql
        # one statement: atomic on its own (SKIP LOCKED hands each row to one claimer)
        rows = await self._tdb.fetch(
            sql.claim_for_reader if claimer == Claimer.READER else sql.claim,
            now + lease_s, owner, sql.dialect.text_list(types), now, limit)
        return sorted((task_from_row(r) for r in rows), key=lambda t: (t.created_at, t.id))

    async def hand_to_humans(self, task_id: int, owner: str, now: float) -> bool:
        sql = self._sql
        async with self._tdb.transaction() as tx:
            row = await tx.fetchrow(sql.hand_to_humans, task_id, owner,
                                    *sql.dialect.now_args(now))
            if row is None:
                return False
            await self._tdb.task_queued(tx, row[0])
        return True

    async def finish_task(self, task_id: int, now: float, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None,
                          callback: Callable[[Task], str] | None = None) -> Task | None:
        outcome = finish_outcome(solution, error_code)
        sql = self._sql
        async with self._tdb.transaction() as tx:
            row = await tx.fetchrow(sql.task_to_finish, task_id, *sql.dialect.now_args(now))
            if row is None:
                return None
            state, account_id, reserved, price, lease_owner, lease_live, secrets, url = row
            if not may_finish_live(state, lease_owner, bool(lease_live), owner):
                return None
            charge = price if outcome == TaskState.SOLVED else 0
            payload = None  # unchanged
            if secrets:
                kept = await tx.fetchrow(sql.payload, task_id)
                assert kept is not None
                payload = json_text(without_proxy_secrets(orjson.loads(kept[0])))
            done = await tx.fetchrow(
                sql.finish, outcome.value, now,
                json_text(solution) if solution is not None else None, error_code, charge,
                task_id, payload, without_userinfo(url))
            await tx.execute(sql.settle, reserved, charge, account_id)
            if charge:
                await tx.execute(sql.insert_ledger, account_id, now, "charge", -charge,
                                 task_id, SYSTEM_ACTOR, CHARGE_NOTE)
            assert done is not None
            finished = task_from_row(done)
            if callback is not None and url:  # the URL as given: credentials included
                await tx.execute(sql.queue_callback, task_id, account_id, url,
                                 callback(finished), now)
        return finished

    async def extend_lease(self, task_id: int, owner: str, until: float,
                           now: float, *, keep_later: bool = False) -> float | None:
        sql = self._sql
        row = await self._tdb.fetchrow(sql.extend_keep_later if keep_later else sql.extend,
                                       until, task_id, owner, now)
        return float(row[0]) if row else None

    async def report_task(self, task_id: int, account_id: int, refund: bool,
                          now: float, window_s: float) -> bool:
        sql = self._sql
        async with self._tdb.transaction() as tx:
            row = await tx.fetchrow(sql.report, now, task_id, account_id, now - window_s)
            if row is None:
                return False
            cost = int(row[0])
            if refund and cost > 0:
                await tx.execute(sql.insert_ledger, account_id, now, "refund", cost, task_id,
                                 SYSTEM_ACTOR, REFUND_NOTE)
                await tx.execute(sql.move_balance, cost, account_id)
        return True

    async def add_ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                      now: float, ends_at: float) -> int:
        sql = self._sql
        async with self._tdb.transaction() as tx:
            await tx.execute(sql.retire_expired_ban, scope, ip, account_id, now)
            row = await tx.fetchrow(sql.upsert_ban, scope, ip, account_id, reason, now,
                                    ends_at)
            await self._tdb.keys_changed(tx)
        assert row is not None
        return int(row[0])

    # -- the console: admin tokens, sessions, read-only views ------------------------------
    async def create_admin_token(self, token_hash: str, name: str, now: float) -> int:
        row = await self._tdb.fetchrow(self._sql.insert_admin_token, token_hash, name, now)
        assert row is not None
        return int(row[0])

    async def revoke_admin_token(self, token_hash: str, now: float) -> bool:
        return await self._tdb.fetchrow(self._sql.revoke_admin_token, now, token_hash) is not None

    async def admin_token(self, token_hash: str) -> AdminToken | None:
        row = await self._tdb.fetchrow(self._sql.admin_token, token_hash)
        return AdminToken(*row) if row else None

    async def create_console_session(self, session: ConsoleSession) -> None:
        s = session
        await self._tdb.execute(self._sql.insert_session, s.token_hash, s.kind, s.account_id,
                                s.key_digest, s.admin_token_hash, s.csrf, s.created_at,
                                s.expires_at)

    async def console_session(self, token_hash: str, now: float) -> ConsoleSession | None:
        row = await self._tdb.fetchrow(self._sql.session, token_hash, now)
        return ConsoleSession(*row) if row else None

    async def set_console_session_key(self, token_hash: str, key_digest: str) -> None:
        await self._tdb.execute(self._sql.session_key, key_digest, token_hash)

    async def delete_console_session(self, token_hash: str) -> None:
        await self._tdb.execute(self._sql.delete_session, token_hash)

    async def sweep_console_sessions(self, now: float) -> int:
        return len(await self._tdb.fetch(self._sql.sweep_sessions, now))

    async def usage(self, account_id: int | None, since: float, until: float, bucket_s: float,
                    ip: str | None = None) -> list[UsageRow]:
        args: list[Any] = [float(bucket_s), since, until]
        if account_id is not None:
            args.append(account_id)
        if ip is not None:
            args.append(ip)
        sql = self._sql.usage[(account_id is not None, ip is not None)]
        rows = await self._tdb.fetch_long(sql, *args)
        return usage_rows(tuple(r) for r in rows)

    async def solve_durations(self, account_id: int | None, since: float,
                              limit: int = 10_000) -> list[tuple[str, float]]:
        if account_id is None:
            rows = await self._tdb.fetch_long(self._sql.solve_durations[False], since, limit)
        else:
            rows = await self._tdb.fetch_long(self._sql.solve_durations[True], since, limit,
                                              account_id)
        return [(r[0], float(r[1])) for r in rows]

    async def recent_tasks(self, account_id: int, limit: int = 50) -> list[Task]:
        rows = await self._tdb.fetch(self._sql.recent_tasks, account_id, limit)
        return [task_from_row(r) for r in rows]

    async def workers_online(self, now: float) -> list[WorkerActivity]:
        leases = {r[0]: (int(r[1]), int(r[2] or 0))
                  for r in await self._tdb.fetch(self._sql.live_leases,
                                                 *self._sql.dialect.now_args(now))}
        seen = await self._workers_seen()
        return [WorkerActivity(t, seen.get(t), *leases.get(t, (0, 0)))
                for t in sorted(set(leases) | set(seen))]

    async def open_tasks(self) -> dict[str, tuple[int, int]]:
        rows = await self._tdb.fetch(self._sql.open_tasks)
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}
