"""A SQLite write lock held by another process (issue 12): how capd answers meanwhile.

Run from the repository root with the project's venv::

    .venv/bin/python -m bench.bench_lock [--lock-s 3] [--baseline DIR]

What it does, all on 127.0.0.1, in a temporary directory:

1. creates a fresh SQLite database and an account through the ``capd`` CLI and starts
   ``capd serve`` in a subprocess (the per-task poll limits raised so that the
   benchmark's own polling is never refused; otherwise capd's defaults, including the
   5 s busy timeout), then has it solve a few ImageToText tasks.
2. polls those solved tasks from ``--pollers`` concurrent clients, back to back, while a
   second connection to the file (as the CLI, ``capd backup`` or a checkpoint would) takes
   the write lock with ``BEGIN IMMEDIATE`` and holds it ``--lock-s`` seconds; meanwhile
   ``--creates`` clients each send one createTask.
3. prints the polls answered while the lock was held (count, p50, p99, max, errors), the
   same figures for as long a window just before the lock (what the machine gives
   without it: on a shared machine the difference is the one to read), and each
   createTask's outcome: its HTTP status and errorCode, how long it took, and whether it
   was answered before or after the lock was released.

Targets (issue 12): polls p99 <= 100 ms with no errors; createTask succeeds once the lock
is released, or answers 503 ERROR_SERVICE_UNAVAILABLE within the busy timeout.

With ``--baseline DIR`` the same run is repeated against a capd imported from the source
tree DIR (say a ``git archive`` of the commit before a change), on a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.bench_core import (
    HOST,
    JSON_HEADERS,
    NO_LIMIT,
    RESULT_TTL_S,
    BenchError,
    Processes,
    _log_tail,
    bench_main,
    capd_cmd,
    clean_env,
    create_account,
    free_port,
    log,
    machine_info,
    make_captchas,
    percentile,
    solve_one,
    wait_healthy,
)

TARGET_POLL_P99_MS = 100.0
BUSY_TIMEOUT_S = 5.0  # capd's SQLite busy timeout (capd.store.sqlite's default)
LEAD_S = 0.3  # polls start this long before the lock, createTasks this long after it
REQUEST_TIMEOUT_S = 30.0


@dataclass
class Run:
    """What the clients saw while the lock was held."""

    target: str
    poll_ms: list[float] = field(default_factory=list)  # polls sent while it was held
    poll_errors: list[str] = field(default_factory=list)
    # the same clients in as long a window just before the lock: what this machine gives
    reference_ms: list[float] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)
    lock_held_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok_creates = [c for c in self.creates if c["status"] == 200 and c["errorId"] == 0]
        unavailable = [c for c in self.creates if c["status"] == 503
                       and c["errorCode"] == "ERROR_SERVICE_UNAVAILABLE"
                       and c["took_s"] <= BUSY_TIMEOUT_S + 1]
        return {
            "target": self.target, "lock_held_s": round(self.lock_held_s, 3),
            "polls": len(self.poll_ms), "poll_errors": len(self.poll_errors),
            "poll_error_samples": self.poll_errors[:5],
            "poll_p50_ms": round(percentile(self.poll_ms, 50), 2),
            "poll_p99_ms": round(percentile(self.poll_ms, 99), 2),
            "poll_max_ms": round(max(self.poll_ms, default=float("nan")), 2),
            "reference_polls": len(self.reference_ms),
            "reference_p50_ms": round(percentile(self.reference_ms, 50), 2),
            "reference_p99_ms": round(percentile(self.reference_ms, 99), 2),
            "creates": self.creates,
            "meets_target": (percentile(self.poll_ms, 99) <= TARGET_POLL_P99_MS
                             and not self.poll_errors
                             and len(ok_creates) + len(unavailable) == len(self.creates)),
        }


def hold_lock(db_path: Path, seconds: float, taken: threading.Event,
              released: threading.Event) -> float:
    """Another process's write transaction: BEGIN IMMEDIATE, ``seconds``, ROLLBACK."""
    other = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        taken.set()
        time.sleep(seconds)
        other.execute("ROLLBACK")
        held = time.monotonic() - started
        released.set()
        return held
    finally:
        other.close()


async def during_lock(url: str, db_path: Path, key: str, task_ids: list[int],
                      args: argparse.Namespace, target: str) -> Run:
    run = Run(target)
    taken, released = threading.Event(), threading.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reference_from = time.monotonic() + LEAD_S  # the first polls warm the connections

    async def poller(client: httpx.AsyncClient, n: int) -> None:
        body = [{"clientKey": key, "taskId": task_id} for task_id in task_ids]
        i = n
        while not stop.is_set():
            sent = time.monotonic()
            in_lock = taken.is_set() and not released.is_set()
            try:
                answer = await client.post("/getTaskResult", json=body[i % len(body)])
                outcome = (answer.json().get("status") if answer.status_code == 200
                           else f"HTTP {answer.status_code}")
                if outcome != "ready":
                    outcome = f"{outcome}: {answer.text[:120]}"
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}"
            took_ms = (time.monotonic() - sent) * 1e3
            if in_lock:
                run.poll_ms.append(took_ms)
                if outcome != "ready":
                    run.poll_errors.append(outcome)
            elif not taken.is_set() and sent >= reference_from:
                run.reference_ms.append(took_ms)
            i += 1

    async def create(client: httpx.AsyncClient, body: bytes) -> None:
        await loop.run_in_executor(None, taken.wait)
        await asyncio.sleep(LEAD_S)
        sent = time.monotonic()
        try:
            answer = await client.post("/createTask", content=body, headers=JSON_HEADERS)
            status, data = answer.status_code, answer.json()
        except httpx.HTTPError as exc:
            status, data = 0, {"errorId": 1, "errorCode": type(exc).__name__}
        run.creates.append({
            "status": status, "errorId": data.get("errorId"),
            "errorCode": data.get("errorCode"), "took_s": round(time.monotonic() - sent, 3),
            "answered": "after the lock" if released.is_set() else "during the lock"})

    bodies = [c.create_body(key) for c in make_captchas(args.creates, seed=99)]
    limits = httpx.Limits(max_connections=args.pollers + args.creates)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits,
                                 trust_env=False) as client:
        pollers = [asyncio.create_task(poller(client, n)) for n in range(args.pollers)]
        creates = [asyncio.create_task(create(client, body)) for body in bodies]
        await asyncio.sleep(LEAD_S + args.lock_s)
        run.lock_held_s = await loop.run_in_executor(None, hold_lock, db_path, args.lock_s,
                                                     taken, released)
        await asyncio.gather(*creates)
        await asyncio.sleep(LEAD_S)
        stop.set()
        await asyncio.gather(*pollers)
    return run


