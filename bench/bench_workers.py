"""Worker-protocol benchmark of capd: lease+complete throughput, and what the queue path
adds to ImageToText latency when OCR runs in a separate ``capd worker`` process.

Run from the repository root with the project's venv::

    .venv/bin/python -m bench.bench_workers [--tasks N] [--concurrency 1,4,16] [--rounds R]

See ``--help`` for the other knobs. Everything runs on 127.0.0.1 in a temporary directory,
with fresh SQLite databases; ``CAPD_*`` variables of the calling shell are not passed on.

1. Lease+complete throughput (spec §7): ``capd serve`` in a subprocess, a worker token from
   ``capd worker-token create``, an account from ``capd account create``. One lease call
   makes TurnstileTaskProxyless served; then, for each client kind and concurrency level,
   ``--tasks`` tasks are created up front and that many asyncio workers loop lease(max 1,
   no wait) -> complete(a token of ``--token-chars`` characters) until the queue is empty.
   Client kinds: ``httpx`` (the workers share one ``httpx.AsyncClient``, as a Python worker
   would) and ``raw`` (a minimal keep-alive HTTP/1.1 client per worker: on a small, shared
   machine httpx's own cost per request hides capd's). Figures: completions/s; per task the
   round trip from sending the lease call to receiving the completion's answer (p50/p99),
   with the lease and complete calls' own round trips; capd's and the client's CPU while
   draining. ``CAPD_QUEUE_DEPTH_LIMIT`` is raised so that the tasks fit in the queue.
2. ImageToText through the queue: two capd servers side by side, (A) the default
   in-process OCR (as ``bench.bench_core`` measures it) and (B) ``CAPD_BUILTIN_OCR=false``
   with one ``capd worker --threads 1`` process on the same machine. One client, the same
   captcha images (``bench_core.make_captchas``); createTask, then a poll every
   ``--poll-ms`` until ready; each image is solved on both servers in turn (the order
   alternating, so that drift in the machine's load reaches both alike), ``--rounds``
   passes. The poll limits are raised as in bench_core. Figures: createTask->ready p50/p99
   of each; capd's own createTask->finish from its database; the bare recogniser's latency
   in this process for reference; and the difference B - A, the latency the queue path
   adds.
3. prints a summary with the machine and writes it as JSON to ``bench/results/``.

capd, the client and the worker share the machine, so on a small machine the figures are
bounded by CPU, and other load on it shows (the summary gives the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.bench_core import (
    HOST,
    JSON_HEADERS,
    NO_LIMIT,
    RESULT_TTL_S,
    BenchError,
    Captcha,
    Processes,
    Solve,
    bench_bare,
    bench_main,
    capd_cmd,
    clean_env,
    create_account,
    free_port,
    is_correct,
    log,
    machine_info,
    make_captchas,
    median,
    percentile,
    process_cpu_s,
    server_solve_ms,
    solve_one,
    wait_healthy,
)
from capd.config import Settings
from capd.store.secrets import secret_digest

TOKEN_TYPE = "TurnstileTaskProxyless"
IMAGE_TYPE = "ImageToTextTask"
TOKEN_TASK = {"type": TOKEN_TYPE, "websiteURL": "https://example.com/login",
              "websiteKey": "0x4AAAAAAABkMYinukE8nzY"}
CREATE_CONCURRENCY = 16
SERVED_TIMEOUT_S = 60.0
POLL_ENV = {"CAPD_MAX_POLLS_PER_S": str(NO_LIMIT), "CAPD_MAX_POLLS_PER_TASK": str(NO_LIMIT),
            "CAPD_RESULT_TTL_S": str(RESULT_TTL_S)}


def new_worker_token(db_url: str, cwd: Path, types: str) -> str:
    out = subprocess.run(capd_cmd(db_url, "worker-token", "create", "--types", types,
                                  "--name", "bench"),
                         env=clean_env(), cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BenchError(f"capd worker-token create failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def start_serve(procs: Processes, name: str, workdir: Path, env: dict[str, str]
                ) -> tuple[str, str, Path, subprocess.Popen[bytes]]:
    """A fresh database with a rich account, and capd serve on it: (url, key, db, proc)."""
    db_path = workdir / f"{name}.db"
    db_url = f"sqlite:///{db_path}"
    key = create_account(db_url, workdir)
    url = f"http://{HOST}:{free_port()}"
    log_path = workdir / f"{name}.log"
    proc = procs.start(name, capd_cmd(db_url, "serve", "--host", HOST, "--port",
                                      url.rsplit(":", 1)[1]),
                       env=clean_env(**env), cwd=workdir, log_path=log_path)
    wait_healthy(name, url, proc, log_path)
    return url, key, db_path, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stats_ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": median(values), "p99_ms": percentile(values, 99),
            "mean_ms": statistics.fmean(values) if values else float("nan")}


# -- phase 1: lease+complete throughput ---------------------------------------------------------
async def _create_tokens(client: httpx.AsyncClient, key: str, count: int) -> list[int]:
    body = json.dumps({"clientKey": key, "task": TOKEN_TASK}).encode()
    ids: list[int] = []
    left = iter(range(count))

    async def creator() -> None:
        for _ in left:
            answer = (await client.post("/createTask", content=body,
                                        headers=JSON_HEADERS)).json()
            if answer.get("errorId"):
                raise BenchError(f"createTask refused: {answer}")
            ids.append(int(answer["taskId"]))

    await asyncio.gather(*(creator() for _ in range(CREATE_CONCURRENCY)))
    return ids


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on one connection: POST a JSON body, read a
    Content-Length answer. A fraction of httpx's CPU per request, so that the figures show
    capd rather than the client on a small machine."""

    def __init__(self, url: str) -> None:
        parts = httpx.URL(url)
        self.host, self.port = parts.host, parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> dict[str, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n%s" % (
                              path.encode(), self.host.encode(), self.port, len(body), body))
        status = await self.reader.readline()
        length = -1
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if not status.startswith(b"HTTP/1.1 200") or length < 0:
            raise BenchError(f"unexpected answer from capd: {status!r}")
        answer: dict[str, Any] = json.loads(await self.reader.readexactly(length))
        return answer

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def _drain(url: str, key: str, token: str, concurrency: int, tasks: int,
                 token_chars: int, server_pid: int, client_kind: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=max(concurrency, CREATE_CONCURRENCY),
                          max_keepalive_connections=max(concurrency, CREATE_CONCURRENCY))
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False,
                                 limits=limits) as client:
        # the type is served: a worker has asked within the window
        served = await client.post("/worker/v1/lease", json={
            "workerToken": token, "types": [TOKEN_TYPE], "max": 1, "waitSeconds": 0})
        if served.json().get("errorId"):
            raise BenchError(f"lease refused: {served.text}")
        ids = await _create_tokens(client, key, tasks)
        lease_body = json.dumps({"workerToken": token, "types": [TOKEN_TYPE], "max": 1,
                                 "waitSeconds": 0}).encode()
        solution = {"token": ("0.x" + "A" * token_chars)[:token_chars]}
        cycle: list[float] = []
        lease_rtt: list[float] = []
        complete_rtt: list[float] = []
        refused: Counter[str] = Counter()

        async def via_httpx(path: str, body: bytes) -> dict[str, Any]:
            answer: dict[str, Any] = (await client.post(path, content=body,
                                                        headers=JSON_HEADERS)).json()
            return answer

        async def worker() -> None:
            raw = RawConnection(url) if client_kind == "raw" else None
            post = raw.post if raw is not None else via_httpx
            try:
                while True:
                    t0 = time.perf_counter()
                    answer = await post("/worker/v1/lease", lease_body)
                    t1 = time.perf_counter()
                    if answer.get("errorId"):
                        raise BenchError(f"lease refused: {answer}")
                    leases = answer["leases"]
                    if not leases:
                        return
                    lease_rtt.append((t1 - t0) * 1e3)
                    body = json.dumps({"workerToken": token, "leaseId": leases[0]["leaseId"],
                                       "solution": solution}).encode()
                    done = await post("/worker/v1/complete", body)
                    t2 = time.perf_counter()
                    if done.get("errorId"):
                        refused[str(done.get("errorCode"))] += 1
                        continue
                    complete_rtt.append((t2 - t1) * 1e3)
                    cycle.append((t2 - t0) * 1e3)
            finally:
                if raw is not None:
                    await raw.close()

        cpu0, own0 = process_cpu_s(server_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        server_cpu = process_cpu_s(server_pid) - cpu0
        client_cpu = time.process_time() - own0
    return {"ids": ids, "elapsed_s": elapsed, "completed": len(cycle),
            "server_cpu_pct": server_cpu / elapsed * 100,
            "client_cpu_pct": client_cpu / elapsed * 100,
            "completions_per_s": len(cycle) / elapsed, "cycle": stats_ms(cycle),
            "lease_rtt": stats_ms(lease_rtt), "complete_rtt": stats_ms(complete_rtt),
            "refused": dict(refused)}


def bench_token_throughput(procs: Processes, workdir: Path, levels: list[int], tasks: int,
                           token_chars: int, clients: list[str]) -> dict[str, Any]:
    log(f"\n== lease+complete throughput: {TOKEN_TYPE}, {tasks} tasks per level, concurrent"
        f" workers {levels}, clients {clients}")
    env = {"CAPD_QUEUE_DEPTH_LIMIT": str(max(tasks * 2, 1000))}
    url, key, db_path, proc = start_serve(procs, "capd-tokens", workdir, env)
    token = new_worker_token(f"sqlite:///{db_path}", workdir, TOKEN_TYPE)
    log(f"capd serving on {url} (pid {proc.pid}) with {env}")
    for kind in clients:  # warm-up, discarded
        asyncio.run(_drain(url, key, token, 4, 200, token_chars, proc.pid, kind))
    runs = []
    for kind in clients:
        for level in levels:
            run = asyncio.run(_drain(url, key, token, level, tasks, token_chars, proc.pid,
                                     kind))
            ids = run.pop("ids")
            run["concurrency"] = level
            run["client"] = kind
            run["solved_in_db"] = _count_solved(db_path, ids)
            runs.append(run)
            log(f"{kind:5} {level:3} workers: {run['completions_per_s']:6.0f} completions/s"
                f" ({run['completed']} in {run['elapsed_s']:.2f} s); lease->complete"
                f" p50 {run['cycle']['p50_ms']:.2f} ms p99 {run['cycle']['p99_ms']:.2f} ms"
                f" (lease p50 {run['lease_rtt']['p50_ms']:.2f}, complete p50"
                f" {run['complete_rtt']['p50_ms']:.2f} ms); CPU capd"
                f" {run['server_cpu_pct']:.0f}%, client {run['client_cpu_pct']:.0f}%;"
                f" refused {run['refused'] or 'none'}; solved in db"
                f" {run['solved_in_db']}/{len(ids)}")
    books = _books(db_path, key)
    stop(proc)
    if proc.returncode not in (0, -15):
        raise BenchError(f"capd serve exited with {proc.returncode}")
    return {"tasks_per_level": tasks, "token_chars": token_chars, "capd_env": env,
            "runs": runs, "books": books}


def _count_solved(db_path: Path, ids: list[int]) -> int:
    solved = 0
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            solved += db.execute(f"SELECT COUNT(*) FROM tasks WHERE id IN ({marks})"
                                 " AND state = 'solved'", chunk).fetchone()[0]
    return solved


def _books(db_path: Path, key: str) -> dict[str, Any]:
    """The account's balance and reserve against its ledger: a sanity check of the run."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        balance, reserved, account_id = db.execute(
            "SELECT balance_units, reserved_units, id FROM accounts WHERE id ="
            " (SELECT account_id FROM api_keys WHERE key_hash = ?)",
            (secret_digest(key),)).fetchone()
        ledger = db.execute("SELECT SUM(amount_units) FROM ledger WHERE account_id = ?",
                            (account_id,)).fetchone()[0]
        charges, twice = db.execute(
            "SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT task_id) FROM ledger"
            " WHERE account_id = ? AND kind = 'charge'", (account_id,)).fetchone()
    return {"balance_units": balance, "reserved_units": reserved, "ledger_sum": ledger,
            "consistent": balance == ledger and reserved == 0, "charges": charges,
            "charged_twice": twice}


# -- phase 2: ImageToText, in-process vs. through the queue ----------------------------------
def wait_served(url: str, key: str, captcha: Captcha, worker: subprocess.Popen[bytes],
                worker_log: Path) -> None:
    """Retry createTask until ImageToText is served (the worker's first lease call, after it
    has loaded its recogniser); the task created is solved as a warm-up."""
    deadline = time.monotonic() + SERVED_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        while True:
            solve = solve_one(client, key, captcha, 0.005)
            if solve.answer.get("errorCode") != "ERROR_NO_SLOT_AVAILABLE":
                return
            if worker.poll() is not None:
                raise BenchError(f"capd worker exited with {worker.returncode}:\n"
                                 f"{worker_log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise BenchError("capd worker never leased")
            time.sleep(0.05)


def light_rounds(paths: dict[str, tuple[str, str, Path]], captchas: list[Captcha],
                 rounds: int, poll_s: float
                 ) -> tuple[dict[str, list[tuple[Solve, bool]]], dict[str, Counter[str]]]:
    """Image after image, each solved on every path in turn (the order alternating), so
    that drift in the machine's load reaches all paths alike."""
    solves: dict[str, list[tuple[Solve, bool]]] = {name: [] for name in paths}
    errors: dict[str, Counter[str]] = {name: Counter() for name in paths}
    names = list(paths)
    with contextlib.ExitStack() as stack:
        clients = {name: stack.enter_context(httpx.Client(base_url=url, timeout=30,
                                                          trust_env=False))
                   for name, (url, _, _) in paths.items()}
        for name in names:  # warm the connections, discarded
            solve_one(clients[name], paths[name][1], captchas[0], poll_s)
        for r in range(rounds):
            got: dict[str, list[float]] = {name: [] for name in names}
            for i, captcha in enumerate(captchas):
                for name in (names if (i + r) % 2 == 0 else names[::-1]):
                    solve = solve_one(clients[name], paths[name][1], captcha, poll_s)
                    if solve.answer.get("errorId"):
                        errors[name][str(solve.answer.get("errorCode"))] += 1
                        continue
                    solves[name].append((solve, is_correct(solve.answer["solution"]["text"],
                                                           captcha.text)))
                    got[name].append(solve.e2e_ms)
            log(f"round {r + 1}: " + "; ".join(
                f"{name} e2e p50 {median(v):.2f} ms p99 {percentile(v, 99):.2f} ms"
                for name, v in got.items()))
    return solves, errors


def summarise_light(solves: list[tuple[Solve, bool]], errors: Counter[str],
                    db_path: Path) -> dict[str, Any]:
    e2e = [s.e2e_ms for s, _ in solves]
    return {
        "solved": len(solves), "correct": sum(ok for _, ok in solves), "errors": dict(errors),
        **stats_ms(e2e), "min_ms": min(e2e) if e2e else float("nan"),
        "create_rtt_p50_ms": median([s.create_ms for s, _ in solves]),
        "poll_rtt_p50_ms": median([p for s, _ in solves for p in s.poll_ms]),
        "polls_per_task_p50": median([len(s.poll_ms) for s, _ in solves]),
        "server_solve_p50_ms": median(server_solve_ms(db_path, [s.task_id for s, _ in solves])),
    }


def bench_image_paths(procs: Processes, workdir: Path, captchas: list[Captcha], rounds: int,
                      poll_s: float) -> dict[str, Any]:
    log(f"\n== ImageToText, light load: {len(captchas)} images x {rounds} round(s) per path,"
        f" one client, a poll every {poll_s * 1e3:.0f} ms; (A) in-process OCR,"
        f" (B) CAPD_BUILTIN_OCR=false + one `capd worker --threads 1`")
    a_url, a_key, a_db, a_proc = start_serve(procs, "capd-inprocess", workdir, POLL_ENV)
    b_env = {**POLL_ENV, "CAPD_BUILTIN_OCR": "false"}
    b_url, b_key, b_db, b_proc = start_serve(procs, "capd-queue", workdir, b_env)
    token = new_worker_token(f"sqlite:///{b_db}", workdir, IMAGE_TYPE)
    worker_log = workdir / "capd-worker.log"
    worker = procs.start("capd-worker", capd_cmd(f"sqlite:///{b_db}", "worker", "--url", b_url,
                                                 "--token", token, "--threads", "1"),
                         env=clean_env(), cwd=workdir, log_path=worker_log)
    wait_served(b_url, b_key, captchas[0], worker, worker_log)
    log(f"(A) capd on {a_url} (pid {a_proc.pid}); (B) capd on {b_url} (pid {b_proc.pid})"
        f" with capd worker pid {worker.pid}")
    paths = {"inprocess": (a_url, a_key, a_db), "queue": (b_url, b_key, b_db)}
    solves, errors = light_rounds(paths, captchas, rounds, poll_s)
    for name, proc in (("capd worker", worker), ("capd (A)", a_proc), ("capd (B)", b_proc)):
        if proc.poll() is not None:
            raise BenchError(f"{name} exited early with {proc.returncode}")
    result = {name: summarise_light(solves[name], errors[name], paths[name][2])
              for name in paths}
    for proc in (worker, a_proc, b_proc):
        stop(proc)
    for name, s in result.items():
        log(f"{name:9}: e2e p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms; capd"
            f" createTask->finish p50 {s['server_solve_p50_ms']:.2f} ms;"
            f" {s['polls_per_task_p50']:.0f} polls/task; correct {s['correct']}/{s['solved']};"
            f" errors {s['errors'] or 'none'}")
    return {"rounds": rounds, "poll_interval_ms": poll_s * 1e3, "worker_threads": 1,
            "capd_env": {"inprocess": POLL_ENV, "queue": b_env}, **result}


# -- summary -----------------------------------------------------------------------------------
def print_summary(report: dict[str, Any]) -> None:
    m, tok, img, bare = (report["machine"], report["token_throughput"], report["image"],
                         report["bare_ocr"])
    a, b = img["inprocess"], img["queue"]
    lines = [
        "",
        "=" * 78,
        "capd worker-protocol benchmark summary",
        "=" * 78,
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), python {m['python']}",
        f"load average: start {m['loadavg_start']}, end {m['loadavg_end']}"
        " (machine shared: expect noise)",
        "",
        f"lease+complete, {tok['tasks_per_level']} {TOKEN_TYPE} tasks per level, lease max 1"
        f" without waiting, a {tok['token_chars']}-char token; capd, client on one machine:",
        f"  {'client':6} {'workers':>7}  {'compl/s':>8}  {'cycle p50':>9}  {'cycle p99':>9}"
        f"  {'lease p50':>9}  {'compl p50':>9}  {'capd CPU':>8}  {'client CPU':>10}",
    ]
    for run in tok["runs"]:
        lines.append(
            f"  {run['client']:6} {run['concurrency']:7}  {run['completions_per_s']:8.0f}"
            f"  {run['cycle']['p50_ms']:7.2f}ms  {run['cycle']['p99_ms']:7.2f}ms"
            f"  {run['lease_rtt']['p50_ms']:7.2f}ms  {run['complete_rtt']['p50_ms']:7.2f}ms"
            f"  {run['server_cpu_pct']:7.0f}%  {run['client_cpu_pct']:9.0f}%")
    books = tok["books"]
    lines += [
        "  (cycle: lease sent -> completion answered, per task; CPU: % of one core while"
        " draining;",
        "   httpx: one httpx.AsyncClient; raw: a minimal keep-alive HTTP/1.1 client per"
        " worker)",
        f"  books after the run: {books['charges']} charges, {books['charged_twice']} twice,"
        f" balance {'==' if books['consistent'] else '!='} ledger sum, reserved"
        f" {books['reserved_units']}",
        "",
        f"ImageToText, {report['config']['images']} captchas x {img['rounds']} round(s) per path,"
        f" 1 client, a poll every {img['poll_interval_ms']:.0f} ms:",
        f"  bare recogniser (this process, 1 thread): p50 {bare['p50_ms']:.2f} ms,"
        f" p99 {bare['p99_ms']:.2f} ms",
        f"  (A) in-process OCR (bench_core's path):  e2e p50 {a['p50_ms']:.2f} ms,"
        f" p99 {a['p99_ms']:.2f} ms; capd createTask->finish p50"
        f" {a['server_solve_p50_ms']:.2f} ms; correct {a['correct']}/{a['solved']}",
        f"  (B) capd worker through the queue:      e2e p50 {b['p50_ms']:.2f} ms,"
        f" p99 {b['p99_ms']:.2f} ms; capd createTask->finish p50"
        f" {b['server_solve_p50_ms']:.2f} ms; correct {b['correct']}/{b['solved']}",
        f"  overhead over bare, p50: (A) {a['p50_ms'] - bare['p50_ms']:.2f} ms,"
        f" (B) {b['p50_ms'] - bare['p50_ms']:.2f} ms",
        f"  the queue path adds (B - A): p50 {b['p50_ms'] - a['p50_ms']:+.2f} ms,"
        f" p99 {b['p99_ms'] - a['p99_ms']:+.2f} ms; capd createTask->finish p50"
        f" {b['server_solve_p50_ms'] - a['server_solve_p50_ms']:+.2f} ms",
        "=" * 78,
    ]
    log("\n".join(lines))


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_workers",
                                description="capd worker-protocol benchmark (see the module"
                                            " docstring)")
    p.add_argument("--tasks", type=int, default=600,
                   help="token tasks per concurrency level (default 600)")
    p.add_argument("--concurrency", default="1,4,16",
                   help="concurrent workers per level, comma-separated (default 1,4,16)")
    p.add_argument("--clients", default="httpx,raw",
                   help="worker HTTP clients to run, of httpx and raw (default both)")
    p.add_argument("--token-chars", type=int, default=600,
                   help="length of the token each completion carries (default 600)")
    p.add_argument("--images", type=int, default=50, help="distinct captchas (default 50)")
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over the images per ImageToText path (default 2)")
    p.add_argument("--passes", type=int, default=2,
                   help="passes over the images for the bare recogniser (default 2)")
    p.add_argument("--poll-ms", type=float, default=5.0,
                   help="ImageToText poll interval in ms (default 5)")
    p.add_argument("--seed", type=int, default=1, help="captcha text seed (default 1)")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error("--concurrency takes comma-separated integers")
    args.client_kinds = [x.strip() for x in args.clients.split(",") if x.strip()]
    if not args.client_kinds or set(args.client_kinds) - {"httpx", "raw"}:
        p.error("--clients takes httpx and/or raw")
    if (not args.levels or min(args.levels) < 1 or args.tasks < 1 or args.images < 1
            or args.rounds < 1 or args.passes < 1 or args.token_chars < 1):
        p.error("counts must be positive")
    return args


def run(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = machine_info()
    log(f"machine: {machine['nproc']} CPUs, {machine['cpu_model']},"
        f" load average {machine['loadavg_start']}")
    tokens = bench_token_throughput(procs, workdir, args.levels, args.tasks, args.token_chars,
                                    args.client_kinds)
    captchas = make_captchas(args.images, args.seed)
    image = bench_image_paths(procs, workdir, captchas, args.rounds, args.poll_ms / 1e3)
    # the servers above run on the default engine, so the bare reading uses it too
    bare = bench_bare(captchas, args.passes, Settings().ocr_engine)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"machine": machine,
            "config": {"tasks": args.tasks, "concurrency": args.levels,
                       "clients": args.client_kinds,
                       "token_chars": args.token_chars, "images": args.images,
                       "rounds": args.rounds, "passes": args.passes,
                       "poll_ms": args.poll_ms, "seed": args.seed},
            "token_throughput": tokens, "image": image, "bare_ocr": bare}


def main(argv: list[str] | None = None) -> int:
    return bench_main("bench_workers", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    raise SystemExit(main())
