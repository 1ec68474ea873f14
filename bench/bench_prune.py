"""Retention (issue 12): the SQLite file before and after `capd prune`'s work.

Makes N solved ImageToText tasks with a realistic payload (a ~17 KB image as base64, a
proxy, cookies and a userAgent) that ended 40 days ago, in a database made without
auto_vacuum (as capd made them before schema version 4), then runs the same code as
`capd prune` and prints the file size before and after. With ``new``, the database keeps
the mode a new database gets (auto_vacuum=INCREMENTAL), so no full VACUUM is needed. Run:

    PYTHONPATH=. python bench/bench_prune.py [N] [new]
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import sys
import tempfile
import time

from capd.config import load_settings
from capd.service.retention import prune_all
from capd.store.base import NewTask
from capd.store.sqlite import SQLiteStore

DAY_S = 24 * 3600


async def fill(path: str, count: int) -> None:
    store = SQLiteStore(path)
    await store.migrate()
    now = time.time()
    account_id = await store.create_account("bench", "b" * 32, now, opening_units=10**12)
    image = base64.b64encode(os.urandom(17_000)).decode()
    ended = now - 40 * DAY_S
    ids = iter(range(1_000_001, 1_000_001 + count))
    for _ in range(count):
        task = NewTask(account_id=account_id, type="ImageToTextTask",
                       payload={"type": "ImageToTextTask", "body": image},
                       options={"image": {"numeric": 0}, "cookies": "a=b; c=d",
                                "userAgent": "Mozilla/5.0 bench"},
                       price_units=30_000, created_at=ended - 2, deadline_at=ended + 60,
                       client_ip="203.0.113.7", callback_url="https://u:p@hook.example/cb")
        task_id = await store.create_task(task, lambda: next(ids))
        await store.finish_task(task_id, ended, solution={"text": "x7k2p"})
    await store.close()


async def prune(path: str) -> tuple[int, int, int]:
    store = SQLiteStore(path)
    await store.migrate()
    settings = load_settings(environ={}, overrides={"database_url": f"sqlite:///{path}"})
    pruned = await prune_all(store, settings, time.time())
    await store.close()
    return pruned.payloads_dropped, pruned.tasks_deleted, pruned.bytes_reclaimed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        asyncio.run(fill(path, count))
        if "new" not in sys.argv[2:]:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA auto_vacuum = NONE")  # as a database made before version 4
            conn.execute("VACUUM")
            conn.close()
        before = os.path.getsize(path)
        started = time.perf_counter()
        dropped, deleted, reclaimed = asyncio.run(prune(path))
        took = time.perf_counter() - started
        after = os.path.getsize(path)
        print(f"{count} solved tasks: {before} bytes ({before / count / 1024:.1f} KB a task)")
        print(f"prune: dropped {dropped} payloads, deleted {deleted} tasks,"
              f" reclaimed {reclaimed} bytes in {took:.2f} s")
        print(f"after: {after} bytes")


if __name__ == "__main__":
    main()