def one_target(name: str, source: str | None, args: argparse.Namespace, procs: Processes,
               workdir: Path) -> Run:
    folder = workdir / name
    folder.mkdir()
    db_path = folder / "capd.db"
    db_url = f"sqlite:///{db_path}"
    key = create_account(db_url, folder)
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {"CAPD_MAX_POLLS_PER_S": str(NO_LIMIT), "CAPD_MAX_POLLS_PER_TASK": str(NO_LIMIT),
           "CAPD_RESULT_TTL_S": str(RESULT_TTL_S)}
    if source:
        env["PYTHONPATH"] = source
    log_path = folder / "capd.log"
    proc = procs.start(name, capd_cmd(db_url, "serve", "--host", HOST, "--port", str(port)),
                       env=clean_env(**env), cwd=folder, log_path=log_path)
    wait_healthy(name, url, proc, log_path)
    log(f"{name}: serving on {url} (pid {proc.pid}){f' from {source}' if source else ''}")
    task_ids = []
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
        for captcha in make_captchas(args.solved, seed=1):
            solved = solve_one(client, key, captcha, 0.02)
            if solved.answer.get("status") == "ready":
                task_ids.append(solved.task_id)
    if not task_ids:
        raise BenchError(f"{name} solved none of the captchas")
    log(f"{name}: {len(task_ids)} solved tasks to poll; holding the write lock"
        f" {args.lock_s:g} s")
    run = asyncio.run(during_lock(url, db_path, key, task_ids, args, name))
    if proc.poll() is not None:
        raise BenchError(f"{name} exited early:\n{_log_tail(log_path)}")
    proc.terminate()
    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_lock",
                                description="capd while another process holds the SQLite"
                                            " write lock (see the module docstring)")
    p.add_argument("--lock-s", type=float, default=3.0,
                   help="seconds the write lock is held (default 3)")
    p.add_argument("--pollers", type=int, default=4,
                   help="concurrent clients polling solved tasks (default 4)")
    p.add_argument("--creates", type=int, default=3,
                   help="createTask requests sent during the lock (default 3)")
    p.add_argument("--solved", type=int, default=3, help="solved tasks to poll (default 3)")
    p.add_argument("--baseline", metavar="DIR", default=None,
                   help="also run against a capd imported from the source tree DIR")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    if args.lock_s <= 0 or min(args.pollers, args.creates, args.solved) < 1:
        p.error("counts and durations must be positive")
    return args


def run(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = machine_info()
    runs = [one_target("capd", None, args, procs, workdir)]
    if args.baseline:
        runs.append(one_target("baseline", str(Path(args.baseline).resolve()), args, procs,
                               workdir))
    return {"machine": machine,
            "config": {"lock_s": args.lock_s, "pollers": args.pollers,
                       "creates": args.creates, "solved": args.solved,
                       "baseline": args.baseline},
            "runs": [r.summary() for r in runs]}


def print_summary(report: dict[str, Any]) -> None:
    machine = report["machine"]
    log(f"\n== SQLite write lock held by another connection ({report['config']['lock_s']:g} s)"
        f" -- {machine['nproc']} CPUs, load average {machine['loadavg_start']}")
    for r in report["runs"]:
        log(f"{r['target']}: lock held {r['lock_held_s']:.2f} s; {r['polls']} polls of solved"
            f" tasks meanwhile: p50 {r['poll_p50_ms']:.1f} ms, p99 {r['poll_p99_ms']:.1f} ms,"
            f" max {r['poll_max_ms']:.1f} ms, errors {r['poll_errors']}")
        log(f"    reference, the same clients just before the lock: {r['reference_polls']}"
            f" polls, p50 {r['reference_p50_ms']:.1f} ms, p99 {r['reference_p99_ms']:.1f} ms")
        for sample in r["poll_error_samples"]:
            log(f"    poll error: {sample}")
        for c in r["creates"]:
            outcome = "ok" if c["status"] == 200 and c["errorId"] == 0 else c["errorCode"]
            log(f"    createTask: HTTP {c['status']} {outcome} after {c['took_s']:.2f} s,"
                f" answered {c['answered']}")
        verdict = "met" if r["meets_target"] else "MISSED"
        log(f"  target (poll p99 <= {TARGET_POLL_P99_MS:.0f} ms, no errors; createTask ok after"
            f" the lock or 503 within the busy timeout): {verdict}")


def main(argv: list[str] | None = None) -> int:
    return bench_main("bench_lock", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    raise SystemExit(main())
