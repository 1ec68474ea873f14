"""The Store protocol every backend implements, and the records it returns.

Each method is one atomic primitive; the rules above it (ledger, bans, polling limits)
live in ``capd.domain`` and ``capd.service``. Money is in integer units of
``capd.constants.UNITS_PER_USD``; times are UTC unix seconds (float), always passed
in by the caller — a store never reads a clock. The task and money transitions, and the
states they move between, are written down once in ``capd.store.transitions``.

A backend that cannot reach its database (locked or full file, server down, pool
exhausted) raises ``StoreUnavailable``, never its driver's own exception.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from capd.constants import KEY_ID_CHARS


# An OSError (the store's I/O failed), not a capd.errors.CapdError: a CapdError is an answer
# (HTTP 200 with its error code), while this is the front doors' HTTP 503
# ERROR_SERVICE_UNAVAILABLE; the CLI reports an OSError as a database error.
class StoreUnavailable(OSError):
    """Raised when the database cannot answer now (locked, full, unreachable); retry later."""


_Cls = TypeVar("_Cls", bound=type)


def raises_store_unavailable(is_outage: Callable[[BaseException], bool]
                             ) -> Callable[[_Cls], _Cls]:
    """Class decorator for a backend: its public coroutine methods, its own and those it
    inherits, raise StoreUnavailable (chained to the driver's error) wherever
    ``is_outage`` calls that error an outage."""
    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except StoreUnavailable:
                raise
            except Exception as exc:
                if is_outage(exc):
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
                raise
        return guarded

    def decorate(cls: _Cls) -> _Cls:
        for name, value in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if not name.startswith("_"):
                setattr(cls, name, wrap(value))
        return cls
    return decorate


class TaskState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    SOLVED = "solved"
    FAILED = "failed"


OPEN_STATES = (TaskState.QUEUED, TaskState.LEASED)


class Claimer(StrEnum):
    """Who asks for work. ``READER``: capd's built-in reading (the in-process OCR, or a
    ``capd worker`` process); ``EXTERNAL``: anyone else speaking the worker protocol (a
    person at a solving desk, another program). A task handed to humans
    (``hand_to_humans``) is claimed by external workers only."""

    READER = "reader"
    EXTERNAL = "external"


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    balance_units: int
    reserved_units: int
    created_at: float


@dataclass(frozen=True)
class Caller:
    """What a request needs to know about the account behind a key."""

    account_id: int
    whitelist: tuple[str, ...]


@dataclass(frozen=True)
class KeyRecord:
    """An API key as the store keeps it: never the key itself (``capd.store.secrets``)."""

    digest: str  # SHA-256 of the key, 64 hex characters
    hint: str  # the key's first characters, to tell an account's keys apart
    account_id: int
    created_at: float
    revoked_at: float | None

    @property
    def key_id(self) -> str:
        """How operators and pages name a key without showing it: a digest prefix."""
        return self.digest[:KEY_ID_CHARS]


@dataclass(frozen=True)
class NewTask:
    account_id: int
    type: str
    payload: dict[str, Any]
    options: dict[str, Any]
    price_units: int
    created_at: float
    deadline_at: float
    client_ip: str
    callback_url: str | None = None


@dataclass(frozen=True)
class Task:
    id: int
    account_id: int
    type: str
    payload: dict[str, Any]
    options: dict[str, Any]
    state: TaskState
    price_units: int
    reserved_units: int
    created_at: float
    deadline_at: float
    lease_until: float | None
    lease_owner: str | None
    attempts: int
    ended_at: float | None
    solution: dict[str, Any] | None
    error_code: str | None
    cost_units: int
    client_ip: str
    callback_url: str | None
    reported_at: float | None


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    account_id: int
    at: float
    kind: str  # topup, charge, refund, adjustment
    amount_units: int
    task_id: int | None
    actor: str
    note: str


@dataclass(frozen=True)
class Ban:
    id: int
    scope: str  # "ip" (ERROR_IP_BANNED) or "account_ip" (ERROR_IP_BLOCKED)
    ip: str
    account_id: int | None
    reason: str
    started_at: float
    ends_at: float
    lifted_at: float | None


@dataclass(frozen=True)
class WorkerToken:
    """A live worker token (the token itself is never stored, only its digest)."""

    id: int
    name: str
    types: tuple[str, ...] | None  # None: every type
    created_at: float


# -- console (web dashboard) records --------------------------------------------------------
@dataclass(frozen=True)
class AdminToken:
    """A live operator token for the web console (stored only as its SHA-256 digest)."""

    id: int
    name: str
    created_at: float


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in console session. The cookie holds a random token; the store holds its
    SHA-256 digest. An account session names the digest of the API key it was opened with,
    an operator session the digest of its admin token, so revoking either ends the session."""

    token_hash: str
    kind: str  # "account" or "admin"
    account_id: int | None
    key_digest: str | None
    admin_token_hash: str | None
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class UsageRow:
    """Tasks and spending of one task type in one time bucket (``bucket_start``, UTC)."""

    bucket_start: float
    type: str
    created: int = 0
    solved: int = 0
    failed: int = 0
    spent_units: int = 0  # charges less refunds booked in the bucket


