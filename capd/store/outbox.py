"""The callback outbox for the SQL backends (issue 12): durable, leased, fair per account.

A finished task with a callback URL gets an outbox row in the transaction that finishes it
(``SqlTransitions.finish_task`` with ``callback``, whose INSERT lives with the other
transitions' SQL), so a restart loses no callback. Any
node delivers: ``claim_callbacks`` leases due rows (PostgreSQL: ``SKIP LOCKED``, under a
transaction-scoped advisory lock so that the per-account cap holds across nodes; SQLite:
``BEGIN IMMEDIATE`` serialises claimers anyway), and ``settle_callback`` ends an attempt.
A node that dies mid-attempt leaves a lease that runs out; the row is then due again.

Row states (``CallbackState``): pending (due at ``next_at``; claimed while
``leased_until`` is ahead) -> delivered | failed, or pending again with a later
``next_at`` (a retry). ``capd.store.memory`` keeps the same rules in Python.

A row keeps its URL as the client gave it while it is pending (the task row itself has
lost any user:password when it finished); settling it delivered or failed drops the
credentials from the URL too (``capd.store.secrets``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capd.store.base import Callback, CallbackState
from capd.store.secrets import without_userinfo
from capd.store.transitions import Db, Dialect

_CLAIM_LOCK = 0x63616362  # "cacb": PostgreSQL claimers of callbacks take turns
OUTBOX_COLS = "id, task_id, account_id, url, body, attempts, next_at, state, leased_until"


def callback_from_row(row: Sequence[Any]) -> Callback:
    return Callback(id=row[0], task_id=row[1], account_id=row[2], url=row[3], body=row[4],
                    attempts=row[5], next_at=row[6], state=CallbackState(row[7]),
                    leased_until=row[8])


class OutboxStatements:
    """The outbox SQL in one dialect."""

    def __init__(self, d: Dialect) -> None:
        q = d.sql
        self.claim_lock = (f"SELECT pg_advisory_xact_lock({_CLAIM_LOCK})"
                           if d.name == "postgres" else None)
        # due rows, numbered per account, admitted while the account's live leases plus
        # its number stay within the cap; the outer SELECT locks (or skips) the rows
        due = ("SELECT o.id, o.next_at, ROW_NUMBER() OVER (PARTITION BY o.account_id"
               "  ORDER BY o.next_at, o.id) AS rn, o.account_id FROM callbacks_outbox o"
               " WHERE o.state = 'pending' AND o.next_at <= $2"
               "  AND (o.leased_until IS NULL OR o.leased_until <= $2)")
        busy = ("SELECT account_id, COUNT(*) AS n FROM callbacks_outbox"
                " WHERE state = 'pending' AND leased_until > $2 GROUP BY account_id")
        self.claim = q(
            f"UPDATE callbacks_outbox SET leased_until = $1, attempts = attempts + 1"
            f" WHERE id IN ("
            f"  SELECT c.id FROM callbacks_outbox c WHERE c.id IN ("
            f"   SELECT due.id FROM ({due}) due LEFT JOIN ({busy}) busy"
            f"    ON busy.account_id = due.account_id"
            f"   WHERE due.rn + COALESCE(busy.n, 0) <= $3 ORDER BY due.next_at, due.id"
            f"   LIMIT $4)"
            f"  AND c.state = 'pending' AND (c.leased_until IS NULL OR c.leased_until <= $2)"
            f"  {d.skip_locked})"
            f" RETURNING {OUTBOX_COLS}")
        # a plain read first: most polls find nothing due and need no write transaction
        self.any_due = q(
            "SELECT 1 FROM callbacks_outbox WHERE state = 'pending' AND next_at <= $1"
            " AND (leased_until IS NULL OR leased_until <= $1) LIMIT 1")
        self.url = q("SELECT url FROM callbacks_outbox WHERE id = $1")
        # $4: the URL less its credentials once settled for good (NULL: unchanged)
        self.settle = q(
            "UPDATE callbacks_outbox SET state = $1, next_at = $2, leased_until = NULL,"
            " url = COALESCE($4, url) WHERE id = $3 AND state = 'pending' RETURNING id")
        self.counts = q("SELECT state, COUNT(*) FROM callbacks_outbox GROUP BY state")


class SqlOutbox:
    """The outbox Store methods for a SQL backend; it sets ``_outbox_sql`` and ``_tdb``."""

    _outbox_sql: OutboxStatements
    _tdb: Db

    async def claim_callbacks(self, now: float, lease_s: float, limit: int,
                              per_account: int) -> list[Callback]:
        if limit <= 0 or per_account <= 0:
            return []
        sql = self._outbox_sql
        if await self._tdb.fetchrow(sql.any_due, now) is None:
            return []
        async with self._tdb.transaction() as tx:
            if sql.claim_lock is not None:
                await tx.execute(sql.claim_lock)
            rows = await tx.fetch(sql.claim, now + lease_s, now, per_account, limit)
        return sorted((callback_from_row(r) for r in rows), key=lambda c: (c.next_at, c.id))

    async def settle_callback(self, callback_id: int, state: CallbackState,
                              next_at: float) -> bool:
        sql = self._outbox_sql
        bare = None
        if state != CallbackState.PENDING:
            found = await self._tdb.fetchrow(sql.url, callback_id)
            if found is not None and without_userinfo(found[0]) != found[0]:
                bare = without_userinfo(found[0])
        row = await self._tdb.fetchrow(sql.settle, state.value, next_at, callback_id, bare)
        return row is not None

    async def callback_counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in CallbackState}
        for state, n in await self._tdb.fetch(self._outbox_sql.counts):
            counts[str(state)] = int(n)
        return counts
