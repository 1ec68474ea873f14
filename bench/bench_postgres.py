"""capd on PostgreSQL against capd on SQLite: getTaskResult throughput side by side.

Run from the repository root with the project's venv (root is needed only to install
``wrk`` through apt-get when it is missing; the PostgreSQL server binaries come from
Debian's ``postgresql`` package, as for the test suite)::

    .venv/bin/python -m bench.bench_postgres [--rounds N] [--duration S] [--profile]

What it does, all on 127.0.0.1:

1. starts a throwaway PostgreSQL cluster (``tests/pgcluster.PgCluster``) with one database,
   and a fresh SQLite file; creates an account with a large balance in each through the
   ``capd`` CLI; starts ``capd serve`` on SQLite (one process) and two ``capd serve``
   processes on two ports sharing the PostgreSQL database, and the floor
   (``bench/floor_app.py``). The per-task poll limits and the result lifetime are raised
   as in bench_core (``CAPD_MAX_POLLS_PER_S``, ``CAPD_MAX_POLLS_PER_TASK``,
   ``CAPD_RESULT_TTL_S``); every other setting keeps capd's defaults.
2. getTaskResult throughput of one solved task, by bench_core's method (wrk ``-t1
   --latency`` with a Lua POST script, 32 connections in total), against four targets
   in alternating rounds (the order rotates each round): the floor; capd on SQLite; capd
   on PostgreSQL, one process; capd on PostgreSQL, two processes (two wrk processes run
   at once, 16 connections to each node; throughputs are summed, latency percentiles are
   given per node and combined from the two distributions, weighted by request counts).
   Per run: req/s, p50, p99, and CPU per request of the server process(es), of the
   PostgreSQL server processes (from /proc) and of wrk. Medians over rounds and the
   PostgreSQL/SQLite throughput ratio (target >= 0.5).
3. ImageToText createTask -> ready end to end at light load (one client, a poll every
   5 ms, bench_core's ``solve_one``), alternating SQLite and PostgreSQL pass by pass.
4. with ``--profile``: where a getTaskResult spends its time in PostgreSQL mode: py-spy
   samples of the capd process during a wrk run (also of the SQLite process, for
   comparison), grouped by library (asyncpg, HTTP stack, event loop, capd, JSON) and by
   function; pg_stat_activity sampled meanwhile (which statements are in flight, waits);
   PostgreSQL CPU per backend kind; table statistics per request; and the round-trip
   time of each poll-path store primitive measured from this process.
5. prints a summary and writes it as JSON to ``bench/results/``.

Everything started (servers, wrk, py-spy, the cluster) is stopped on exit, errors,
Ctrl-C and SIGTERM. The machine this was written for has 2 shared cores: absolute figures
are noisy, only ratios measured in the same run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.bench_core import (
    HOST,
    NO_LIMIT,
    POST_LUA,
    RESULT_TTL_S,
    WRK_CONNECTIONS,
    WRK_THREADS,
    WRK_WARMUP_S,
    BenchError,
    Captcha,
    Processes,
    Solve,
    _log_tail,
    capd_cmd,
    clean_env,
    create_account,
    ensure_wrk,
    exit_on_sigterm,
    free_port,
    log,
    machine_info,
    make_captchas,
    median,
    ocr_seconds,
    parse_wrk,
    percentile,
    poll_outcomes,
    process_cpu_s,
    save_report,
    server_solve_ms,
    solve_one,
    solve_pass,
    wait_healthy,
    wrk_version,
)
from capd.store.secrets import secret_digest

TARGET_PG_RATIO = 0.5  # PostgreSQL getTaskResult throughput within 2x of SQLite
PG_DATABASE = "capd_bench"
TARGETS = ("floor", "sqlite", "pg", "pg2")
LABELS = {"floor": "floor", "sqlite": "capd SQLite x1", "pg": "capd PG x1",
          "pg2": "capd PG x2 (sum)"}
# the distribution printed by the Lua script's done(): enough points to combine two runs
PCT_POINTS = [0.1, 0.5, *range(1, 100), 99.5, 99.9, 99.99]
LUA_DONE = """
-- added by bench_postgres: print the latency distribution (microseconds) at the end
local bench_pcts = {PCTS}
done = function(summary, latency, requests)
  io.write(string.format("LAT min %.0f max %.0f\\n", latency.min, latency.max))
  for _, p in ipairs(bench_pcts) do
    io.write(string.format("PCTL %s %.0f\\n", p, latency:percentile(p)))
  end
end
""".replace("PCTS", ", ".join(str(p) for p in PCT_POINTS))


# -- CPU accounting ---------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of all CPUs, from /proc/stat."""
    parts = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    steal = parts[7] if len(parts) > 7 else 0.0
    total = sum(parts[:8])
    return total - idle - steal, steal, total


