"""Retention primitives for the SQL backends (issue 12): drop old payloads, delete old tasks.

Each call touches at most ``limit`` rows in one short transaction, oldest first through a
partial index on ``ended_at``, so a prune never holds a long lock (on PostgreSQL, rows
another transaction holds are skipped, not waited for). Only finished tasks are touched
(an open task has no ``ended_at``); the ledger is never touched: its rows keep the task
ids of deleted tasks, and no balance moves. ``capd.store.memory`` does the same to dicts.
"""

from __future__ import annotations

from collections.abc import Iterable

from capd.store.counters import FinalTasks
from capd.store.transitions import Db, Dialect


class RetentionStatements:
    """The retention SQL in one dialect."""

    def __init__(self, d: Dialect) -> None:
        q = d.sql
        self.drop_payloads = q(
            "UPDATE tasks SET payload = '{}', options = '{}', callback_url = NULL,"
            " payload_dropped_at = $3 WHERE id IN ("
            "  SELECT id FROM tasks WHERE ended_at IS NOT NULL AND payload_dropped_at IS NULL"
            f"   AND ended_at < $1 ORDER BY ended_at LIMIT $2{d.skip_locked})"
            " RETURNING id")
        self.drop_settled_callbacks = q(
            "DELETE FROM callbacks_outbox WHERE id IN ("
            "  SELECT id FROM callbacks_outbox WHERE state <> 'pending' AND created_at < $1"
            f"  ORDER BY created_at LIMIT $2{d.skip_locked})")
        self.delete_tasks = q(
            "DELETE FROM tasks WHERE id IN ("
            "  SELECT id FROM tasks WHERE ended_at IS NOT NULL AND ended_at < $1"
            f"  ORDER BY ended_at LIMIT $2{d.skip_locked}) RETURNING id")
        # a deleted task's outbox rows, whatever their state
        self.delete_task_callbacks = q(
            "DELETE FROM callbacks_outbox WHERE id IN ("
            "  SELECT id FROM callbacks_outbox WHERE created_at < $1"
            f"  ORDER BY created_at LIMIT $2{d.skip_locked})")


class SqlRetention:
    """``drop_payloads`` and ``delete_tasks`` for a SQL backend; it sets ``_retention_sql``
    (with ``_tdb`` and ``_final_tasks``, as for ``SqlTransitions``)."""

    _retention_sql: RetentionStatements
    _tdb: Db
    _final_tasks: FinalTasks

    async def drop_payloads(self, before: float, limit: int, now: float) -> int:
        if limit <= 0:
            return 0
        sql = self._retention_sql
        async with self._tdb.transaction() as tx:
            rows = await tx.fetch(sql.drop_payloads, before, limit, now)
            await tx.execute(sql.drop_settled_callbacks, before, limit)
        self._forget(r[0] for r in rows)
        return len(rows)

    async def delete_tasks(self, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        sql = self._retention_sql
        async with self._tdb.transaction() as tx:
            rows = await tx.fetch(sql.delete_tasks, before, limit)
            await tx.execute(sql.delete_task_callbacks, before, limit)
        self._forget(r[0] for r in rows)
        return len(rows)

    def _forget(self, task_ids: Iterable[int]) -> None:
        """This node's poll cache must not answer for a task that changed or went."""
        for task_id in task_ids:
            self._final_tasks.pop(task_id, None)
