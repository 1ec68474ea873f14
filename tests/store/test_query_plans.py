"""The statements that run on every task (createTask, claiming, the lease watch) and the
retention batches find their rows through an index on SQLite, never by scanning a whole
table: a table that keeps months of finished tasks would otherwise make each createTask
slower than the last."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from capd.store.sqlite import SQLiteStore


def plan(store: SQLiteStore, sql: str) -> str:
    count = len(set(re.findall(r"\?\d*", sql)))  # ?NNN parameters may repeat
    rows = store._all(f"EXPLAIN QUERY PLAN {sql}", [0] * count)
    return " | ".join(str(row[3]) for row in rows)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(str(tmp_path / "plans.db"))
    asyncio.run(s.migrate())
    return s


@pytest.mark.parametrize("name", ["queue_depth", "live_leases", "claim", "claim_for_reader",
                                  "overdue", "open_tasks"])
def test_hot_statements_use_an_index(store: SQLiteStore, name: str) -> None:
    text = plan(store, getattr(store._sql, name))
    # scanning a partial index of open tasks is fine; scanning the table is not
    assert not re.search(r"SCAN tasks(?! USING)", text), text
    assert re.search(r"tasks USING (COVERING )?INDEX tasks_(open|deadline)", text), text


@pytest.mark.parametrize("name", ["drop_payloads", "drop_settled_callbacks", "delete_tasks",
                                  "delete_task_callbacks"])
def test_retention_batches_use_an_index(store: SQLiteStore, name: str) -> None:
    """Each retention batch takes the oldest rows through an index: a sweep of a large
    table is many batches, and a batch that scans makes the sweep quadratic."""
    text = plan(store, getattr(store._retention_sql, name))
    assert not re.search(r"SCAN (tasks|callbacks_outbox)(?! USING)", text), text