def children_cpu_s() -> float:
    """User + system CPU of this process's reaped children (wrk, py-spy)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class PgProcs:
    """CPU of a PostgreSQL cluster's processes, from /proc: the postmaster (with the CPU of
    the children it has reaped) and every live child, grouped by kind."""

    def __init__(self, data_dir: Path) -> None:
        self.postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])

    @staticmethod
    def _kind(pid: int) -> str:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            return "gone"
        rest = title.split(":", 1)[1].strip() if ":" in title else title
        if re.search(r"\d+\.\d+\.\d+\.\d+\(\d+\)", rest) or "[local]" in rest:
            return "client backends"
        if rest.startswith("autovacuum"):
            return "autovacuum"
        return "background (" + " ".join(rest.split()[:2]) + ")"

    def snapshot(self) -> dict[int, tuple[str, float]]:
        """pid -> (kind, CPU seconds) for the postmaster and its children."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[int, tuple[str, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                f = _stat_fields(pid)
            except (OSError, IndexError):
                continue
            if pid == self.postmaster:
                cpu = sum(int(x) for x in f[11:15]) / tick  # own + reaped children
                out[pid] = ("postmaster (+ exited children)", cpu)
            elif int(f[1]) == self.postmaster:
                out[pid] = (self._kind(pid), (int(f[11]) + int(f[12])) / tick)
        return out

    @staticmethod
    def delta(before: dict[int, tuple[str, float]],
              after: dict[int, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds spent between two snapshots, by kind (and "total")."""
        by_kind: dict[str, float] = defaultdict(float)
        for pid, (kind, cpu) in after.items():
            spent = cpu - before.get(pid, (kind, 0.0))[1]
            by_kind[kind] += spent
            by_kind["total"] += spent
        return dict(by_kind)

    def cpu_s(self) -> float:
        return sum(cpu for _, cpu in self.snapshot().values())


# -- PostgreSQL queries from this process -----------------------------------------------------
def pg_query(url: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def pg_server_solve_ms(url: str, task_ids: Sequence[int]) -> list[float]:
    """capd's own createTask-to-finish time of these tasks, from the PostgreSQL database."""
    if not task_ids:
        return []
    rows = pg_query(url, "SELECT ended_at - created_at FROM tasks WHERE id = ANY($1::bigint[])"
                    " AND ended_at IS NOT NULL", list(task_ids))
    return [float(r[0]) * 1e3 for r in rows]


# -- wrk ----------------------------------------------------------------------------------------
@dataclass
class Dist:
    """A latency distribution printed by the Lua done(): (percentile, ms) points."""

    requests: int
    points: list[tuple[float, float]]

    @classmethod
    def parse(cls, requests: int, text: str) -> Dist:
        lat = re.search(r"^LAT min (\d+) max (\d+)$", text, re.M)
        pts = [(float(p), float(v) / 1e3) for p, v in
               re.findall(r"^PCTL ([\d.]+) (\d+)$", text, re.M)]
        if not lat or not pts:
            raise BenchError(f"wrk printed no latency distribution:\n{text}")
        points = [(0.0, float(lat.group(1)) / 1e3), *sorted(pts),
                  (100.0, float(lat.group(2)) / 1e3)]
        # percentiles are monotone; keep them so after rounding
        fixed: list[tuple[float, float]] = []
        for p, v in points:
            fixed.append((p, max(v, fixed[-1][1]) if fixed else v))
        return cls(requests, fixed)

    def cdf(self, x: float) -> float:
        pts = self.points
        if x < pts[0][1]:
            return 0.0
        for (p0, v0), (p1, v1) in zip(pts, pts[1:], strict=False):
            if x < v1:
                return (p0 + (p1 - p0) * (x - v0) / (v1 - v0)) / 100
        return 1.0


def combined_percentile(dists: Sequence[Dist], q: float) -> float:
    """The q-th percentile of the union of several runs' requests, from their
    distributions (linear between the printed points), weighted by request counts."""
    total = sum(d.requests for d in dists)
    if not total:
        return float("nan")
    lo = min(d.points[0][1] for d in dists)
    hi = max(d.points[-1][1] for d in dists)
    target = q / 100
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(d.requests * d.cdf(mid) for d in dists) / total < target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class NodeRun:
    url: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx
    dist: Dist


@dataclass
class Measure:
    """One target's run: one wrk per node, all at once."""

    target: str
    duration_s: float
    nodes: list[NodeRun]
    server_cpu_s: float
    wrk_cpu_s: float
    pg_cpu_s: float | None
    busy_pct: float
    steal_pct: float
    bad_answers: int = 0
    pg_cpu_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return sum(n.rps for n in self.nodes)

    @property
    def requests(self) -> int:
        return sum(n.requests for n in self.nodes)

    def pct(self, q: float) -> float:
        if len(self.nodes) == 1:
            return {50: self.nodes[0].p50_ms, 99: self.nodes[0].p99_ms}.get(
                int(q), combined_percentile([self.nodes[0].dist], q))
        return combined_percentile([n.dist for n in self.nodes], q)

    def us_per_req(self, cpu_s: float | None) -> float:
        if cpu_s is None or not self.requests:
            return float("nan")
        return cpu_s / self.requests * 1e6

    def brief(self) -> dict[str, Any]:
        return {"rps": self.rps, "p50_ms": self.pct(50), "p99_ms": self.pct(99),
                "requests": self.requests, "errors": sum(n.errors for n in self.nodes),
                "bad_answers": self.bad_answers,
                "server_cpu_us_per_req": self.us_per_req(self.server_cpu_s),
                "pg_cpu_us_per_req": self.us_per_req(self.pg_cpu_s),
                "wrk_cpu_us_per_req": self.us_per_req(self.wrk_cpu_s),
                "busy_pct": self.busy_pct, "steal_pct": self.steal_pct,
                "nodes": [{"url": n.url, "rps": n.rps, "p50_ms": n.p50_ms, "p99_ms": n.p99_ms,
                           "requests": n.requests, "errors": n.errors} for n in self.nodes]}


@dataclass
class Target:
    name: str
    urls: list[str]
    pids: list[int]
    body: str
    capd: bool
    pg: bool


class Runner:
    """Runs wrk against a target and accounts for every process's CPU meanwhile."""

    def __init__(self, wrk: str, lua: Path, pg: PgProcs, live: list[subprocess.Popen[Any]],
                 workdir: Path) -> None:
        self.wrk = wrk
        self.lua = lua
        self.pg = pg
        self.live = live  # killed on exit if still running
        self.workdir = workdir

    def measure(self, target: Target, duration_s: int,
                during: Callable[[], None] | None = None) -> Measure:
        n = len(target.urls)
        conns = [WRK_CONNECTIONS // n + (1 if i < WRK_CONNECTIONS % n else 0) for i in range(n)]
        clients = [httpx.Client(base_url=u, timeout=10, trust_env=False) for u in target.urls]
        try:
            before = Counter[str]()
            if target.capd:
                for c in clients:
                    before.update(poll_outcomes(c))
            cpu0 = [process_cpu_s(p) for p in target.pids]
            pg0 = self.pg.snapshot()
            m0, kids0 = machine_cpu(), children_cpu_s()
            outs: list[Path] = []
            procs: list[subprocess.Popen[Any]] = []
            for i, (url, nconn) in enumerate(zip(target.urls, conns, strict=True)):
                out = self.workdir / f"wrk-{i}.out"
                outs.append(out)
                with out.open("wb") as fh:
                    proc = subprocess.Popen(
                        [self.wrk, f"-t{WRK_THREADS}", f"-c{nconn}", f"-d{duration_s}s",
                         "--latency", "-s", str(self.lua), f"{url}/getTaskResult"],
                        env={**os.environ, "WRK_BODY": target.body}, stdout=fh,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                self.live.append(proc)
                procs.append(proc)
            if during is not None:
                during()
            for proc in procs:
                try:
                    proc.wait(timeout=duration_s + 60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self.live.remove(proc)
            kids1, m1 = children_cpu_s(), machine_cpu()
            pg1 = self.pg.snapshot()
            cpu1 = [process_cpu_s(p) for p in target.pids]
            nodes: list[NodeRun] = []
            for url, proc, out in zip(target.urls, procs, outs, strict=True):
                text = out.read_text(errors="replace")
                if proc.returncode != 0:
                    raise BenchError(f"wrk failed ({proc.returncode}): {text.strip()}")
                run = parse_wrk(target.name, text)
                nodes.append(NodeRun(url, run.rps, run.p50_ms, run.p99_ms, run.requests,
                                     run.socket_errors + run.non_2xx,
                                     Dist.parse(run.requests, text)))
            bad = 0
            if target.capd:
                after = Counter[str]()
                for c in clients:
                    after.update(poll_outcomes(c))
                after.subtract(before)
                bad = sum(v for k, v in after.items() if k != "ok")
        finally:
            for c in clients:
                c.close()
        pg_kinds = PgProcs.delta(pg0, pg1)
        dt = m1[2] - m0[2]
        return Measure(
            target=target.name, duration_s=duration_s, nodes=nodes,
            server_cpu_s=sum(b - a for a, b in zip(cpu0, cpu1, strict=True)),
            wrk_cpu_s=kids1 - kids0, pg_cpu_s=pg_kinds.get("total", 0.0),
            busy_pct=(m1[0] - m0[0]) / dt * 100 if dt else float("nan"),
            steal_pct=(m1[1] - m0[1]) / dt * 100 if dt else float("nan"),
            bad_answers=bad, pg_cpu_by_kind=pg_kinds)


def fmt_measure(label: str, m: Measure | dict[str, Any]) -> str:
    b = m.brief() if isinstance(m, Measure) else m
    extra = ""
    if b.get("errors") or b.get("bad_answers"):
        extra = f"  [errors {b['errors']}, not-ok answers {b['bad_answers']}]"
    return (f"{label:<18} {b['rps']:8.0f}  {b['p50_ms']:6.2f}  {b['p99_ms']:6.2f}"
            f"  {b['server_cpu_us_per_req']:7.0f} {b['pg_cpu_us_per_req']:8.0f}"
            f" {b['wrk_cpu_us_per_req']:6.0f}   {b['busy_pct']:4.0f}%{extra}")


TABLE_HEAD = (f"{'':<18} {'req/s':>8}  {'p50 ms':>6}  {'p99 ms':>6}  {'capd':>7} {'postgres':>8}"
              f" {'wrk':>6}   busy   (CPU in us/request; busy = all CPUs)")


# -- phase 1: getTaskResult rounds ------------------------------------------------------------
def bench_polls(runner: Runner, targets: dict[str, Target], rounds: int,
                duration_s: int) -> list[dict[str, Measure]]:
    log(f"\n== getTaskResult throughput: wrk -t{WRK_THREADS} --latency, {WRK_CONNECTIONS}"
        f" connections in total (split over the nodes), -d{duration_s}s, {rounds} round(s)"
        f" of {', '.join(TARGETS)} (order rotates)")
    for name in TARGETS:  # warm-up, discarded (also fills the asyncpg pools)
        runner.measure(targets[name], WRK_WARMUP_S)
    results: list[dict[str, Measure]] = []
    for n in range(rounds):
        order = TARGETS[n % len(TARGETS):] + TARGETS[:n % len(TARGETS)]
        got: dict[str, Measure] = {}
        for name in order:
            time.sleep(1)
            got[name] = runner.measure(targets[name], duration_s)
        results.append(got)
        ratio = got["pg"].rps / got["sqlite"].rps if got["sqlite"].rps else float("nan")
        log(f"round {n + 1} (order {', '.join(order)}): PG x1 / SQLite {ratio:.3f},"
            f" PG x2 / SQLite {got['pg2'].rps / got['sqlite'].rps:.3f}")
        log("  " + TABLE_HEAD)
        for name in TARGETS:
            log("  " + fmt_measure(LABELS[name], got[name]))
            if name == "pg2":
                for i, node in enumerate(got[name].nodes):
                    log(f"    node {'AB'[i]}: {node.rps:8.0f} req/s  p50 {node.p50_ms:6.2f}"
                        f"  p99 {node.p99_ms:6.2f}  ({node.requests} requests)")
    return results


def summarise_polls(results: list[dict[str, Measure]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in TARGETS:
        briefs = [r[name].brief() for r in results]
        out[name] = {k: median([b[k] for b in briefs])
                     for k in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req",
                               "pg_cpu_us_per_req", "wrk_cpu_us_per_req", "busy_pct",
                               "steal_pct", "requests")}
        out[name]["errors"] = sum(b["errors"] for b in briefs)
        out[name]["bad_answers"] = sum(b["bad_answers"] for b in briefs)
        if name == "pg2":
            out[name]["nodes"] = [
                {k: median([b["nodes"][i][k] for b in briefs]) for k in ("rps", "p50_ms",
                                                                        "p99_ms")}
                for i in range(2)]
    ratios: dict[str, list[float]] = {
        "pg/sqlite": [r["pg"].rps / r["sqlite"].rps for r in results],
        "pg2/sqlite": [r["pg2"].rps / r["sqlite"].rps for r in results],
        "pg2/pg": [r["pg2"].rps / r["pg"].rps for r in results],
        "sqlite/floor": [r["sqlite"].rps / r["floor"].rps for r in results],
        "pg/floor": [r["pg"].rps / r["floor"].rps for r in results],
    }
    out["ratios"] = {k: {"per_round": [round(x, 3) for x in v], "median": median(v)}
                     for k, v in ratios.items()}
    out["ratios"]["pg/sqlite"]["of_medians"] = out["pg"]["rps"] / out["sqlite"]["rps"]
    out["meets_target"] = bool(out["ratios"]["pg/sqlite"]["median"] >= TARGET_PG_RATIO)
    return out


# -- phase 2: ImageToText at light load -------------------------------------------------------
def light_pass(url: str, key: str, captchas: list[Captcha],
               poll_s: float) -> tuple[list[Solve], Counter[str], int, tuple[float, int]]:
    """One pass over the captchas, one client, bench_core's solve_pass; also the OCR
    histogram's (sum, count) increase meanwhile."""
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        ocr0 = ocr_seconds(client)
        solves, errors, correct = solve_pass(client, key, captchas, poll_s)
        ocr1 = ocr_seconds(client)
    return solves, errors, correct, (ocr1[0] - ocr0[0], ocr1[1] - ocr0[1])


def bench_light(backends: dict[str, tuple[str, str, Callable[[list[int]], list[float]]]],
                captchas: list[Captcha], passes: int, poll_s: float) -> dict[str, Any]:
    """backends: name -> (url, key, reader of capd's own solve times)."""
    log(f"\n== ImageToText, light load: one client, {len(captchas)} images x {passes} pass(es)"
        f" per backend, a poll every {poll_s * 1e3:.0f} ms, alternating"
        f" {' / '.join(backends)} pass by pass")
    acc: dict[str, dict[str, Any]] = {
        name: {"solves": [], "errors": Counter(), "correct": 0, "ocr": [0.0, 0]}
        for name in backends}
    for url, key, _ in backends.values():  # warm-up, discarded
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            solve_one(client, key, captchas[0], poll_s)
    for _ in range(passes):
        for name, (url, key, _) in backends.items():
            solves, errors, correct, ocr = light_pass(url, key, captchas, poll_s)
            a = acc[name]
            a["solves"] += solves
            a["errors"].update(errors)
            a["correct"] += correct
            a["ocr"][0] += ocr[0]
            a["ocr"][1] += ocr[1]
    out: dict[str, Any] = {}
    for name, (_, _, reader) in backends.items():
        a = acc[name]
        solves = a["solves"]
        e2e = [s.e2e_ms for s in solves]
        out[name] = {
            "solved": len(solves), "errors": dict(a["errors"]), "correct": a["correct"],
            "p50_ms": median(e2e), "p99_ms": percentile(e2e, 99),
            "create_rtt_p50_ms": median([s.create_ms for s in solves]),
            "poll_rtt_p50_ms": median([p for s in solves for p in s.poll_ms]),
            "polls_per_task_p50": median([len(s.poll_ms) for s in solves]),
            "server_solve_p50_ms": median(reader([s.task_id for s in solves])),
            "server_ocr_mean_ms": a["ocr"][0] / a["ocr"][1] * 1e3 if a["ocr"][1] else
            float("nan"),
        }
        r = out[name]
        log(f"{name:>6}: e2e p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  correct"
            f" {r['correct']}/{r['solved']}  errors {r['errors'] or 'none'}; createTask round"
            f" trip p50 {r['create_rtt_p50_ms']:.2f} ms, capd createTask-to-finish p50"
            f" {r['server_solve_p50_ms']:.2f} ms (OCR mean {r['server_ocr_mean_ms']:.2f} ms),"
            f" {r['polls_per_task_p50']:.0f} polls/task, poll round trip p50"
            f" {r['poll_rtt_p50_ms']:.2f} ms")
    return out


# -- phase 3: profile -----------------------------------------------------------------------
def classify(frame: str) -> str:
    """The library a py-spy frame ("func (path:line)") belongs to."""
    path = frame.rsplit("(", 1)[-1]
    if "asyncpg/" in path:
        return "asyncpg (driver: pool, protocol, codecs)"
    if "orjson" in path or "json/" in path:
        return "JSON"
    if any(s in path for s in ("starlette/", "uvicorn/", "httptools", "h11/", "anyio/")):
        return "HTTP stack (uvicorn, httptools, starlette)"
    if "asyncio/" in path or "uvloop/" in path or "contextvars" in path:
        return "event loop (asyncio, uvloop)"
    if "capd/store/" in path:
        return "capd store (SQL wrappers, row -> objects)"
    if "capd/" in path:
        return "capd logic (api, service, limits)"
    if "sqlite3" in path:
        return "sqlite3"
    return "other (stdlib, logging, ...)"


def _func(frame: str) -> str:
    name, _, rest = frame.rpartition(" (")
    path = rest.rsplit(":", 1)[0]
    return f"{name} ({path})"


def parse_pyspy(path: Path) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's raw (collapsed stack) output."""
    total = 0
    self_f: Counter[str] = Counter()
    incl_f: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    contexts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        self_f[_func(frames[-1])] += count
        buckets[classify(frames[-1])] += count
        contexts[_context(stack)] += count
        for f in {_func(f) for f in frames}:
            incl_f[f] += count
    return {"samples": total, "self": self_f, "inclusive": incl_f, "buckets": buckets,
            "contexts": contexts}


def _context(stack: str) -> str:
    """Which kind of asyncio task (or callback) a sample was taken in."""
    if "RequestResponseCycle.run_asgi" in stack:
        return "request tasks (handler, middleware, service, store calls)"
    if "PoolConnectionHolder.release" in stack or "Pool.release" in stack:
        return "asyncpg pool release tasks (shielded; Connection.reset)"
    if "HttpToolsProtocol" in stack or "RequestResponseCycle" in stack:
        return "HTTP protocol callbacks (parse, write)"
    if "asyncpg/" in stack:
        return "other asyncpg (protocol callbacks, partial stacks)"
    return "event loop and the rest"


def sample_activity(url: str, stop: threading.Event, out: dict[str, Any],
                    every_s: float = 0.02) -> None:
    """Sample pg_stat_activity of the bench database until ``stop`` (in a thread)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url)
        states: Counter[str] = Counter()
        queries: Counter[str] = Counter()
        n = 0
        try:
            while not stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'")
                n += 1
                for state, wtype, wevent, query in rows:
                    wait = f"{wtype}:{wevent}" if wtype else "on CPU"
                    states[f"{state} / {wait}"] += 1
                    if state == "active":
                        queries[_short_sql(query)] += 1
                await asyncio.sleep(every_s)
        finally:
            await conn.close()
        out.update(samples=n, states=states, queries=queries)

    try:
        asyncio.run(go())
    except Exception as exc:  # reported, never fatal
        out["error"] = repr(exc)


def _short_sql(query: str) -> str:
    q = " ".join(query.split())
    for marker, name in (("RESET ALL", "asyncpg pool reset on release (RESET ALL ...)"),
                         ("FROM api_keys k", "caller_for_key (api_keys + whitelist)"),
                         ("FROM bans", "active_ban (bans)"),
                         ("INSERT INTO counters", "incr_counter(s) (counters upsert)"),
                         ("FROM tasks WHERE id", "get_task (tasks)"),
                         ("LISTEN", "LISTEN"), ("pg_notify", "pg_notify")):
        if marker in q:
            return name
    return q[:60]


TABLE_STATS_SQL = (
    "SELECT relname, seq_scan, COALESCE(idx_scan, 0), n_tup_ins, n_tup_upd, n_tup_hot_upd"
    " FROM pg_stat_user_tables WHERE relname = ANY($1::text[])")
POLL_TABLES = ["api_keys", "whitelist", "bans", "tasks", "counters"]


def table_stats(url: str) -> dict[str, Any]:
    rows = pg_query(url, TABLE_STATS_SQL, POLL_TABLES)
    out: dict[str, Any] = {r[0]: list(r[1:]) for r in rows}
    out["xact_commit"] = pg_query(url, "SELECT xact_commit FROM pg_stat_database"
                                       " WHERE datname = current_database()")[0][0]
    return out


def wait_stats_flushed(url: str, quiet_s: float = 11.0) -> dict[str, Any]:
    """Table statistics once idle backends have flushed theirs (PostgreSQL 15+ flushes
    an idle backend's pending counts within 10 s)."""
    time.sleep(quiet_s)
    return table_stats(url)


async def _store_round_trips(url: str, key: str, task_id: int, account_id: int,
                             n: int) -> dict[str, Any]:
    """Mean/p50 round trip of each poll-path primitive called on capd's PostgresStore
    from this process, one at a time; then 32-way concurrent throughput of some."""
    import asyncpg

    from capd.store.postgres import PostgresStore

    async def no_reset(conn: Any) -> None:
        return None

    store = PostgresStore(url)
    now = time.time()
    quiet_pool = await asyncpg.create_pool(url, min_size=1, max_size=2, reset=no_reset)
    held = await asyncpg.connect(url)
    try:
        pool = await store._p()
        seq = {
            "SELECT 1, one held connection": lambda i: held.fetchval("SELECT 1"),
            "SELECT 1, pool with reset=no-op": lambda i: quiet_pool.fetchval("SELECT 1"),
            "SELECT 1, capd's pool (as a poll does)": lambda i: pool.fetchval("SELECT 1"),
            "caller_for_key": lambda i: store.caller_for_key(key),
            "active_ban ip": lambda i: store.active_ban("ip", HOST, None, now),
            "active_ban account_ip": lambda i: store.active_ban("account_ip", HOST, account_id,
                                                                now),
            "get_task (uncached)": lambda i: _uncached_get(store, task_id),
            "incr_counter, one name (update)": lambda i: store.incr_counter(
                "bench:same", 1e9, now),
            "incr_counter, new names (insert)": lambda i: store.incr_counter(
                f"bench:{now}:{i}", 1e9, now),
        }
        if hasattr(store, "incr_counters"):  # both poll tallies in one statement
            seq["incr_counters, two names (as a poll)"] = lambda i: store.incr_counters(
                [("bench:p", 1e9), (f"bench:r:{int(time.time())}", 1.0)], time.time())
        out: dict[str, Any] = {"sequential": {}, "concurrent32": {}}
        for name, call in seq.items():
            for i in range(50):  # warm-up: prepared statements, pool
                await call(-i)
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                await call(i)
                times.append((time.perf_counter() - t0) * 1e6)
            out["sequential"][name] = {"mean_us": sum(times) / len(times),
                                       "p50_us": median(times)}
        conc = {
            "caller_for_key": lambda i: store.caller_for_key(key),
            "incr_counter, one name (hot row)": lambda i: store.incr_counter(
                "bench:hot", 1e9, now),
            "incr_counter, distinct names": lambda i: store.incr_counter(
                f"bench:c:{i % 4096}", 1e9, now),
        }
        for name, call in conc.items():
            done = 0
            stop_at = time.perf_counter() + 2.0

            async def worker(w: int, call: Any = call, stop_at: float = stop_at) -> None:
                nonlocal done
                i = w
                while time.perf_counter() < stop_at:
                    await call(i)
                    done += 1
                    i += 32

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(32)))
            out["concurrent32"][name] = done / (time.perf_counter() - t0)
        return out
    finally:
        await store.close()
        await quiet_pool.close()
        await held.close()


async def _uncached_get(store: Any, task_id: int) -> Any:
    store._final_tasks.pop(task_id, None)
    return await store.get_task(task_id, with_payload=False)


def ensure_pyspy() -> str:
    """The path of py-spy, installed into this venv with pip when it is missing."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found:
        return found
    log("py-spy not found: installing it with pip into this environment")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    if here.exists():
        return str(here)
    raise BenchError("py-spy is not available and pip could not install it")


def profile_node(runner: Runner, target: Target, duration_s: int, out_dir: Path,
                 live: list[subprocess.Popen[Any]], pg_url: str | None) -> dict[str, Any]:
    """A wrk run against one node while py-spy samples it (and, for PostgreSQL,
    pg_stat_activity is sampled and table statistics taken)."""
    pyspy = ensure_pyspy()
    raw = out_dir / f"pyspy-{target.name}.txt"
    spy_s = max(2, duration_s - 2)
    activity: dict[str, Any] = {}
    stop = threading.Event()
    sampler: threading.Thread | None = None
    spy_proc: list[subprocess.Popen[Any]] = []

    def during() -> None:
        nonlocal sampler
        time.sleep(1)
        spy_log = (out_dir / f"pyspy-{target.name}.log").open("wb")
        proc = subprocess.Popen([pyspy, "record", "--format", "raw", "--rate", "250",
                                 "--nonblocking", "-d", str(spy_s), "-o", str(raw),
                                 "--pid", str(target.pids[0])],
                                stdout=spy_log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        spy_log.close()
        live.append(proc)
        spy_proc.append(proc)
        if pg_url is not None:
            sampler = threading.Thread(target=sample_activity, args=(pg_url, stop, activity),
                                       daemon=True)
            sampler.start()

    stats0 = wait_stats_flushed(pg_url) if pg_url else None
    m = runner.measure(target, duration_s, during)
    stop.set()
    if sampler is not None:
        sampler.join(timeout=10)
    for proc in spy_proc:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        live.remove(proc)
    if not raw.exists():
        spy_log = _log_tail(out_dir / f"pyspy-{target.name}.log")
        raise BenchError(f"py-spy wrote nothing:\n{spy_log}")
    result: dict[str, Any] = {"measure": m.brief(), "pg_cpu_by_kind": m.pg_cpu_by_kind,
                              "pyspy": parse_pyspy(raw), "server_cpu_s": m.server_cpu_s,
                              "duration_s": duration_s, "pyspy_raw": raw.read_text()}
    if pg_url is not None:
        stats1 = wait_stats_flushed(pg_url)
        assert stats0 is not None
        per_req: dict[str, Any] = {}
        reqs = max(1, m.requests)
        own = activity.get("samples", 0) + 2  # the sampler's and table_stats' own queries
        per_req["transactions"] = (stats1["xact_commit"] - stats0["xact_commit"] - own) / reqs
        names = ["seq_scan", "idx_scan", "n_tup_ins", "n_tup_upd", "n_tup_hot_upd"]
        for table in POLL_TABLES:
            if table in stats1 and table in stats0:
                per_req[table] = {k: (b - a) / reqs for k, a, b in
                                  zip(names, stats0[table], stats1[table], strict=True)}
        result["per_request"] = per_req
        result["activity"] = activity
    return result


def bench_profile(runner: Runner, targets: dict[str, Target], duration_s: int,
                  out_dir: Path, live: list[subprocess.Popen[Any]], pg_url: str, key: str,
                  task_id: int, account_id: int) -> dict[str, Any]:
    log(f"\n== profile: py-spy (250 Hz, non-blocking) on one capd process during a"
        f" {duration_s} s wrk run of {WRK_CONNECTIONS} connections, SQLite then PostgreSQL")
    out: dict[str, Any] = {}
    out["sqlite"] = profile_node(runner, targets["sqlite"], duration_s, out_dir, live, None)
    out["pg"] = profile_node(runner, targets["pg"], duration_s, out_dir, live, pg_url)
    log("== round trips of the poll-path store primitives, from this process")
    out["round_trips"] = asyncio.run(_store_round_trips(pg_url, key, task_id, account_id,
                                                        1000))
    return out


def print_profile(prof: dict[str, Any], top: int) -> list[str]:
    lines = ["", "profile of getTaskResult (py-spy samples of the one capd process while wrk"
             f" drives it with {WRK_CONNECTIONS} connections; py-spy slows it a little):"]
    cols = ("sqlite", "pg")
    shares: dict[str, dict[str, float]] = {}
    us: dict[str, float] = {}
    for c in cols:
        p = prof[c]
        m = p["measure"]
        us[c] = m["server_cpu_us_per_req"]
        spy = p["pyspy"]
        shares[c] = {k: v / spy["samples"] for k, v in spy["buckets"].items()} \
            if spy["samples"] else {}
        lines.append(f"  {c:>6}: {m['rps']:.0f} req/s, p50 {m['p50_ms']:.2f} ms, p99"
                     f" {m['p99_ms']:.2f} ms; capd CPU"
                     f" {p['server_cpu_s'] / p['duration_s'] * 100:.0f}%"
                     f" of a core = {us[c]:.0f} us/req; postgres {m['pg_cpu_us_per_req']:.0f}"
                     f" us/req; wrk {m['wrk_cpu_us_per_req']:.0f} us/req; machine busy"
                     f" {m['busy_pct']:.0f}%; {spy['samples']} samples")
    lines.append(f"  capd CPU by library (leaf frame):   {'SQLite':>16}   {'PostgreSQL':>16}"
                 "   difference")
    kinds = sorted(set(shares["sqlite"]) | set(shares["pg"]),
                   key=lambda k: -shares["pg"].get(k, 0))
    for k in kinds:
        a, b = shares["sqlite"].get(k, 0.0), shares["pg"].get(k, 0.0)
        lines.append(f"    {k:<44} {a * 100:5.1f}% {a * us['sqlite']:5.0f} us"
                     f"   {b * 100:5.1f}% {b * us['pg']:5.0f} us"
                     f"   {b * us['pg'] - a * us['sqlite']:+6.0f} us")
    pg = prof["pg"]["pyspy"]
    n = pg["samples"] or 1
    lines.append("  capd CPU by asyncio task kind (root of the sampled stack):"
                 f"   {'SQLite':>7}  {'PostgreSQL':>10}")
    sq = prof["sqlite"]["pyspy"]
    for k, c in pg["contexts"].most_common():
        a = sq["contexts"].get(k, 0) / (sq["samples"] or 1)
        lines.append(f"    {k:<58} {a * 100:5.1f}%  {c / n * 100:8.1f}%")
    lines.append(f"  PostgreSQL mode, top {top} functions by own (self) samples:")
    for f, c in pg["self"].most_common(top):
        lines.append(f"    {c / n * 100:5.1f}%  {f}")
    lines.append("  PostgreSQL mode, inclusive share of capd's poll-path calls"
                 " (CPU in this process while the call is on the stack):")
    wanted = ("get_task_result", "authenticate", "check_ip_ban", "check_account_block",
              "_own_task", "check_poll", "caller_for_key", "active_ban", "get_task",
              "incr_counter", "incr_counters", "result_of", "json_response")
    incl = [(f, c) for f, c in pg["inclusive"].items()
            if "capd/" in f and f.split(" (")[0].rsplit(".", 1)[-1] in wanted]
    for f, c in sorted(incl, key=lambda x: -x[1]):
        lines.append(f"    {c / n * 100:5.1f}%  {f}")
    asy = [(f, c) for f, c in pg["inclusive"].items() if "asyncpg/" in f]
    lines.append("  PostgreSQL mode, top asyncpg functions by inclusive samples:")
    for f, c in sorted(asy, key=lambda x: -x[1])[:8]:
        lines.append(f"    {c / n * 100:5.1f}%  {f}")
    kinds = prof["pg"]["pg_cpu_by_kind"]
    dur = prof["pg"]["duration_s"]
    lines.append("  PostgreSQL server CPU during the run (% of one core): " + ", ".join(
        f"{k} {v / dur * 100:.0f}%" for k, v in sorted(kinds.items(), key=lambda x: -x[1])))
    act = prof["pg"].get("activity", {})
    if act.get("samples"):
        total = sum(act["states"].values()) or 1
        lines.append(f"  pg_stat_activity, {act['samples']} samples of the client backends"
                     " (share of backend-samples):")
        for k, v in act["states"].most_common(8):
            lines.append(f"    {v / total * 100:5.1f}%  {k}")
        qtotal = sum(act["queries"].values()) or 1
        lines.append("  statements in flight when a backend was active:")
        for k, v in act["queries"].most_common(8):
            lines.append(f"    {v / qtotal * 100:5.1f}%  {k}")
    elif act.get("error"):
        lines.append(f"  pg_stat_activity sampling failed: {act['error']}")
    per = prof["pg"].get("per_request", {})
    if per:
        lines.append(f"  per getTaskResult (from pg_stat_database / pg_stat_user_tables):"
                     f" {per['transactions']:.2f} transactions")
        for t in POLL_TABLES:
            if t in per:
                d = per[t]
                lines.append(f"    {t:<10} idx_scan {d['idx_scan']:.2f}  seq_scan"
                             f" {d['seq_scan']:.2f}  ins {d['n_tup_ins']:.2f}  upd"
                             f" {d['n_tup_upd']:.2f} (HOT {d['n_tup_hot_upd']:.2f})")
    rt = prof.get("round_trips")
    if rt:
        lines.append("  round trip of each poll-path primitive from this process (asyncpg"
                     " through capd's PostgresStore, one at a time, 1000 calls):")
        for k, v in rt["sequential"].items():
            lines.append(f"    {k:<36} mean {v['mean_us']:6.0f} us  p50 {v['p50_us']:6.0f} us")
        lines.append("  32 concurrent callers, 2 s each:")
        for k, v in rt["concurrent32"].items():
            lines.append(f"    {k:<36} {v:8.0f} calls/s")
    return lines


# -- summary --------------------------------------------------------------------------------------
def print_summary(report: dict[str, Any]) -> None:
    m, cfg, polls, light = (report["machine"], report["config"], report["get_task_result"],
                            report["e2e_light"])
    r = polls["ratios"]
    lines = [
        "", "=" * 96, "capd PostgreSQL vs SQLite benchmark summary", "=" * 96,
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), python {m['python']},"
        f" {cfg['wrk_version']}, {cfg['postgres']}",
        f"capd: {cfg['capd_version']}",
        f"load average: start {m['loadavg_start']}, end {m['loadavg_end']}"
        " (machine shared: expect noise; compare ratios)",
        f"capd settings changed from defaults: {cfg['capd_env']}",
        "",
        f"getTaskResult of one solved task, wrk -t{WRK_THREADS} --latency with a Lua POST,"
        f" {WRK_CONNECTIONS} connections in total, -d{cfg['duration_s']}s, {cfg['rounds']}"
        f" round(s), medians over rounds (PG x2: two wrk at once, {WRK_CONNECTIONS // 2}"
        f" connections each):",
        "  " + TABLE_HEAD,
    ]
    for name in TARGETS:
        lines.append("  " + fmt_measure(LABELS[name], polls[name]))
        if name == "pg2":
            for i, node in enumerate(polls[name]["nodes"]):
                lines.append(f"    {'node ' + 'AB'[i]:<16} {node['rps']:8.0f}"
                             f"  {node['p50_ms']:6.2f}  {node['p99_ms']:6.2f}")
    lines += [
        "  (PG x2 p50/p99: combined over both nodes' requests; capd CPU = both processes)",
        f"  ratio PG x1 / SQLite: per round {r['pg/sqlite']['per_round']}, median"
        f" {r['pg/sqlite']['median']:.3f} (of medians {r['pg/sqlite']['of_medians']:.3f});"
        f" target >= {TARGET_PG_RATIO}: {'MEETS' if polls['meets_target'] else 'MISSES'}",
        f"  ratio PG x2 / SQLite: per round {r['pg2/sqlite']['per_round']}, median"
        f" {r['pg2/sqlite']['median']:.3f};  PG x2 / PG x1: median {r['pg2/pg']['median']:.3f}",
        f"  ratio SQLite / floor: median {r['sqlite/floor']['median']:.3f};"
        f"  PG x1 / floor: median {r['pg/floor']['median']:.3f}",
        "",
        f"ImageToText createTask -> ready, light load (1 client, a poll every"
        f" {cfg['poll_ms']:.0f} ms, {cfg['images']} captchas x {cfg['passes']} per backend):",
    ]
    for name in ("sqlite", "pg"):
        x = light[name]
        lines.append(
            f"  {LABELS[name]:<16} e2e p50 {x['p50_ms']:6.2f} ms  p99 {x['p99_ms']:6.2f} ms;"
            f" createTask RTT p50 {x['create_rtt_p50_ms']:.2f} ms, poll RTT p50"
            f" {x['poll_rtt_p50_ms']:.2f} ms, capd create-to-finish p50"
            f" {x['server_solve_p50_ms']:.2f} ms (OCR {x['server_ocr_mean_ms']:.2f} ms),"
            f" correct {x['correct']}/{x['solved']}, errors {x['errors'] or 'none'}")
    lines.append(f"  e2e p50 PG - SQLite: {light['pg']['p50_ms'] - light['sqlite']['p50_ms']:+.2f}"
                 f" ms (ratio {light['pg']['p50_ms'] / light['sqlite']['p50_ms']:.3f})")
    if report.get("profile"):
        lines += print_profile(report["profile"], report["config"]["profile_top"])
    lines.append("=" * 96)
    log("\n".join(lines))


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_postgres",
                                description="capd on PostgreSQL vs SQLite (see the module"
                                            " docstring)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of (floor, SQLite, PG x1, PG x2) wrk runs (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--images", type=int, default=50, help="distinct captchas (default 50)")
    p.add_argument("--passes", type=int, default=2,
                   help="light-load passes over the images per backend (default 2)")
    p.add_argument("--poll-ms", type=float, default=5.0,
                   help="light-load poll interval in ms (default 5)")
    p.add_argument("--seed", type=int, default=1, help="captcha text seed (default 1)")
    p.add_argument("--profile", action="store_true",
                   help="also profile getTaskResult in PostgreSQL mode (py-spy, pg_stat_*)")
    p.add_argument("--profile-duration", type=int, default=10,
                   help="seconds of each profiled wrk run (default 10)")
    p.add_argument("--profile-top", type=int, default=15,
                   help="functions listed in the profile table (default 15)")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    if min(args.rounds, args.duration, args.images, args.passes, args.profile_top) < 1 \
            or args.profile_duration < 4:
        p.error("counts and durations must be positive (--profile-duration >= 4)")
    return args


def code_version() -> str:
    """The commit measured, and whether capd/ had uncommitted changes."""
    def git(*a: str) -> str:
        out = subprocess.run(["git", *a], cwd=Path(__file__).resolve().parent.parent,
                             capture_output=True, text=True, check=False)
        return out.stdout.strip()

    head = git("log", "-1", "--format=%h %s")[:70] or "unknown"
    dirty = git("status", "--porcelain", "--", "capd")
    return f"{head}{' (+ uncommitted changes in capd/)' if dirty else ''}"


def first_solved(url: str, key: str, captchas: list[Captcha]) -> tuple[int, httpx.Response]:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for captcha in captchas:
            first = solve_one(client, key, captcha, 0.01)
            if first.answer.get("status") == "ready":
                polled = client.post("/getTaskResult",
                                     json={"clientKey": key, "taskId": first.task_id})
                return first.task_id, polled
    raise BenchError(f"capd at {url} solved none of the captchas")


def run(args: argparse.Namespace, procs: Processes, workdir: Path,
        live: list[subprocess.Popen[Any]], cluster_box: list[Any]) -> dict[str, Any]:
    from tests.pgcluster import PgCluster

    machine = machine_info()
    version = code_version()
    log(f"machine: {machine['nproc']} CPUs, {machine['cpu_model']},"
        f" load average {machine['loadavg_start']}; capd at {version}")
    wrk = ensure_wrk()
    capd_env = {"CAPD_MAX_POLLS_PER_S": str(NO_LIMIT), "CAPD_MAX_POLLS_PER_TASK": str(NO_LIMIT),
                "CAPD_RESULT_TTL_S": str(RESULT_TTL_S)}
    log(f"capd runs with {capd_env} (as in bench_core); other settings are capd's defaults")

    cluster = PgCluster()
    cluster_box.append(cluster)
    cluster.start()
    pg_url = cluster.create_database(PG_DATABASE)
    pg_procs = PgProcs(cluster.data)
    pg_version = pg_query(pg_url, "SHOW server_version")[0][0]
    log(f"PostgreSQL {pg_version} cluster on port {cluster.port} (postmaster pid"
        f" {pg_procs.postmaster}; fsync and synchronous_commit off, as tests/pgcluster.py)")

    db_path = workdir / "capd.db"
    sqlite_url = f"sqlite:///{db_path}"
    sqlite_key = create_account(sqlite_url, workdir)
    pg_key = create_account(pg_url, workdir)
    pg_account = int(pg_query(pg_url, "SELECT account_id FROM api_keys WHERE key_hash = $1",
                              secret_digest(pg_key))[0][0])

    def serve(name: str, db_url: str) -> tuple[str, int]:
        port = free_port()
        url = f"http://{HOST}:{port}"
        log_path = workdir / f"{name}.log"
        proc = procs.start(name, capd_cmd(db_url, "serve", "--host", HOST, "--port", str(port)),
                           env=clean_env(**capd_env), cwd=workdir, log_path=log_path)
        wait_healthy(name, url, proc, log_path)
        log(f"{name} serving on {url} (pid {proc.pid})")
        return url, proc.pid

    sqlite_url_http, sqlite_pid = serve("capd-sqlite", sqlite_url)
    pga_url, pga_pid = serve("capd-pg-a", pg_url)
    pgb_url, pgb_pid = serve("capd-pg-b", pg_url)

    captchas = make_captchas(args.images, args.seed)
    s_task, s_answer = first_solved(sqlite_url_http, sqlite_key, captchas)
    p_task, p_answer = first_solved(pga_url, pg_key, captchas)
    p_body = json.dumps({"clientKey": pg_key, "taskId": p_task})
    with httpx.Client(timeout=10, trust_env=False) as client:
        via_b = client.post(f"{pgb_url}/getTaskResult", content=p_body)
    if via_b.content != p_answer.content:
        raise BenchError(f"node B answers {via_b.text}, node A {p_answer.text}")

    floor_port = free_port()
    floor_url = f"http://{HOST}:{floor_port}"
    floor_log = workdir / "floor.log"
    floor = procs.start("floor", [sys.executable, "-m", "bench.floor_app", "--host", HOST,
                                  "--port", str(floor_port), "--task-id", str(s_task),
                                  "--answer", s_answer.text],
                        env=clean_env(), cwd=Path(__file__).resolve().parent.parent,
                        log_path=floor_log)
    wait_healthy("floor", floor_url, floor, floor_log)
    log(f"floor serving on {floor_url} (pid {floor.pid}); answers: SQLite/floor"
        f" {len(s_answer.content)} bytes, PostgreSQL {len(p_answer.content)} bytes")

    s_body = json.dumps({"clientKey": sqlite_key, "taskId": s_task})
    targets = {
        "floor": Target("floor", [floor_url], [floor.pid], s_body, capd=False, pg=False),
        "sqlite": Target("sqlite", [sqlite_url_http], [sqlite_pid], s_body, capd=True,
                         pg=False),
        "pg": Target("pg", [pga_url], [pga_pid], p_body, capd=True, pg=True),
        "pg2": Target("pg2", [pga_url, pgb_url], [pga_pid, pgb_pid], p_body, capd=True,
                      pg=True),
    }
    lua = workdir / "post_dist.lua"
    lua.write_text(POST_LUA.read_text() + LUA_DONE)
    runner = Runner(wrk, lua, pg_procs, live, workdir)

    rounds = bench_polls(runner, targets, args.rounds, args.duration)
    polls = summarise_polls(rounds)
    light = bench_light({
        "sqlite": (sqlite_url_http, sqlite_key, lambda ids: server_solve_ms(db_path, ids)),
        "pg": (pga_url, pg_key, lambda ids: pg_server_solve_ms(pg_url, ids)),
    }, captchas, args.passes, args.poll_ms / 1e3)
    profile = None
    if args.profile:
        profile = bench_profile(runner, targets, args.profile_duration, workdir, live, pg_url,
                                pg_key, p_task, pg_account)
    for name, pid in (("capd-sqlite", sqlite_pid), ("capd-pg-a", pga_pid),
                      ("capd-pg-b", pgb_pid)):
        if not Path(f"/proc/{pid}").exists():
            raise BenchError(f"{name} exited early:\n{_log_tail(workdir / f'{name}.log')}")

    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "machine": machine,
        "config": {"rounds": args.rounds, "duration_s": args.duration, "images": args.images,
                   "passes": args.passes, "poll_ms": args.poll_ms, "seed": args.seed,
                   "wrk_version": wrk_version(wrk), "postgres": f"PostgreSQL {pg_version}",
                   "capd_env": capd_env, "profile_top": args.profile_top,
                   "capd_version": version},
        "get_task_result": polls,
        "rounds": [{t: m.brief() for t, m in r.items()} for r in rounds],
        "e2e_light": light,
        "profile": profile,
    }


def _jsonable_profile(profile: dict[str, Any] | None, top: int = 40) -> Any:
    if not profile:
        return profile
    out = json.loads(json.dumps(profile, default=str))
    for c in ("sqlite", "pg"):
        out[c].pop("pyspy_raw", None)
        spy = profile[c]["pyspy"]
        out[c]["pyspy"] = {"samples": spy["samples"], "buckets": dict(spy["buckets"]),
                           "self": spy["self"].most_common(top),
                           "inclusive": spy["inclusive"].most_common(top)}
    return out


@contextlib.contextmanager
def _cleanup(procs: Processes, live: list[subprocess.Popen[Any]],
             cluster_box: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in list(live):  # wrk, py-spy
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        live.clear()
        try:
            procs.stop_all()  # capd servers first: they hold connections to the cluster
        finally:
            for cluster in cluster_box:
                try:
                    cluster.stop()
                except Exception as exc:  # keep cleaning up; say what went wrong
                    log(f"stopping the PostgreSQL cluster failed: {exc!r}")
                    shutil.rmtree(cluster.base, ignore_errors=True)
            cluster_box.clear()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs = Processes()
    live: list[subprocess.Popen[Any]] = []
    cluster_box: list[Any] = []
    try:
        with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix="capd-bench-pg-") as tmp, \
                _cleanup(procs, live, cluster_box):
            report = run(args, procs, Path(tmp), live, cluster_box)
        print_summary(report)
        if not args.no_save:
            saved = {**report, "profile": _jsonable_profile(report.get("profile"))}
            path = save_report(saved, "bench_postgres")
            log(f"written to {path}")
            for c, prof in (report.get("profile") or {}).items():
                if isinstance(prof, dict) and "pyspy_raw" in prof:
                    raw = path.with_name(f"{path.stem}-pyspy-{c}.txt")
                    raw.write_text(prof["pyspy_raw"])
                    log(f"py-spy samples (collapsed stacks, for flamegraph.pl) in {raw}")
        return 0
    except BenchError as exc:
        print(f"bench_postgres: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_postgres: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
