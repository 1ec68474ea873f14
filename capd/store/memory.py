"""A Store held in process memory, for fast unit tests (``open_store("memory://")``).

It keeps the same rules as the SQL backends (``capd.store.transitions``): reservations,
capture and release, one charge and one refund per task, lease expiry, the report window,
bans, counters, the blocklist's subdomain match, worker tokens and presence, the console's
admin tokens and sessions. Every method is atomic because none awaits between reading and
writing. Payloads, options and solutions are kept as JSON, as the SQL backends keep them,
so a caller never shares a dict with the store. Nothing survives the process; ``subscribe``
has no other node to hear from.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from capd.errors import InsufficientFunds
from capd.store.base import (
    OPEN_STATES,
    Account,
    AdminToken,
    Ban,
    Callback,
    CallbackState,
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
    WorkerToken,
)
from capd.store.counters import OneProcess
from capd.store.migrations import migration_scripts
from capd.store.secrets import (
    has_proxy_secrets,
    key_hint,
    secret_digest,
    without_proxy_secrets,
    without_userinfo,
)
from capd.store.transitions import (
    CHARGE_NOTE,
    NEW_ID_TRIES,
    REFUND_NOTE,
    SYSTEM_ACTOR,
    account_search,
    check_balance_move,
    check_opening,
    finish_outcome,
    may_claim,
    may_extend,
    may_finish,
    may_hand_to_humans,
    may_report,
)

_LATENCY_SAMPLE = 10_000  # stats: the latest solved tasks' solve times


@dataclass
class _Task:
    """A task as stored: JSON fields as bytes, decoded into a fresh ``Task`` on each read."""

    id: int
    account_id: int
    type: str
    payload: bytes
    options: bytes
    state: TaskState
    price_units: int
    reserved_units: int
    created_at: float
    deadline_at: float
    client_ip: str
    callback_url: str | None
    lease_until: float | None = None
    lease_owner: str | None = None
    attempts: int = 0
    ended_at: float | None = None
    solution: bytes | None = None
    error_code: str | None = None
    cost_units: int = 0
    reported_at: float | None = None
    payload_dropped_at: float | None = None
    proxy_secrets: bool = False  # proxy credentials in the payload, dropped when it ends
    for_humans: bool = False  # handed to humans: the built-in reading claims it no more

    def view(self, with_payload: bool = True) -> Task:
        return Task(
            id=self.id, account_id=self.account_id, type=self.type,
            payload=orjson.loads(self.payload) if with_payload else {},
            options=orjson.loads(self.options), state=self.state,
            price_units=self.price_units, reserved_units=self.reserved_units,
            created_at=self.created_at, deadline_at=self.deadline_at,
            lease_until=self.lease_until, lease_owner=self.lease_owner,
            attempts=self.attempts, ended_at=self.ended_at,
            solution=orjson.loads(self.solution) if self.solution is not None else None,
            error_code=self.error_code, cost_units=self.cost_units, client_ip=self.client_ip,
            callback_url=self.callback_url, reported_at=self.reported_at)


@dataclass
class _Callback:
    """An outbox row as stored (``capd.store.outbox`` keeps the same rules in SQL)."""

    id: int
    task_id: int
    account_id: int
    url: str
    body: str
    created_at: float
    next_at: float
    attempts: int = 0
    state: CallbackState = CallbackState.PENDING
    leased_until: float | None = None

    def view(self) -> Callback:
        return Callback(self.id, self.task_id, self.account_id, self.url, self.body,
                        self.attempts, self.next_at, self.state, self.leased_until)


@dataclass
class _Token:
    id: int
    name: str
    types: tuple[str, ...] | None
    created_at: float
    revoked_at: float | None = None


class MemoryStore(OneProcess):
    """Store backend on Python dicts; one process, nothing persisted."""

    backend = "memory"
    database_clock = False

    def __init__(self) -> None:
        super().__init__()
        self._accounts: dict[int, Account] = {}
        self._keys: dict[str, KeyRecord] = {}
        self._whitelists: dict[int, set[str]] = {}
        self._ledger: list[LedgerEntry] = []
        self._tasks: dict[int, _Task] = {}
        self._bans: dict[int, Ban] = {}
        self._blocklist: dict[str, float] = {}
        self._proxy_bans: dict[tuple[str, int], float] = {}
        self._tokens: dict[str, _Token] = {}
        self._meta: dict[str, str] = {}
        self._admin_tokens: dict[str, _Token] = {}  # digest -> token (``types`` unused)
        self._sessions: dict[str, ConsoleSession] = {}
        self._account_ids = itertools.count(1)
        self._ledger_ids = itertools.count(1)
        self._ban_ids = itertools.count(1)
        self._token_ids = itertools.count(1)
        self._admin_token_ids = itertools.count(1)
        self._charged: set[tuple[int, str]] = set()  # (task id, kind): once per task
        self._outbox: dict[int, _Callback] = {}
        self._outbox_ids = itertools.count(1)

    # -- schema -----------------------------------------------------------------------------
    async def migrate(self) -> int:
        """Nothing to create; the schema version the SQL backends would be at."""
        return max(version for version, _ in migration_scripts("sqlite"))

    async def close(self) -> None:
        """Nothing to release."""

    # -- accounts and keys -----------------------------------------------------------------
    async def create_account(self, name: str, key: str, now: float, *, opening_units: int = 0,
                             actor: str = "operator", note: str = "") -> int:
        check_opening(opening_units)
        digest = secret_digest(key)
        if digest in self._keys:
            raise ValueError("the key belongs to another account")
        account_id = next(self._account_ids)
        self._accounts[account_id] = Account(account_id, name, opening_units, 0, now)
        self._keys[digest] = KeyRecord(digest, key_hint(key), account_id, now, None)
        if opening_units > 0:
            self._append_ledger(account_id, now, "topup", opening_units, None, actor, note)
        return account_id

    async def add_key(self, account_id: int, key: str, now: float) -> None:
        if account_id not in self._accounts:
            raise KeyError(account_id)
        digest = secret_digest(key)
        if digest in self._keys:
            raise ValueError("the key belongs to another account")
        self._keys[digest] = KeyRecord(digest, key_hint(key), account_id, now, None)

    async def revoke_key(self, key: str, now: float) -> bool:
        return await self.revoke_key_digest(secret_digest(key), now)

    async def revoke_key_digest(self, digest: str, now: float) -> bool:
        record = self._keys.get(digest)
        if record is None or record.revoked_at is not None:
            return False
        self._keys[digest] = replace(record, revoked_at=now)
        return True

    async def caller_for_key(self, key: str) -> Caller | None:
        return await self.caller_for_key_digest(secret_digest(key))

    async def caller_for_key_digest(self, digest: str) -> Caller | None:
        record = self._keys.get(digest)
        if record is None or record.revoked_at is not None:
            return None
        return Caller(record.account_id, tuple(await self.whitelist(record.account_id)))

    async def account(self, account_id: int) -> Account | None:
        return self._accounts.get(account_id)

    async def account_for_key(self, key: str) -> Account | None:
        record = self._keys.get(secret_digest(key))
        return self._accounts.get(record.account_id) if record else None

    async def find_accounts(self, query: str, limit: int = 50) -> list[Account]:
        search = account_search(query)
        if search is None or limit <= 0:
            return []
        needle = search.text.lower()
        record = self._keys.get(secret_digest(search.text))
        owner = record.account_id if record is not None else None
        found = [a for a in self._accounts.values()
                 if a.id in (search.account_id, owner) or needle in a.name.lower()]
        return sorted(found, key=lambda a: a.id)[:limit]

    async def keys(self, account_id: int) -> list[KeyRecord]:
        return sorted((k for k in self._keys.values() if k.account_id == account_id),
                      key=lambda k: (k.created_at, k.digest))

    async def keys_by_id(self, key_id: str) -> list[KeyRecord]:
        return sorted((k for k in self._keys.values() if k.key_id == key_id),
                      key=lambda k: k.digest)

    async def whitelist(self, account_id: int) -> list[str]:
        return sorted(self._whitelists.get(account_id, ()))

    async def whitelist_add(self, account_id: int, network: str) -> bool:
        if account_id not in self._accounts:
            raise KeyError(account_id)
        networks = self._whitelists.setdefault(account_id, set())
        if network in networks:
            return False
        networks.add(network)
        return True

    async def whitelist_remove(self, account_id: int, network: str) -> bool:
        networks = self._whitelists.get(account_id, set())
        if network not in networks:
            return False
        networks.discard(network)
        return True

    # -- money -------------------------------------------------------------------------------
    def _append_ledger(self, account_id: int, at: float, kind: str, amount_units: int,
                       task_id: int | None, actor: str, note: str) -> None:
        if task_id is not None:
            if (task_id, kind) in self._charged:  # the SQL backends' unique index
                raise ValueError(f"task {task_id} already has a {kind}")
            self._charged.add((task_id, kind))
        self._ledger.append(LedgerEntry(next(self._ledger_ids), account_id, at, kind,
                                        amount_units, task_id, actor, note))

    def _move(self, account_id: int, balance: int = 0, reserved: int = 0) -> None:
        account = self._accounts[account_id]
        self._accounts[account_id] = replace(
            account, balance_units=account.balance_units + balance,
            reserved_units=account.reserved_units + reserved)

    async def adjust_balance(self, account_id: int, amount_units: int, kind: str, actor: str,
                             note: str, now: float) -> int:
        account = self._accounts.get(account_id)
        if account is None:
            raise KeyError(account_id)
        after = check_balance_move(account.balance_units, account.reserved_units, amount_units)
        self._append_ledger(account_id, now, kind, amount_units, None, actor, note)
        self._move(account_id, balance=amount_units)
        return after

    async def ledger(self, account_id: int, limit: int = 20) -> list[LedgerEntry]:
        mine = [e for e in reversed(self._ledger) if e.account_id == account_id]
        return mine[:max(limit, 0)]

    async def ledger_sum(self, account_id: int) -> int:
        return sum(e.amount_units for e in self._ledger if e.account_id == account_id)

    # -- tasks -------------------------------------------------------------------------------
    async def create_task(self, task: NewTask, new_id: Callable[[], int]) -> int:
        payload, options = orjson.dumps(task.payload), orjson.dumps(task.options)
        account = self._accounts.get(task.account_id)
        if account is None or account.balance_units - account.reserved_units < task.price_units:
            raise InsufficientFunds()
        for _ in range(NEW_ID_TRIES):
            task_id = new_id()
            # not an id the ledger names either (a deleted charged task's)
            if task_id not in self._tasks and not any(
                    (task_id, kind) in self._charged for kind in ("charge", "refund")):
                break
        else:
            raise RuntimeError("could not draw an unused task id")
        self._move(task.account_id, reserved=task.price_units)
        self._tasks[task_id] = _Task(
            id=task_id, account_id=task.account_id, type=task.type, payload=payload,
            options=options, state=TaskState.QUEUED, price_units=task.price_units,
            reserved_units=task.price_units, created_at=task.created_at,
            deadline_at=task.deadline_at, client_ip=task.client_ip,
            callback_url=task.callback_url, proxy_secrets=has_proxy_secrets(task.payload))
        return task_id

    async def get_task(self, task_id: int, with_payload: bool = True) -> Task | None:
        task = self._tasks.get(task_id)
        return task.view(with_payload) if task else None

    async def claim_tasks(self, types: list[str], limit: int, owner: str, lease_s: float,
                          now: float, claimer: Claimer = Claimer.EXTERNAL) -> list[Task]:
        if not types or limit <= 0:
            return []
        wanted = set(types)
        reader = claimer == Claimer.READER
        ready = sorted((t for t in self._tasks.values() if t.type in wanted
                        and not (reader and t.for_humans)
                        and may_claim(t.state, t.lease_until, t.deadline_at, now)),
                       key=lambda t: (t.created_at, t.id))[:limit]
        for task in ready:
            task.state, task.lease_until, task.lease_owner = TaskState.LEASED, now + lease_s, owner
            task.attempts += 1
        return [t.view() for t in ready]

    async def hand_to_humans(self, task_id: int, owner: str, now: float) -> bool:
        task = self._tasks.get(task_id)
        if task is None or not may_hand_to_humans(task.state, task.lease_owner,
                                                   task.lease_until, task.deadline_at, owner,
                                                   now):
            return False
        task.state, task.lease_until, task.lease_owner = TaskState.QUEUED, None, None
        task.for_humans = True
        return True

    async def finish_task(self, task_id: int, now: float, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None,
                          callback: Callable[[Task], str] | None = None) -> Task | None:
        outcome = finish_outcome(solution, error_code)
        task = self._tasks.get(task_id)
        if task is None or not may_finish(task.state, task.lease_owner, task.lease_until, owner,
                                          now):
            return None
        encoded = orjson.dumps(solution) if solution is not None else None
        charge = task.price_units if outcome == TaskState.SOLVED else 0
        if charge:
            self._append_ledger(task.account_id, now, "charge", -charge, task_id,
                                SYSTEM_ACTOR, CHARGE_NOTE)
        self._move(task.account_id, balance=-charge, reserved=-task.reserved_units)
        task.state, task.ended_at, task.solution = outcome, now, encoded
        task.error_code, task.cost_units = error_code, charge
        task.reserved_units, task.lease_until = 0, None
        url = task.callback_url  # as given: the outbox row keeps it until settled
        if task.proxy_secrets:
            task.payload = orjson.dumps(without_proxy_secrets(orjson.loads(task.payload)))
            task.proxy_secrets = False
        task.callback_url = without_userinfo(url)
        finished = task.view()
        if callback is not None and url:
            row_id = next(self._outbox_ids)
            self._outbox[row_id] = _Callback(row_id, task_id, task.account_id,
                                             url, callback(finished), now, now)
        return finished

    async def extend_lease(self, task_id: int, owner: str, until: float,
                           now: float, *, keep_later: bool = False) -> float | None:
        task = self._tasks.get(task_id)
        if task is None or not may_extend(task.state, task.lease_owner, task.lease_until,
                                          owner, now):
            return None
        if keep_later and task.lease_until is not None:
            until = max(until, task.lease_until)
        task.lease_until = min(until, task.deadline_at)
        return task.lease_until

    async def overdue_tasks(self, now: float, limit: int = 100) -> list[Task]:
        late = sorted((t for t in self._tasks.values()
                       if t.state in OPEN_STATES and t.deadline_at <= now),
                      key=lambda t: (t.deadline_at, t.id))
        return [t.view() for t in late[:max(limit, 0)]]

    async def report_task(self, task_id: int, account_id: int, refund: bool, now: float,
                          window_s: float) -> bool:
        task = self._tasks.get(task_id)
        if task is None or not may_report(task.state, task.account_id, task.reported_at,
                                          task.ended_at, account_id, now, window_s):
            return False
        if refund and task.cost_units > 0:
            self._append_ledger(account_id, now, "refund", task.cost_units, task_id,
                                SYSTEM_ACTOR, REFUND_NOTE)
            self._move(account_id, balance=task.cost_units)
        task.reported_at = now
        return True

    async def queue_depth(self, task_type: str) -> int:
        return sum(1 for t in self._tasks.values()
                   if t.type == task_type and t.state == TaskState.QUEUED)

    # -- limits and bans ---------------------------------------------------------------------
    async def add_ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                      now: float, ends_at: float) -> int:
        if scope not in ("ip", "account_ip"):
            raise ValueError(f"unknown ban scope {scope!r}")
        current = await self.active_ban(scope, ip, account_id, now)
        if current is not None:  # the slot's one active ban: extended
            await self.extend_ban(current.id, ends_at)
            return current.id
        ban_id = next(self._ban_ids)
        self._bans[ban_id] = Ban(ban_id, scope, ip, account_id, reason, now, ends_at, None)
        return ban_id

    async def active_ban(self, scope: str, ip: str, account_id: int | None,
                         now: float) -> Ban | None:
        live = [b for b in self._bans.values() if b.ip == ip and b.scope == scope
                and b.account_id == account_id and b.ends_at > now and b.lifted_at is None]
        return max(live, key=lambda b: b.ends_at, default=None)

    async def extend_ban(self, ban_id: int, ends_at: float) -> None:
        ban = self._bans.get(ban_id)
        if ban is not None:
            self._bans[ban_id] = replace(ban, ends_at=max(ban.ends_at, ends_at))

    async def bans(self, now: float, active_only: bool = True,
                   account_id: int | None = None) -> list[Ban]:
        return [b for _, b in sorted(self._bans.items())
                if (not active_only or (b.ends_at > now and b.lifted_at is None))
                and (account_id is None or b.account_id == account_id)]

    async def lift_ban(self, ban_id: int, now: float, by: str) -> bool:
        ban = self._bans.get(ban_id)
        if ban is None or ban.lifted_at is not None:
            return False
        self._bans[ban_id] = replace(ban, lifted_at=now)  # ``by`` is not part of a Ban
        return True

    async def blocklist_add(self, domain: str, now: float) -> bool:
        if domain in self._blocklist:
            return False
        self._blocklist[domain] = now
        return True

    async def blocklist_remove(self, domain: str) -> bool:
        return self._blocklist.pop(domain, None) is not None

    async def blocklist(self) -> list[str]:
        return sorted(self._blocklist)

    async def blocked_domain(self, host: str) -> str | None:
        labels = host.split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in self._blocklist:
                return candidate
        return None

    async def ban_proxy(self, address: str, port: int, until: float) -> None:
        key = (address.lower(), port)
        self._proxy_bans[key] = max(until, self._proxy_bans.get(key, until))

    async def proxy_banned(self, address: str, port: int, now: float) -> bool:
        return self._proxy_bans.get((address.lower(), port), now) > now

    # -- workers -----------------------------------------------------------------------------
    async def create_worker_token(self, token_hash: str, name: str,
                                  types: tuple[str, ...] | None, now: float) -> int:
        if token_hash in self._tokens:
            raise ValueError("a worker token with this digest exists")
        token_id = next(self._token_ids)
        self._tokens[token_hash] = _Token(token_id, name, tuple(types) if types else None, now)
        return token_id

    async def revoke_worker_token(self, token_hash: str, now: float) -> bool:
        token = self._tokens.get(token_hash)
        if token is None or token.revoked_at is not None:
            return False
        token.revoked_at = now
        return True

    async def worker_token(self, token_hash: str) -> WorkerToken | None:
        token = self._tokens.get(token_hash)
        if token is None or token.revoked_at is not None:
            return None
        return WorkerToken(token.id, token.name, token.types, token.created_at)

    # -- retention ---------------------------------------------------------------------------
    def _ended_before(self, before: float, limit: int, keep_payload: bool) -> list[_Task]:
        ended = sorted((t for t in self._tasks.values() if t.ended_at is not None
                        and t.ended_at < before
                        and (not keep_payload or t.payload_dropped_at is None)),
                       key=lambda t: (t.ended_at or 0.0, t.id))
        return ended[:max(limit, 0)]

    def _outbox_before(self, before: float, limit: int, settled: bool) -> list[_Callback]:
        rows = sorted((c for c in self._outbox.values() if c.created_at < before
                       and (not settled or c.state != CallbackState.PENDING)),
                      key=lambda c: (c.created_at, c.id))
        return rows[:max(limit, 0)]

    async def drop_payloads(self, before: float, limit: int, now: float) -> int:
        tasks = self._ended_before(before, limit, keep_payload=True)
        for task in tasks:
            task.payload = task.options = b"{}"
            task.callback_url, task.payload_dropped_at = None, now
        for row in self._outbox_before(before, limit, settled=True):
            del self._outbox[row.id]
        return len(tasks)

    async def delete_tasks(self, before: float, limit: int) -> int:
        tasks = self._ended_before(before, limit, keep_payload=False)
        for task in tasks:
            del self._tasks[task.id]
        for row in self._outbox_before(before, limit, settled=False):
            del self._outbox[row.id]
        return len(tasks)

    async def reclaim_space(self) -> int:
        """Python frees what nothing refers to; nothing to measure."""
        return 0

    # -- callback outbox -----------------------------------------------------------------------
    async def claim_callbacks(self, now: float, lease_s: float, limit: int,
                              per_account: int) -> list[Callback]:
        if limit <= 0 or per_account <= 0:
            return []
        busy: dict[int, int] = {}
        for row in self._outbox.values():
            if row.state == CallbackState.PENDING and (row.leased_until or 0.0) > now:
                busy[row.account_id] = busy.get(row.account_id, 0) + 1
        due = sorted((r for r in self._outbox.values() if r.state == CallbackState.PENDING
                      and r.next_at <= now and (r.leased_until is None or r.leased_until <= now)),
                     key=lambda r: (r.next_at, r.id))
        claimed: list[Callback] = []
        for row in due:
            if len(claimed) >= limit:
                break
            if busy.get(row.account_id, 0) >= per_account:
                continue
            busy[row.account_id] = busy.get(row.account_id, 0) + 1
            row.leased_until, row.attempts = now + lease_s, row.attempts + 1
            claimed.append(row.view())
        return claimed

    async def settle_callback(self, callback_id: int, state: CallbackState,
                              next_at: float) -> bool:
        row = self._outbox.get(callback_id)
        if row is None or row.state != CallbackState.PENDING:
            return False
        row.state, row.next_at, row.leased_until = state, next_at, None
        if state != CallbackState.PENDING:
            row.url = without_userinfo(row.url) or row.url
        return True

    async def callback_counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in CallbackState}
        for row in self._outbox.values():
            counts[row.state.value] += 1
        return counts

    # -- operator views ----------------------------------------------------------------------
    async def stats(self, now: float) -> dict[str, Any]:
        counts: dict[tuple[str, str], int] = {}
        for task in self._tasks.values():
            counts[(task.type, task.state.value)] = counts.get(
                (task.type, task.state.value), 0) + 1
        solved = sorted((t for t in self._tasks.values() if t.state == TaskState.SOLVED),
                        key=lambda t: t.id, reverse=True)[:_LATENCY_SAMPLE]
        charges = [e.amount_units for e in self._ledger if e.kind == "charge"]
        refunds = [e.amount_units for e in self._ledger if e.kind == "refund"]
        return {"tasks": [{"type": t, "state": s, "count": n}
                          for (t, s), n in sorted(counts.items())],
                "solve_latencies_s": [t.ended_at - t.created_at for t in solved
                                      if t.ended_at is not None],
                "charges": {"count": len(charges), "units": -sum(charges)},
                "refunds": {"count": len(refunds), "units": sum(refunds)}}

    async def meta_get(self, name: str) -> str | None:
        return self._meta.get(name)

    async def meta_set(self, name: str, value: str) -> None:
        self._meta[name] = value

    # -- the console: admin tokens, sessions, read-only views ------------------------------
    async def create_admin_token(self, token_hash: str, name: str, now: float) -> int:
        if token_hash in self._admin_tokens:
            raise ValueError("an admin token with this digest exists")
        token_id = next(self._admin_token_ids)
        self._admin_tokens[token_hash] = _Token(token_id, name, None, now)
        return token_id

    async def revoke_admin_token(self, token_hash: str, now: float) -> bool:
        token = self._admin_tokens.get(token_hash)
        if token is None or token.revoked_at is not None:
            return False
        token.revoked_at = now
        return True

    async def admin_token(self, token_hash: str) -> AdminToken | None:
        token = self._admin_tokens.get(token_hash)
        if token is None or token.revoked_at is not None:
            return None
        return AdminToken(token.id, token.name, token.created_at)

    async def create_console_session(self, session: ConsoleSession) -> None:
        if session.token_hash in self._sessions:
            raise ValueError("a console session with this digest exists")
        if session.account_id is not None and session.account_id not in self._accounts:
            raise KeyError(session.account_id)
        self._sessions[session.token_hash] = session

    async def console_session(self, token_hash: str, now: float) -> ConsoleSession | None:
        session = self._sessions.get(token_hash)
        return session if session is not None and session.expires_at > now else None

    async def set_console_session_key(self, token_hash: str, key_digest: str) -> None:
        session = self._sessions.get(token_hash)
        if session is not None:
            self._sessions[token_hash] = replace(session, key_digest=key_digest)

    async def delete_console_session(self, token_hash: str) -> None:
        self._sessions.pop(token_hash, None)

    async def sweep_console_sessions(self, now: float) -> int:
        expired = [h for h, s in self._sessions.items() if s.expires_at <= now]
        for token_hash in expired:
            del self._sessions[token_hash]
        return len(expired)

    async def usage(self, account_id: int | None, since: float, until: float, bucket_s: float,
                    ip: str | None = None) -> list[UsageRow]:
        refunds = {e.task_id: e.amount_units for e in self._ledger if e.kind == "refund"}
        buckets: dict[tuple[float, str], list[int]] = {}
        for t in self._tasks.values():
            if not since <= t.created_at < until or (
                    account_id is not None and t.account_id != account_id) or (
                    ip is not None and t.client_ip != ip):
                continue
            tally = buckets.setdefault((float(t.created_at // bucket_s * bucket_s), t.type),
                                       [0, 0, 0, 0])
            tally[0] += 1
            tally[1] += t.state == TaskState.SOLVED
            tally[2] += t.state == TaskState.FAILED
            tally[3] += t.cost_units - (refunds.get(t.id, 0) if t.reported_at is not None
                                        else 0)
        return [UsageRow(start, ttype, *tally) for (start, ttype), tally in sorted(buckets.items())]

    async def solve_durations(self, account_id: int | None, since: float,
                              limit: int = 10_000) -> list[tuple[str, float]]:
        solved = sorted((t for t in self._tasks.values()
                         if t.state == TaskState.SOLVED and t.ended_at is not None
                         and t.ended_at >= since
                         and (account_id is None or t.account_id == account_id)),
                        key=lambda t: t.ended_at or 0.0, reverse=True)
        return [(t.type, (t.ended_at or 0.0) - t.created_at) for t in solved[:max(limit, 0)]]

    async def recent_tasks(self, account_id: int, limit: int = 50) -> list[Task]:
        mine = sorted((t for t in self._tasks.values() if t.account_id == account_id),
                      key=lambda t: (t.created_at, t.id), reverse=True)
        return [t.view(with_payload=False) for t in mine[:max(limit, 0)]]

    async def workers_online(self, now: float) -> list[WorkerActivity]:
        leases: dict[str, list[int]] = {}
        for t in self._tasks.values():
            if t.state == TaskState.LEASED and t.lease_until is not None and t.lease_until > now:
                held = leases.setdefault(t.type, [0, 0])
                held[0] += 1
                held[1] += (t.lease_owner or "").startswith("builtin-")
        seen = await self._workers_seen()
        return [WorkerActivity(t, seen.get(t), *leases.get(t, (0, 0)))
                for t in sorted(set(leases) | set(seen))]

    async def open_tasks(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for t in self._tasks.values():
            if t.state in OPEN_STATES:
                queued, leased = counts.get(t.type, (0, 0))
                counts[t.type] = ((queued + 1, leased) if t.state == TaskState.QUEUED
                                  else (queued, leased + 1))
        return counts
