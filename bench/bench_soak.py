"""Soak: a bounded mixed load on loopback against a real ``capd serve`` process for a few
minutes, then the figures and the money invariants (issue 7 §5). Not part of the suite.

    .venv/bin/python bench/bench_soak.py [--minutes 3] [--clients 8] [--max-growth-mb 50]
        [--payload-retention-s S] [--task-retention-s S] [--sample-s 60]

With the retention options (say 60 and 300 for a 30-minute run) it shows retention at
work: every ``--sample-s`` it prints the database's size on disk (file and WAL), the
server's RSS and the task rows left, and at the end whether both levelled off.

Clients create image tasks (built-in OCR) and token tasks (served by in-process worker
threads over the worker protocol), poll them, report some, ask balances, send unknown ids
and malformed bodies, and use the 2captcha door. Prints requests served, error-code counts,
p50/p99 latency, the server's RSS at start and end, and every invariant check; exits
non-zero when an invariant breaks, a 5xx answers, or RSS grows past the bound.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hardening.invariants import task_states, violations  # noqa: E402
from tests.helpers import b64, captcha_png, free_port  # noqa: E402
from tests.processes import capd_cli, capd_env  # noqa: E402

TOKEN_TASK = {"type": "TurnstileTaskProxyless", "websiteURL": "https://example.com/",
              "websiteKey": "0x4AAAAAAAC3DHQFLr1GavRN"}
TEXTS = ("txwvdz", "y7kf", "pe5na3", "xxhfd", "fbte", "h2nwm", "dn4en", "udzwz")


def db_mb(path: Path) -> float:
    """The SQLite database on disk: the file and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists()) / 2**20


