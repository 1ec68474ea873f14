"""The money invariants, checked over a whole database (every account, every task) with
plain SQL that both backends read alike. Used by the hardening tests and bench_soak."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

CHECKS: dict[str, str] = {
    "balance differs from the ledger sum":
        "SELECT a.id FROM accounts a LEFT JOIN (SELECT account_id, SUM(amount_units) AS s"
        " FROM ledger GROUP BY account_id) l ON l.account_id = a.id"
        " WHERE a.balance_units <> COALESCE(l.s, 0)",
    "negative balance or reservation":
        "SELECT id FROM accounts WHERE balance_units < 0 OR reserved_units < 0"
        " OR balance_units < reserved_units",
    "reserved differs from the open tasks' reservations":
        "SELECT a.id FROM accounts a LEFT JOIN (SELECT account_id, SUM(reserved_units) AS s"
        " FROM tasks WHERE state IN ('queued', 'leased') GROUP BY account_id) t"
        " ON t.account_id = a.id WHERE a.reserved_units <> COALESCE(t.s, 0)",
    "a finished task still holds a reservation":
        "SELECT id FROM tasks WHERE state IN ('solved', 'failed') AND reserved_units <> 0",
    "a task charged or refunded more than once":
        "SELECT task_id FROM ledger WHERE task_id IS NOT NULL GROUP BY task_id, kind"
        " HAVING COUNT(*) > 1",
    "a solved task without its charge":
        "SELECT t.id FROM tasks t WHERE t.state = 'solved' AND t.cost_units > 0 AND NOT EXISTS"
        " (SELECT 1 FROM ledger l WHERE l.task_id = t.id AND l.kind = 'charge'"
        " AND l.amount_units = -t.cost_units)",
    "a charge on a task that is not solved":
        "SELECT l.task_id FROM ledger l JOIN tasks t ON t.id = l.task_id"
        " WHERE l.kind = 'charge' AND t.state <> 'solved'",
    "a refund without a report, or larger than the charge":
        "SELECT l.task_id FROM ledger l JOIN tasks t ON t.id = l.task_id WHERE l.kind = 'refund'"
        " AND (t.reported_at IS NULL OR l.amount_units <> t.cost_units)",
}


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite://"):
        from capd.store import sqlite_path

        db = sqlite3.connect(sqlite_path(url), timeout=30)
        try:
            return [tuple(r) for r in db.execute(sql).fetchall()]
        finally:
            db.close()

    async def fetch() -> list[tuple[Any, ...]]:
        import asyncpg

        base, _, search_path = url.partition("?search_path=")
        conn = await asyncpg.connect(base, server_settings={"search_path": search_path}
                                     if search_path else None)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def violations(url: str) -> dict[str, list[Any]]:
    """Each broken invariant with the ids that break it; empty when all hold."""
    found = {}
    for name, sql in CHECKS.items():
        rows = _rows(url, sql)
        if rows:
            found[name] = [r[0] for r in rows[:10]]
    return found


def task_states(url: str) -> dict[str, int]:
    return {str(s): int(n) for s, n in _rows(url, "SELECT state, COUNT(*) FROM tasks"
                                                  " GROUP BY state")}


def task_state_of(url: str, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    listed = ",".join(str(int(i)) for i in ids)
    rows = _rows(url, f"SELECT id, state FROM tasks WHERE id IN ({listed})")
    return {int(i): str(s) for i, s in rows}
