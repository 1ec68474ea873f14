"""Scale-out on PostgreSQL with real processes: two API nodes and two OCR workers share one
database; SIGKILL one node and one worker mid-run — nothing is lost, nothing is charged
twice, and the survivors finish the work."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capd.store.postgres import PostgresStore
from tests.helpers import b64, captcha_png, free_port
from tests.processes import Processes, capd_cli, post

pytestmark = pytest.mark.slow

TEXTS = ("txwvdz", "y7kf", "pe5na3", "xxhfd", "fbte", "h2nwm", "dn4en", "udzwz", "uuhpzp",
         "32wuuw", "k55kvz", "7svv6", "7bpp8", "uh4c", "rahv", "57xh8", "2683wm", "b553",
         "hsxz7z", "8fvm", "vkmzr", "u8c8", "yaf4", "v4s7", "37uan", "m75y", "asxbp", "dztc4f",
         "p6e5", "dhwame")
PRICE_UNITS = 30_000
NODE_SETTINGS = {"CAPD_BUILTIN_OCR": "false", "CAPD_WORKER_LEASE_S": "3",
                 "CAPD_MAX_POLLS_PER_S": "50", "CAPD_IMAGE_DEADLINE_S": "90"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def test_two_nodes_two_workers_survive_a_kill(processes: Processes, pg_url: str) -> None:
    db = pg_url
    key = capd_cli(db, "account", "create", "--balance", "1").strip().splitlines()[-1]
    token = capd_cli(db, "worker-token", "create", "--types",
                     "ImageToTextTask").strip().splitlines()[-1]
    urls = []
    nodes = []
    for name in ("node-a", "node-b"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = processes.start(name, ["--db", db, "serve", "--port", str(port)],
                               **NODE_SETTINGS)
        urls.append(url)
        nodes.append(proc)
    for url, proc in zip(urls, nodes, strict=True):
        processes.wait_healthy(url, proc)
    # a first lease call makes ImageToText served, so the tasks can be queued up front
    assert post(urls[0], "worker/v1/lease", {"workerToken": token,
                                             "types": ["ImageToTextTask"]})["errorId"] == 0
    bodies = [(text, b64(captcha_png(text))) for text in TEXTS * 4]
    tasks: dict[int, str] = {}
    for i, (text, body) in enumerate(bodies):
        answer = post(urls[i % 2], "createTask", {"clientKey": key, "task": {
            "type": "ImageToTextTask", "body": body}})
        assert answer["errorId"] == 0, answer
        tasks[answer["taskId"]] = text

    workers = [
        processes.start("worker-1", ["worker", "--url", urls[0], "--url", urls[1],
                                     "--token", token, "--threads", "1"]),
        processes.start("worker-2", ["worker", "--url", f"{urls[1]},{urls[0]}",
                                     "--token", token, "--threads", "1"]),
    ]

    async def finished_count() -> int:
        store = PostgresStore(db)
        try:
            stats = await store.stats(time.time())
            return sum(r["count"] for r in stats["tasks"] if r["state"] in ("solved", "failed"))
        finally:
            await store.close()

    # kill node A and worker 1 mid-run, once both workers have done some of the work
    deadline = time.monotonic() + 90
    while asyncio.run(finished_count()) < 10:
        assert time.monotonic() < deadline, processes.log("worker-1")
        time.sleep(0.05)
    nodes[0].send_signal(signal.SIGKILL)
    workers[0].send_signal(signal.SIGKILL)
    nodes[0].wait(timeout=10)
    workers[0].wait(timeout=10)
    assert asyncio.run(finished_count()) < len(tasks), "all work finished before the kill"

    finished: dict[int, dict] = {}

    def poll_all(node: str) -> None:
        for task_id in sorted(tasks):
            if task_id not in finished:
                answer = post(node, "getTaskResult", {"clientKey": key, "taskId": task_id})
                if answer.get("status") != "processing":
                    finished[task_id] = answer

    end = time.monotonic() + 120
    while len(finished) < len(tasks):
        poll_all(urls[1])  # every task, whichever node it was created through
        assert time.monotonic() < end, f"{len(finished)}/{len(tasks)} finished"
        time.sleep(0.2)

    solved = {tid: a for tid, a in finished.items() if a["errorId"] == 0}
    assert len(solved) >= len(tasks) - 4  # the engine reads these texts; allow stray misses
    assert sum(a["solution"]["text"] == tasks[tid] for tid, a in solved.items()) >= len(
        solved) - 4

    async def books() -> tuple[int, int, int, list[int]]:
        store = PostgresStore(db)
        try:
            account = await store.account_for_key(key)
            assert account is not None
            entries = await store.ledger(account.id, 1000)
            charges = [e.task_id for e in entries if e.kind == "charge"]
            return (account.balance_units, account.reserved_units,
                    await store.ledger_sum(account.id), charges)
        finally:
            await store.close()

    balance, reserved, ledger_sum, charged = asyncio.run(books())
    assert sorted(charged) == sorted(solved)  # each solved task charged exactly once
    assert reserved == 0
    assert balance == ledger_sum == 100_000_000 - PRICE_UNITS * len(solved)