@dataclass(frozen=True)
class WorkerActivity:
    """What the store knows of the solvers of one task type: when a worker last asked for
    it (None: never, or not since this process started for SQLite) and the live leases."""

    type: str
    last_seen: float | None
    leases_held: int
    builtin_leases: int


def usage_rows(rows: Iterable[Sequence[Any]]) -> list[UsageRow]:
    """UsageRows from (bucket, type, created, solved, failed, spent) result rows."""
    out = [UsageRow(float(r[0]), r[1], int(r[2]), int(r[3] or 0), int(r[4] or 0),
                    int(r[5] or 0)) for r in rows]
    return sorted(out, key=lambda u: (u.bucket_start, u.type))


# -- retention and the callback outbox (issue 12) ----------------------------------------
class CallbackState(StrEnum):
    PENDING = "pending"  # due at ``next_at``; claimed while ``leased_until`` is ahead
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: refused by the guard, or out of retries


@dataclass(frozen=True)
class Callback:
    """One row of the callback outbox: a finished task's result to POST to its URL."""

    id: int
    task_id: int
    account_id: int
    url: str
    body: str  # the JSON text to POST
    attempts: int  # attempts started, the claimed one included
    next_at: float
    state: CallbackState
    leased_until: float | None


class Store(Protocol):
    """Persistence primitives. Every method is atomic on its own."""

    # Whether lease expiry and deadlines follow the database's clock (PostgreSQL, issue
    # 12) rather than the ``now`` each call passes: then only the store can tell whether a
    # lease has ended, and callers must not judge it by their own clock.
    @property
    def database_clock(self) -> bool: ...

    async def migrate(self) -> int:
        """Apply pending schema migrations; returns the schema version now in force."""

    async def close(self) -> None: ...

    async def subscribe(self, on_task: Callable[[str], None]) -> None:
        """Call ``on_task(type)`` when another node queues work (no-op for one process)."""

    # accounts and keys: a method that takes ``key`` takes the key itself and keeps or
    # looks up only its digest and hint (``capd.store.secrets``)
    async def create_account(self, name: str, key: str, now: float, *, opening_units: int = 0,
                             actor: str = "operator", note: str = "") -> int:
        """Create an account holding ``key``, with ``opening_units`` as a ``topup`` ledger
        entry by ``actor`` when positive, in one transaction; returns its id.

        Raises ValueError (nothing written) when ``opening_units`` is negative or over
        ``capd.constants.MAX_UNITS``."""

    async def find_accounts(self, query: str, limit: int = 50) -> list[Account]:
        """Accounts whose id is ``query`` (when it is a number), whose name contains it
        (case-insensitive), or that hold it as a key (live or revoked); by id, at most
        ``limit``."""

    async def add_key(self, account_id: int, key: str, now: float) -> None: ...

    async def revoke_key(self, key: str, now: float) -> bool:
        """Revoke a live key; False when it is unknown or already revoked."""

    async def revoke_key_digest(self, digest: str, now: float) -> bool:
        """``revoke_key`` for the key with this digest."""

    async def caller_for_key(self, key: str) -> Caller | None:
        """The account behind a live key, with its whitelist; None when unknown/revoked."""

    async def caller_for_key_digest(self, digest: str) -> Caller | None:
        """``caller_for_key`` for the key with this digest (a console session's)."""

    async def account(self, account_id: int) -> Account | None: ...

    async def account_for_key(self, key: str) -> Account | None:
        """The account a key (live or revoked) belongs to."""

    async def keys(self, account_id: int) -> list[KeyRecord]: ...

    async def keys_by_id(self, key_id: str) -> list[KeyRecord]:
        """The keys (live or revoked) whose ``key_id`` (digest prefix) is ``key_id``:
        how an operator names a key that nobody holds any more."""

    async def whitelist(self, account_id: int) -> list[str]: ...

    async def whitelist_add(self, account_id: int, network: str) -> bool: ...

    async def whitelist_remove(self, account_id: int, network: str) -> bool: ...

    # money
    async def adjust_balance(self, account_id: int, amount_units: int, kind: str, actor: str,
                             note: str, now: float) -> int:
        """Append a ledger entry and move the balance by it, atomically; returns the balance.

        Raises InsufficientFunds when the balance would fall below what is reserved, and
        ValueError when it would pass ``capd.constants.MAX_UNITS``; KeyError for an
        unknown account.
        """

    async def ledger(self, account_id: int, limit: int = 20) -> list[LedgerEntry]: ...

    async def ledger_sum(self, account_id: int) -> int: ...

    # tasks
    async def create_task(self, task: NewTask, new_id: Callable[[], int]) -> int:
        """Reserve the task's price and queue it, atomically; returns its id.

        Raises InsufficientFunds (nothing written) when balance minus reservations is
        below the price. ``new_id`` is called until it yields an unused id: one that no
        task has and that no ledger entry names (a charged task deleted by retention keeps
        its id, so that the ledger never points at two tasks).
        """

    async def get_task(self, task_id: int, with_payload: bool = True) -> Task | None:
        """A task by id; without its payload (``{}`` instead) when not needed."""

    async def claim_tasks(self, types: list[str], limit: int, owner: str, lease_s: float,
                          now: float, claimer: Claimer = Claimer.EXTERNAL) -> list[Task]:
        """Lease up to ``limit`` open tasks of ``types`` (queued, or leased with the lease
        expired) whose deadline is still ahead, oldest first. Each is handed to one caller.
        A ``READER`` never gets a task handed to humans (``hand_to_humans``)."""

    async def hand_to_humans(self, task_id: int, owner: str, now: float) -> bool:
        """The human fallback: a task whose built-in reading failed goes back to the queue
        (leased -> queued, lease cleared, deadline kept), marked so that from now on only
        ``EXTERNAL`` claimers get it. Only ``owner``, holding a live lease on an open task
        whose deadline is ahead, may hand it over; False (nothing changed) otherwise.
        No money moves: the reservation stays until the task is finished."""

    async def finish_task(self, task_id: int, now: float, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None,
                          callback: Callable[[Task], str] | None = None) -> Task | None:
        """Complete an open task exactly once: with a solution (capture the reservation as a
        charge) or an error code (release it). With ``owner``, only the holder of a live lease
        may complete. Returns the finished task, or None when nothing changed. The finished
        task keeps no proxy login or password in its payload and no user:password in its
        callback URL (``capd.store.secrets``).

        With ``callback``, when the finished task has a callback URL, a pending outbox row
        (due at ``now``, body ``callback(finished task)``) is written in the same
        transaction: a task is never finished without its callback queued."""

    async def extend_lease(self, task_id: int, owner: str, until: float,
                           now: float, *, keep_later: bool = False) -> float | None:
        """Move a live lease's end to ``until`` (never past the task's deadline; with
        ``keep_later``, never earlier than it is either); returns the new end, or None
        when ``owner`` holds no live lease on the task. The lease's own end is compared
        in the store, so that on the database's clock (PostgreSQL) a node's skew cannot
        move it: ``until - now`` is what counts there."""

    async def overdue_tasks(self, now: float, limit: int = 100) -> list[Task]:
        """Open tasks whose deadline has passed."""

    async def report_task(self, task_id: int, account_id: int, refund: bool, now: float,
                          window_s: float) -> bool:
        """Record a report on a solved task of the account, once, within ``window_s`` of its
        solution; with ``refund``, return its charge to the balance. False otherwise."""

    async def queue_depth(self, task_type: str) -> int:
        """Tasks of the type waiting for a solver (queued, not leased)."""

    # limits and bans
    async def incr_counter(self, name: str, window_s: float, now: float) -> int:
        """Add one to a counter that resets ``window_s`` after its first hit; returns it."""

    async def incr_counters(self, counters: list[tuple[str, float]], now: float) -> list[int]:
        """``incr_counter`` for several (name, window_s) at once, in one round trip."""

    async def sweep_counters(self, now: float) -> int:
        """Forget counters whose window has ended; returns how many."""

    async def add_ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                      now: float, ends_at: float) -> int:
        """Ban the slot (``scope``, ``ip``, ``account_id``) until ``ends_at``; the ban's id.

        At most one ban per slot is active (not lifted, ending after ``now``), and the
        database holds that rule, whatever the nodes do at once: when the slot has an
        active ban it is extended (its end becomes the later of the two; its reason and
        start stay), else a new ban starts (a ban of the slot already over is retired).
        Lifting the one active ban leaves the slot free."""

    async def active_ban(self, scope: str, ip: str, account_id: int | None,
                         now: float) -> Ban | None: ...

    async def extend_ban(self, ban_id: int, ends_at: float) -> None: ...

    async def bans(self, now: float, active_only: bool = True,
                   account_id: int | None = None) -> list[Ban]: ...

    async def lift_ban(self, ban_id: int, now: float, by: str) -> bool: ...

    async def blocklist_add(self, domain: str, now: float) -> bool: ...

    async def blocklist_remove(self, domain: str) -> bool: ...

    async def blocklist(self) -> list[str]: ...

    async def blocked_domain(self, host: str) -> str | None:
        """The listed domain that ``host`` is or is a subdomain of, if any."""

    async def ban_proxy(self, address: str, port: int, until: float) -> None:
        """Refuse tasks through this proxy until ``until`` (keeps the later of two bans)."""

    async def proxy_banned(self, address: str, port: int, now: float) -> bool: ...

    # workers
    async def create_worker_token(self, token_hash: str, name: str,
                                  types: tuple[str, ...] | None, now: float) -> int: ...

    async def revoke_worker_token(self, token_hash: str, now: float) -> bool: ...

    async def worker_token(self, token_hash: str) -> WorkerToken | None:
        """The live token with this digest, if any."""

    async def note_workers(self, types: list[str], now: float,
                           claimer: Claimer = Claimer.EXTERNAL) -> None:
        """Record that a worker (of the ``claimer`` kind) asked for work of these types at
        ``now``."""

    async def worker_seen_since(self, task_type: str, since: float, *,
                                external: bool = False) -> bool:
        """Whether a worker asked for this type at or after ``since``: any worker, or
        (``external``) an ``EXTERNAL`` one."""

    # retention (issue 12)
    async def drop_payloads(self, before: float, limit: int, now: float) -> int:
        """Forget the payload, options and callback URL of up to ``limit`` tasks that ended
        before ``before`` (oldest first), and settled outbox rows created before it; one
        short transaction. Returns how many tasks lost their payload."""

    async def delete_tasks(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` tasks that ended before ``before`` (oldest first), with
        their outbox rows; one short transaction. Ledger rows and balances are untouched
        (ledger rows keep the ids). Returns how many tasks went."""

    async def reclaim_space(self) -> int:
        """Give freed pages back to the file system where the backend can (SQLite: an
        incremental vacuum, and once a full VACUUM that turns auto_vacuum on); returns the
        bytes the database shrank by (0 where the backend cannot tell)."""

    # callback outbox (issue 12)
    async def claim_callbacks(self, now: float, lease_s: float, limit: int,
                              per_account: int) -> list[Callback]:
        """Lease up to ``limit`` due pending callbacks (oldest due first) until
        ``now + lease_s``, counting the attempt; an account never has more than
        ``per_account`` under a live lease, across all nodes. Each goes to one claimer."""

    async def settle_callback(self, callback_id: int, state: CallbackState,
                              next_at: float) -> bool:
        """End a claimed attempt: ``delivered``, ``failed`` (final), or ``pending`` again
        from ``next_at``; the lease is released. A final state drops any user:password
        from the row's URL. False when the row is no longer pending."""

    async def callback_counts(self) -> dict[str, int]:
        """Outbox rows by state: ``pending``, ``delivered``, ``failed`` (each present)."""

    # operator views
    async def stats(self, now: float) -> dict[str, Any]: ...

    async def meta_get(self, name: str) -> str | None: ...

    async def meta_set(self, name: str, value: str) -> None: ...


    # -- console (web dashboard): admin tokens, sessions, read-only views -----------------
    async def create_admin_token(self, token_hash: str, name: str, now: float) -> int: ...

    async def revoke_admin_token(self, token_hash: str, now: float) -> bool:
        """Revoke a live admin token; False when unknown or already revoked."""

    async def admin_token(self, token_hash: str) -> AdminToken | None:
        """The live admin token with this digest, if any."""

    async def create_console_session(self, session: ConsoleSession) -> None: ...

    async def console_session(self, token_hash: str, now: float) -> ConsoleSession | None:
        """The unexpired session with this digest, if any."""

    async def set_console_session_key(self, token_hash: str, key_digest: str) -> None:
        """Point an account session at another key (by digest) of its account (after a
        rotation)."""

    async def delete_console_session(self, token_hash: str) -> None: ...

    async def sweep_console_sessions(self, now: float) -> int:
        """Forget expired sessions; returns how many."""

    async def usage(self, account_id: int | None, since: float, until: float, bucket_s: float,
                    ip: str | None = None) -> list[UsageRow]:
        """Per bucket of ``bucket_s`` seconds (aligned to multiples of it) and task type:
        tasks created in ``[since, until)`` (by the account, or all; from ``ip`` if given),
        how many of them were solved or failed, and what they cost (charges less refunds).
        Buckets without tasks are absent. One pass over the tasks: SQLite runs it on a
        reading connection off the event loop."""

    async def solve_durations(self, account_id: int | None, since: float,
                              limit: int = 10_000) -> list[tuple[str, float]]:
        """(type, seconds from creation to solution) of the latest solved tasks that ended
        at or after ``since``, newest first."""

    async def recent_tasks(self, account_id: int, limit: int = 50) -> list[Task]:
        """The account's latest tasks, newest first, without payloads."""

    async def workers_online(self, now: float) -> list[WorkerActivity]:
        """Per task type that a worker asked for or that has live leases: last seen and
        leases held (``builtin_leases`` of them by the in-process OCR)."""

    async def open_tasks(self) -> dict[str, tuple[int, int]]:
        """(queued, leased) counts per task type with open tasks."""
