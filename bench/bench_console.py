"""How long the web console's pages take with a month of traffic in SQLite.

    .venv/bin/python -m bench.bench_console [--tasks N] [--accounts N] [--rounds N]

Fills a temporary SQLite database with ``--tasks`` solved tasks (and their charges) over
the last 30 days, spread over ``--accounts`` accounts and three task types, then serves it
(built-in OCR off) and times, over ``--rounds`` rounds, the heaviest pages: an account's
overview (30-day charts of one account), the operator's dashboard (30-day charts of every
account, queues, latency; the first round fills its 60 s cache), and getSpendingStats.
Prints the median and worst per page, and how fast getBalance answered meanwhile (the
long reads run off the event loop).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from capd.console.sessions import digest
from capd.store.secrets import key_hint, secret_digest
from tests.helpers import FakeClock, LiveServer, make_settings

DAY_S = 86400
TYPES = ("ImageToTextTask", "RecaptchaV2TaskProxyless", "TurnstileTaskProxyless")


def fill(path: Path, tasks: int, accounts: int, now: float) -> list[str]:
    """Bulk rows straight into the migrated file; returns the accounts' keys."""
    db = sqlite3.connect(path)
    rng = random.Random(16)
    keys = [f"{i:032x}" for i in range(1, accounts + 1)]
    with db:
        for i, key in enumerate(keys, 1):
            db.execute("INSERT INTO accounts (id, name, balance_units, reserved_units,"
                       " created_at) VALUES (?, ?, 0, 0, ?)", (i, f"a{i}", now - 40 * DAY_S))
            db.execute("INSERT INTO api_keys (key_hash, hint, account_id, created_at)"
                       " VALUES (?, ?, ?, ?)", (secret_digest(key), key_hint(key), i,
                                               now - 40 * DAY_S))
        task_rows, ledger_rows = [], []
        for n in range(tasks):
            account = rng.randint(1, accounts)
            created = now - rng.uniform(0, 30 * DAY_S)
            ended = created + rng.uniform(0.5, 20)
            task_id = 1_000_000 + n
            task_rows.append((task_id, account, rng.choice(TYPES), "{}", "{}", "solved", 30_000,
                              0, created, created + 120, ended, 30_000, "10.0.0.1"))
            ledger_rows.append((account, ended, "charge", -30_000, task_id, "capd", "solved"))
        db.executemany(
            "INSERT INTO tasks (id, account_id, type, payload, options, state, price_units,"
            " reserved_units, created_at, deadline_at, ended_at, cost_units, client_ip)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", task_rows)
        db.executemany("INSERT INTO ledger (account_id, at, kind, amount_units, task_id, actor,"
                       " note) VALUES (?, ?, ?, ?, ?, ?, ?)", ledger_rows)
        db.execute("UPDATE accounts SET balance_units = 10000000000")
        db.execute("INSERT INTO admin_tokens (token_hash, name, created_at) VALUES (?, ?, ?)",
                   (digest("t" * 64), "bench", now))
    db.close()
    return keys


def signed_in(url: str, form: str, field: str, secret: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    page = client.get(form)
    path = form.rstrip("/") + "/signin"
    token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post(path, data={"csrf": token, field: secret})
    assert answer.status_code == 303, answer.text
    return client


def poll_balance(url: str, key: str, out: list[float], done: threading.Event) -> None:
    """getBalance in a loop until ``done``: what the API answers while a page renders."""
    with httpx.Client(base_url=url, timeout=60) as client:
        while not done.is_set() or not out:
            start = time.perf_counter()
            client.post("/getBalance", json={"clientKey": key}).raise_for_status()
            out.append(time.perf_counter() - start)


def timed(fn: object, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300_000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    clock = FakeClock()
    server = LiveServer(make_settings(tmp, builtin_ocr=False), clock)
    server.start(None)  # migrates the file
    keys = fill(tmp / "capd.db", args.tasks, args.accounts, clock())
    try:
        account = signed_in(server.url, "/console/", "key", keys[0])
        operator = signed_in(server.url, "/console/admin", "token", "t" * 64)
        pages = {
            "account overview": lambda: account.get("/console/").raise_for_status(),
            "operator dashboard": lambda: operator.get("/console/admin").raise_for_status(),
            "getSpendingStats": lambda: server.call("getSpendingStats", {"clientKey": keys[0]}),
        }
        print(f"{args.tasks} solved tasks over 30 days, {args.accounts} accounts (SQLite)")
        for name, fn in pages.items():
            api: list[float] = []
            done = threading.Event()
            poller = threading.Thread(target=poll_balance, args=(server.url, keys[1], api,
                                                                  done))
            poller.start()
            figures = timed(fn, args.rounds)
            done.set()
            poller.join()
            print(f"{name:<20} median {statistics.median(figures) * 1000:8.1f} ms"
                  f"   worst {max(figures) * 1000:8.1f} ms;   getBalance meanwhile: median"
                  f" {statistics.median(api) * 1000:6.1f} ms, worst {max(api) * 1000:6.1f} ms"
                  f" ({len(api)} calls)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