def task_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                            timeout=30)) as db:
        return int(db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.status_5xx = 0

    def note(self, response: httpx.Response, took: float) -> None:
        try:
            payload = response.json()
            code = payload.get("errorCode", "ok") if isinstance(payload, dict) else "ok"
        except ValueError:
            code = response.text[:40] if "ERROR" in response.text else "ok"
        with self.lock:
            self.codes[code] += 1
            self.latencies.append(took)
            if response.status_code >= 500:
                self.status_5xx += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-growth-mb", type=float, default=50.0)
    parser.add_argument("--payload-retention-s", type=float, default=None)
    parser.add_argument("--task-retention-s", type=float, default=None)
    parser.add_argument("--sample-s", type=float, default=60.0,
                        help="seconds between samples of DB size, RSS and rows")
    args = parser.parse_args()
    retention = {}
    if args.payload_retention_s is not None:
        retention["CAPD_PAYLOAD_RETENTION_S"] = str(args.payload_retention_s)
    if args.task_retention_s is not None:
        retention["CAPD_TASK_RETENTION_S"] = str(args.task_retention_s)

    tmp = Path(tempfile.mkdtemp(prefix="capd-soak-"))
    db = f"sqlite:///{tmp}/capd.db"
    keys = [capd_cli(db, "account", "create", "--balance", "50").strip().splitlines()[-1]
            for _ in range(4)]
    token = capd_cli(db, "worker-token", "create").strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "capd", "--db", db, "serve", "--port", str(port)],
        env=capd_env(CAPD_MAX_POLLS_PER_S="50", CAPD_VIOLATION_BLOCK_THRESHOLD="1000000",
                     CAPD_UNKNOWN_KEY_BAN_THRESHOLD="1000000", **retention),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("capd did not start; see", tmp / "server.log")
                return 2
            time.sleep(0.1)
        stats = Stats()
        stop = threading.Event()
        images = [b64(captcha_png(t)) for t in TEXTS]
        httpx.post(f"{url}/worker/v1/lease", json={"workerToken": token,
                                                   "types": [TOKEN_TASK["type"]]})
        time.sleep(1)  # let the server settle before the first RSS reading
        rss_start = rss_mb(server.pid)

        def call(http: httpx.Client, method: str, **kwargs: object) -> httpx.Response:
            started = time.perf_counter()
            response = http.request(method="POST" if "json" in kwargs or "content" in kwargs
                                    else "GET", url=method, **kwargs)  # type: ignore[arg-type]
            stats.note(response, time.perf_counter() - started)
            return response

        def client(n: int) -> None:
            rnd = random.Random(n)
            key = keys[n % len(keys)]
            mine: list[int] = []
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    roll = rnd.random()
                    if roll < 0.35:
                        task = ({"type": "ImageToTextTask", "body": rnd.choice(images)}
                                if rnd.random() < 0.6 else TOKEN_TASK)
                        answer = call(http, "/createTask", json={"clientKey": key,
                                                                 "task": task}).json()
                        if answer.get("errorId") == 0:
                            mine.append(answer["taskId"])
                    elif roll < 0.7 and mine:
                        call(http, "/getTaskResult", json={"clientKey": key,
                                                           "taskId": rnd.choice(mine[-20:])})
                    elif roll < 0.75 and mine:
                        call(http, "/reportIncorrectImageCaptcha",
                             json={"clientKey": key, "taskId": rnd.choice(mine)})
                    elif roll < 0.82:
                        call(http, "/getBalance", json={"clientKey": key})
                    elif roll < 0.86:
                        call(http, "/getTaskResult", json={"clientKey": key,
                                                           "taskId": rnd.randrange(1, 2**31)})
                    elif roll < 0.9:
                        call(http, "/createTask", content=b'{"clientKey": [[[' + b"9" * 50)
                    elif roll < 0.95 and mine:
                        call(http, "/res.php", params={"key": key, "action": "get",
                                                       "id": str(rnd.choice(mine))})
                    else:
                        call(http, "/in.php", params={"key": key, "method": "base64",
                                                      "body": rnd.choice(images)})
                    time.sleep(rnd.uniform(0, 0.02))

        def worker(n: int) -> None:
            rnd = random.Random(1000 + n)
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    answer = call(http, "/worker/v1/lease", json={
                        "workerToken": token, "types": [TOKEN_TASK["type"]], "max": 10,
                        "waitSeconds": 1}).json()
                    for item in answer.get("leases", []):
                        outcome = ({"solution": {"token": "t"}} if rnd.random() < 0.8
                                   else {"errorCode": "ERROR_CAPTCHA_UNSOLVABLE"})
                        call(http, "/worker/v1/complete", json={
                            "workerToken": token, "leaseId": item["leaseId"], **outcome})

        threads = ([threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
                   + [threading.Thread(target=worker, args=(n,)) for n in range(args.workers)])
        started = time.monotonic()
        for t in threads:
            t.start()
        samples: list[tuple[float, float, float, int]] = []
        next_sample = started
        print(f"{'min':>6} {'DB MB':>8} {'RSS MB':>8} {'task rows':>10}", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            if time.monotonic() >= next_sample:
                next_sample += args.sample_s
                sample = ((time.monotonic() - started) / 60, db_mb(tmp / "capd.db"),
                          rss_mb(server.pid), task_rows(tmp / "capd.db"))
                samples.append(sample)
                print(f"{sample[0]:6.1f} {sample[1]:8.1f} {sample[2]:8.1f} {sample[3]:10d}",
                      flush=True)
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - started
        time.sleep(3)  # let in-flight image tasks finish
        rss_end = rss_mb(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()

    lat = sorted(stats.latencies)
    total = len(lat)
    print(f"capd soak: {args.minutes:g} min, {args.clients} clients, {args.workers} workers,"
          f" SQLite at {tmp}")
    print(f"requests served: {total} in {elapsed:.0f} s ({total / elapsed:.0f}/s),"
          f" 5xx: {stats.status_5xx}")
    print(f"latency: p50 {lat[total // 2] * 1000:.1f} ms, p99"
          f" {lat[min(total - 1, int(total * 0.99))] * 1000:.1f} ms, max {lat[-1] * 1000:.0f} ms")
    print("answers by code:")
    for code, count in stats.codes.most_common():
        print(f"  {code:32} {count}")
    # the bound applies after warm-up (OCR sessions, caches, the allocator's first arenas
    # fill in the first minute); runs shorter than two samples use the start
    warm = next((x for x in samples if x[0] >= 1.0), None)
    if warm is not None and len(samples) >= 3:
        rss_start = warm[2]
    growth = rss_end - rss_start
    if len(samples) >= 6:
        # levelled off: the last third of the run grew far less than the first third
        third = len(samples) // 3
        for name, col in (("DB size", 1), ("server RSS", 2)):
            early = samples[third][col] - samples[0][col]
            late = samples[-1][col] - samples[-1 - third][col]
            print(f"{name}: first third {early:+.1f} MB, last third {late:+.1f} MB"
                  f" ({'levelled off' if late <= max(early / 4, 1.0) else 'STILL GROWING'})")
    print(f"server RSS: after warm-up {rss_start:.1f} MB, end {rss_end:.1f} MB,"
          f" growth {growth:+.1f} MB"
          f" (bound {args.max_growth_mb:g} MB)")
    print(f"tasks by state: {task_states(db)}")
    broken = violations(db)
    for name, ids in broken.items():
        print(f"INVARIANT BROKEN: {name}: {ids}")
    if not broken:
        print("invariants: balance == ledger sum, balance >= reserved >= 0, reserved == open"
              " reservations, <= 1 charge and refund per task: all hold")
    ok = not broken and stats.status_5xx == 0 and growth < args.max_growth_mb
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
