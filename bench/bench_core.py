"""Core benchmark of capd: getTaskResult throughput against a floor, and ImageToText latency.

Run from the repository root with the project's venv (needs root only to install ``wrk``
through apt-get when it is missing)::

    .venv/bin/python -m bench.bench_core [--rounds N] [--duration S]

See ``--help`` for the other knobs (image count, clients, poll intervals, seed).

What it does, all on 127.0.0.1, in a temporary directory:

1. creates a fresh SQLite database and an account with a large balance through the
   ``capd`` CLI, then starts ``capd serve`` in a subprocess. The per-task poll limits
   (``CAPD_MAX_POLLS_PER_S``, ``CAPD_MAX_POLLS_PER_TASK``) and the result lifetime
   (``CAPD_RESULT_TTL_S``) are raised far beyond the defaults so that the benchmark's own
   polling is never refused; every other setting keeps its default (``CAPD_*`` variables
   of the calling shell are not passed on).
2. starts the floor, ``bench/floor_app.py``: a minimal Starlette app served by uvicorn
   exactly as capd is, answering getTaskResult from a dict.
3. getTaskResult throughput: one solved task, polled by ``wrk -t1 -c32 --latency`` against
   the floor and capd alternately, ``--rounds`` times; per-round and median figures, and
   the capd/floor throughput ratio (target >= 0.55 with capd p99 <= 10 ms). With
   ``--baseline DIR`` a second capd, imported from the source tree DIR (say a ``git
   archive`` of the commit before a change) and serving the same database, is polled in
   the same rounds, so that a change is compared side by side on one noisy machine.
4. ImageToText: (a) the bare recogniser in this process, single thread; (b) one client,
   createTask then a poll every 5 ms until ready, image after image (target: p50(e2e) -
   p50(bare) <= 30 ms); (c) several concurrent clients for ``--tput-duration`` seconds:
   solves/s and end-to-end latency.
5. prints a summary (machine, load, figures) and writes it as JSON to ``bench/results/``.

``--polls-only`` stops after step 3. ``--real N`` reads, in step 4, N images of each
labelled real scheme's held-out split (training/datasets.py; ``$CAPD_DATASETS`` or the
``shared/datasets`` folder beside the checkout) instead of drawn captchas, sent as a
client would, without task options: what capd's users send, rather than one font.

Subprocesses are stopped on exit, including Ctrl-C, SIGTERM and errors. Figures from a
shared machine are noisy; the floor/capd ratio, measured side by side, is the one to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
POST_LUA = BENCH_DIR / "post.lua"
RESULTS_DIR = BENCH_DIR / "results"

HOST = "127.0.0.1"
NO_LIMIT = 1_000_000_000  # poll limits high enough never to refuse the benchmark
RESULT_TTL_S = 86_400  # keep the polled result for the whole run, however long
WRK_THREADS = 1  # the machine this was written for has 2 cores: one for wrk, one for the server
WRK_CONNECTIONS = 32
WRK_WARMUP_S = 2
TASK_TIMEOUT_S = 60.0
CAPTCHA_ALPHABET = string.ascii_letters + string.digits
JSON_HEADERS = {"Content-Type": "application/json"}

# targets stated in the brief
TARGET_RATIO = 0.55
TARGET_CAPD_P99_MS = 10.0
TARGET_E2E_OVERHEAD_MS = 30.0


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


# -- small helpers --------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")" closing the command name: fields[11] is utime, fields[12] stime
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def captcha_png(text: str, size: int = 36) -> bytes:
    """A plain, readable captcha image of ``text`` (black on white), as tests/helpers.py."""
    font = ImageFont.load_default(size=size)
    width = max(120, int(size * 0.75 * len(text)) + 30)
    im = Image.new("RGB", (width, int(size * 1.7)), "white")
    ImageDraw.Draw(im).text((10, size // 4), text, fill="black", font=font)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


@dataclass(frozen=True)
class Captcha:
    text: str
    png: bytes

    def create_body(self, key: str) -> bytes:
        return json.dumps({"clientKey": key, "task": {
            "type": "ImageToTextTask", "body": base64.b64encode(self.png).decode()}}).encode()


def make_captchas(count: int, seed: int) -> list[Captcha]:
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < count:
        texts["".join(rng.choices(CAPTCHA_ALPHABET, k=rng.randint(4, 6)))] = None
    return [Captcha(text, captcha_png(text)) for text in texts]


def real_captchas(per_scheme: int) -> list[Captcha]:
    """``per_scheme`` images of each labelled scheme's held-out split, in the split's
    (fixed, shuffled) order, with their labels."""
    from training import datasets

    if not os.path.isdir(os.path.join(datasets.datasets_root(), datasets.SCHEMES[0])):
        raise BenchError(f"--real: no labelled captchas under {datasets.datasets_root()}"
                         " (set CAPD_DATASETS)")
    out = []
    for scheme in datasets.SCHEMES:
        for path, label in datasets.split(scheme)[1][:per_scheme]:
            out.append(Captcha(label, Path(path).read_bytes()))
    return out


def is_correct(answer: str, expected: str) -> bool:
    return answer.lower() == expected.lower()


# -- machine ---------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def ensure_wrk() -> str:
    """The path of wrk, installing it with apt-get when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found: installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not available and apt-get could not install it")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0] if text else "?"


# -- subprocesses -----------------------------------------------------------------------------
class Processes:
    """Servers started by the benchmark; ``stop_all`` ends every one still running."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path,
              log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as out:
            # a session of its own: Ctrl-C reaches only us, and we stop it in order
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _, proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for name, proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing it")
                proc.kill()
                proc.wait()
        self._procs.clear()


def _log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_healthy(name: str, url: str, proc: subprocess.Popen[bytes], log_path: Path,
                 timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}:\n"
                                 f"{_log_tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{url}/healthz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not answer /healthz within {timeout_s:.0f} s:\n"
                                 f"{_log_tail(log_path)}")
            time.sleep(0.1)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CAPD_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPD_")}
    env.update(extra)
    return env


def capd_cmd(db_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "capd", "--db", db_url, *args]


def create_account(db_url: str, cwd: Path) -> str:
    out = subprocess.run(capd_cmd(db_url, "account", "create", "--balance", "1000000",
                                  "--name", "bench"),
                         env=clean_env(), cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BenchError(f"capd account create failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


# -- wrk ----------------------------------------------------------------------------------------
@dataclass
class WrkRun:
    target: str
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    socket_errors: int
    non_2xx: int
    server_cpu_s: float = 0.0
    bad_answers: int = 0  # capd only: getTaskResult outcomes other than "ok"

    @property
    def server_cpu_us_per_req(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else float("nan")


_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(target: str, text: str) -> WrkRun:
    """Figures from the output of ``wrk --latency``."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    done = re.search(r"^\s*(\d+) requests in", text, re.M)
    if not rps or not done:
        raise BenchError(f"cannot read wrk's output:\n{text}")
    lat = {int(p): float(v) * _TIME_UNITS_MS[u] for p, v, u in re.findall(
        r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)}
    if len(lat) != 4:
        raise BenchError(f"wrk's output has no latency distribution:\n{text}")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkRun(target=target, rps=float(rps.group(1)), p50_ms=lat[50], p75_ms=lat[75],
                  p90_ms=lat[90], p99_ms=lat[99], requests=int(done.group(1)),
                  socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
                  non_2xx=int(non2xx.group(1)) if non2xx else 0)


def run_wrk(wrk: str, target: str, url: str, body: str, duration_s: int,
            server_pid: int) -> WrkRun:
    cmd = [wrk, f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{duration_s}s", "--latency",
           "-s", str(POST_LUA), url]
    cpu0 = process_cpu_s(server_pid)
    out = subprocess.run(cmd, env={**os.environ, "WRK_BODY": body}, capture_output=True,
                         text=True, timeout=duration_s + 60, check=False)
    cpu1 = process_cpu_s(server_pid)
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    run = parse_wrk(target, out.stdout)
    run.server_cpu_s = cpu1 - cpu0
    return run


def poll_outcomes(client: httpx.Client) -> Counter[str]:
    """capd's getTaskResult request counts by outcome, from /metrics."""
    counts: Counter[str] = Counter()
    text = client.get("/metrics").text
    for outcome, value in re.findall(
            r'^capd_requests_total\{method="getTaskResult",outcome="([^"]+)"\} (\S+)$', text,
            re.M):
        counts[outcome] += int(float(value))
    return counts


# -- capd client helpers ------------------------------------------------------------------
@dataclass
class Solve:
    """One createTask-to-final-answer round trip, as the client saw it."""

    task_id: int
    answer: dict[str, Any]
    e2e_ms: float
    create_ms: float
    poll_ms: list[float]


def solve_one(client: httpx.Client, key: str, captcha: Captcha, poll_s: float) -> Solve:
    """createTask, then after every ``poll_s`` a poll until the answer is final."""
    started = time.perf_counter()
    created = client.post("/createTask", content=captcha.create_body(key),
                          headers=JSON_HEADERS).json()
    create_ms = (time.perf_counter() - started) * 1e3
    if created.get("errorId"):
        return Solve(0, created, create_ms, create_ms, [])
    task_id = int(created["taskId"])
    poll = json.dumps({"clientKey": key, "taskId": task_id}).encode()
    deadline = time.monotonic() + TASK_TIMEOUT_S
    polls: list[float] = []
    while True:
        time.sleep(poll_s)
        sent = time.perf_counter()
        answer = client.post("/getTaskResult", content=poll, headers=JSON_HEADERS).json()
        done = time.perf_counter()
        polls.append((done - sent) * 1e3)
        if answer.get("status") != "processing":
            return Solve(task_id, answer, (done - started) * 1e3, create_ms, polls)
        if time.monotonic() > deadline:
            raise BenchError(f"task {task_id} still processing after {TASK_TIMEOUT_S:.0f} s")


def server_solve_ms(db_path: Path, task_ids: Sequence[int]) -> list[float]:
    """capd's own createTask-to-finish time of these tasks (ended_at - created_at), read
    from its database file (read-only)."""
    if not task_ids:
        return []
    out: list[float] = []
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        for i in range(0, len(task_ids), 500):
            chunk = list(task_ids[i:i + 500])
            marks = ",".join("?" * len(chunk))
            out += [row[0] * 1e3 for row in db.execute(
                f"SELECT ended_at - created_at FROM tasks WHERE id IN ({marks})"
                " AND ended_at IS NOT NULL", chunk)]
    return out


def ocr_seconds(client: httpx.Client) -> tuple[float, int]:
    """(sum, count) of capd's capd_ocr_seconds histogram, from /metrics."""
    text = client.get("/metrics").text
    total = re.search(r"^capd_ocr_seconds_sum (\S+)$", text, re.M)
    count = re.search(r"^capd_ocr_seconds_count (\S+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0, int(float(count.group(1))) if count else 0)


# -- phase 1: getTaskResult throughput -----------------------------------------------------
@dataclass
class PollPhase:
    task_id: int
    answer_bytes: int
    rounds: list[dict[str, WrkRun]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target in self.rounds[0]:
            runs = [r[target] for r in self.rounds]
            out[target] = {
                "rps_median": median([r.rps for r in runs]),
                "p50_ms_median": median([r.p50_ms for r in runs]),
                "p99_ms_median": median([r.p99_ms for r in runs]),
                "server_cpu_us_per_req_median": median([r.server_cpu_us_per_req
                                                        for r in runs]),
            }
        ratios = [r["capd"].rps / r["floor"].rps for r in self.rounds if r["floor"].rps]
        out["ratio_per_round"] = [round(x, 3) for x in ratios]
        out["ratio_median_of_rounds"] = median(ratios)
        out["ratio_of_medians"] = (out["capd"]["rps_median"] / out["floor"]["rps_median"]
                                   if out["floor"]["rps_median"] else float("nan"))
        out["meets_target"] = bool(out["ratio_median_of_rounds"] >= TARGET_RATIO
                                   and out["capd"]["p99_ms_median"] <= TARGET_CAPD_P99_MS)
        if "baseline" in out:
            base = [r["baseline"].rps / r["floor"].rps for r in self.rounds if r["floor"].rps]
            out["baseline_ratio_per_round"] = [round(x, 3) for x in base]
            out["baseline_ratio_median_of_rounds"] = median(base)
        return out


def _fmt_run(run: WrkRun) -> str:
    extra = ""
    if run.socket_errors or run.non_2xx or run.bad_answers:
        extra = (f"  [socket errors {run.socket_errors}, non-2xx {run.non_2xx},"
                 f" not-ok answers {run.bad_answers}]")
    return (f"{run.target:>5}: {run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms"
            f"  p99 {run.p99_ms:6.2f} ms  server CPU {run.server_cpu_us_per_req:6.0f} us/req"
            f"{extra}")


def bench_polls(wrk: str, capd_url: str, floor_url: str, pids: dict[str, int], key: str,
                task_id: int, answer_bytes: int, rounds: int, duration_s: int,
                baseline_url: str | None = None) -> PollPhase:
    phase = PollPhase(task_id, answer_bytes)
    body = json.dumps({"clientKey": key, "taskId": task_id})
    urls = {"floor": floor_url, "capd": capd_url}
    if baseline_url:
        urls["baseline"] = baseline_url
    log(f"\n== getTaskResult throughput: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}"
        f" -d{duration_s}s --latency, {rounds} round(s) of ({', '.join(urls)})")
    with httpx.Client(base_url=capd_url, timeout=10, trust_env=False) as client:
        for target in urls:  # warm-up, discarded
            run_wrk(wrk, target, f"{urls[target]}/getTaskResult", body, WRK_WARMUP_S,
                    pids[target])
        for n in range(1, rounds + 1):
            pair: dict[str, WrkRun] = {}
            for target in urls:
                time.sleep(1)
                before = poll_outcomes(client) if target == "capd" else Counter()
                run = run_wrk(wrk, target, f"{urls[target]}/getTaskResult", body, duration_s,
                              pids[target])
                if target == "capd":
                    after = poll_outcomes(client)
                    after.subtract(before)
                    run.bad_answers = sum(v for k, v in after.items() if k != "ok")
                pair[target] = run
            phase.rounds.append(pair)
            ratio = pair["capd"].rps / pair["floor"].rps if pair["floor"].rps else float("nan")
            base = (f", baseline/floor {pair['baseline'].rps / pair['floor'].rps:.3f}"
                    if "baseline" in pair and pair["floor"].rps else "")
            log(f"round {n}: ratio capd/floor {ratio:.3f}{base}")
            for target in urls:
                log("  " + _fmt_run(pair[target]))
    return phase


# -- phase 2: ImageToText ----------------------------------------------------------------------
def bench_bare(captchas: list[Captcha], passes: int, engine_name: str) -> dict[str, Any]:
    from capd.domain.tasks import ImageSpec
    from capd.solving.ocr import load_recogniser

    log(f"\n== bare recogniser ({engine_name}) in-process, single thread: {len(captchas)}"
        f" images x {passes}")
    engine = load_recogniser(engine_name)
    spec = ImageSpec()
    for captcha in captchas[:5]:  # warm-up
        engine.read(captcha.png, spec)
    times: list[float] = []
    correct = 0
    for _ in range(passes):
        for captcha in captchas:
            started = time.perf_counter()
            reading = engine.read(captcha.png, spec)
            times.append((time.perf_counter() - started) * 1e3)
            correct += is_correct(reading.text, captcha.text)
    result = {"samples": len(times), "p50_ms": median(times), "p99_ms": percentile(times, 99),
              "mean_ms": statistics.fmean(times), "min_ms": min(times), "correct": correct}
    log(f"bare: p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
        f"  mean {result['mean_ms']:.2f} ms  min {result['min_ms']:.2f} ms"
        f"  correct {correct}/{len(times)}")
    return result


def solve_pass(client: httpx.Client, key: str, captchas: list[Captcha],
               poll_s: float) -> tuple[list[Solve], Counter[str], int]:
    """Solve the captchas one after another: (solves, error codes counted, how many of
    the solves were read right)."""
    solves: list[Solve] = []
    errors: Counter[str] = Counter()
    correct = 0
    for captcha in captchas:
        solve = solve_one(client, key, captcha, poll_s)
        if solve.answer.get("errorId"):
            errors[str(solve.answer.get("errorCode"))] += 1
            continue
        solves.append(solve)
        correct += is_correct(solve.answer["solution"]["text"], captcha.text)
    return solves, errors, correct


def bench_light(capd_url: str, db_path: Path, key: str, captchas: list[Captcha], passes: int,
                poll_s: float) -> dict[str, Any]:
    log(f"\n== ImageToText, light load: one client, {len(captchas)} images x {passes},"
        f" a poll every {poll_s * 1e3:.0f} ms")
    solves: list[Solve] = []
    errors: Counter[str] = Counter()
    correct = 0
    with httpx.Client(base_url=capd_url, timeout=30, trust_env=False) as client:
        solve_one(client, key, captchas[0], poll_s)  # warm-up, discarded
        ocr0 = ocr_seconds(client)
        for _ in range(passes):
            got, errs, right = solve_pass(client, key, captchas, poll_s)
            solves += got
            errors += errs
            correct += right
        ocr1 = ocr_seconds(client)
    e2e = [s.e2e_ms for s in solves]
    n_ocr = ocr1[1] - ocr0[1]
    breakdown = {
        "create_rtt_p50_ms": median([s.create_ms for s in solves]),
        "poll_rtt_p50_ms": median([p for s in solves for p in s.poll_ms]),
        "polls_per_task_p50": median([len(s.poll_ms) for s in solves]),
        "server_ocr_mean_ms": (ocr1[0] - ocr0[0]) / n_ocr * 1e3 if n_ocr else float("nan"),
        "server_solve_p50_ms": median(server_solve_ms(db_path, [s.task_id for s in solves])),
    }
    result: dict[str, Any] = {
        "tasks": len(solves) + sum(errors.values()), "solved": len(solves),
        "errors": dict(errors), "p50_ms": median(e2e), "p99_ms": percentile(e2e, 99),
        "min_ms": min(e2e) if e2e else float("nan"), "correct": correct,
        "poll_interval_ms": poll_s * 1e3, "breakdown": breakdown,
    }
    b = breakdown
    log(f"e2e: p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
        f"  min {result['min_ms']:.2f} ms  correct {correct}/{len(solves)}"
        f"  errors {dict(errors) or 'none'}")
    log(f"  of which: createTask round trip p50 {b['create_rtt_p50_ms']:.2f} ms; capd"
        f" createTask-to-finish p50 {b['server_solve_p50_ms']:.2f} ms (its OCR mean"
        f" {b['server_ocr_mean_ms']:.2f} ms); {b['polls_per_task_p50']:.0f} polls/task,"
        f" poll round trip p50 {b['poll_rtt_p50_ms']:.2f} ms")
    return result


class LeanConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads a Content-Length reply.

    The throughput client's requests cost far less CPU through it than through httpx (on
    a 2-core machine the client shares the cores with capd, so its cost is capd's loss);
    ``--tput-client httpx`` measures with httpx instead."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> dict[str, Any]:
        for attempt in (1, 2):
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                         "\r\n\r\n".encode() + body)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.close()  # the server closed an idle connection: reconnect once
                if attempt == 2:
                    raise
                continue
            found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if not head.startswith(b"HTTP/1.1 200") or found is None:
                raise BenchError(f"unexpected reply to {path}: {head[:200]!r}")
            data = await reader.readexactly(int(found.group(1)))
            if re.search(rb"(?im)^connection:\s*close", head):
                await self.close()
            reply: dict[str, Any] = json.loads(data)
            return reply
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _throughput(capd_url: str, key: str, captchas: list[Captcha], clients: int,
                      duration_s: float, poll_s: float, lean: bool) -> dict[str, Any]:
    bodies = [c.create_body(key) for c in captchas]
    order = itertools.count()
    e2e: list[float] = []
    task_ids: list[int] = []
    polls = 0
    errors: Counter[str] = Counter()
    correct = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    url = httpx.URL(capd_url)
    host, port = url.host, url.port or 80
    async with httpx.AsyncClient(base_url=capd_url, timeout=30, trust_env=False,
                                 limits=limits) as client:

        async def via_httpx(path: str, body: bytes) -> dict[str, Any]:
            reply: dict[str, Any] = (await client.post(path, content=body,
                                                       headers=JSON_HEADERS)).json()
            return reply

        async def worker(stop_at: float) -> None:
            nonlocal correct, polls
            conn = LeanConnection(host, port)
            post = conn.post if lean else via_httpx
            try:
                while time.perf_counter() < stop_at:
                    i = next(order) % len(captchas)
                    started = time.perf_counter()
                    created = await post("/createTask", bodies[i])
                    if created.get("errorId"):
                        errors[f"createTask:{created.get('errorCode')}"] += 1
                        await asyncio.sleep(poll_s)
                        continue
                    poll = json.dumps({"clientKey": key, "taskId": created["taskId"]}).encode()
                    deadline = time.monotonic() + TASK_TIMEOUT_S
                    while True:
                        await asyncio.sleep(poll_s)
                        answer = await post("/getTaskResult", poll)
                        polls += 1
                        if answer.get("status") != "processing":
                            break
                        if time.monotonic() > deadline:
                            raise BenchError(f"task {created['taskId']} still processing")
                    if answer.get("errorId"):
                        errors[str(answer.get("errorCode"))] += 1
                        continue
                    e2e.append((time.perf_counter() - started) * 1e3)
                    task_ids.append(int(created["taskId"]))
                    correct += is_correct(answer["solution"]["text"], captchas[i].text)
            finally:
                await conn.close()

        await asyncio.gather(*(worker(time.perf_counter() + 1) for _ in range(clients)))
        # the first second warmed up connections and the pool: start counting now
        e2e.clear()
        task_ids.clear()
        errors.clear()
        correct = polls = 0
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration_s) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"clients": clients, "elapsed_s": elapsed, "solved": len(e2e),
            "solves_per_s": len(e2e) / elapsed, "p50_ms": median(e2e),
            "p99_ms": percentile(e2e, 99), "errors": dict(errors), "correct": correct,
            "poll_interval_ms": poll_s * 1e3,
            "polls_per_solve": polls / len(e2e) if e2e else float("nan"),
            "client": "lean" if lean else "httpx", "task_ids": task_ids}


def bench_throughput(capd_url: str, capd_pid: int, db_path: Path, key: str,
                     captchas: list[Captcha], clients: int, duration_s: float,
                     poll_s: float, lean: bool = True) -> dict[str, Any]:
    log(f"\n== ImageToText throughput: {clients} concurrent clients for {duration_s:.0f} s"
        f" (after 1 s of warm-up), a poll every {poll_s * 1e3:.0f} ms")
    with httpx.Client(base_url=capd_url, timeout=10, trust_env=False) as client:
        ocr0 = ocr_seconds(client)
        cpu0, own0, wall0 = process_cpu_s(capd_pid), time.process_time(), time.perf_counter()
        result = asyncio.run(_throughput(capd_url, key, captchas, clients, duration_s, poll_s,
                                          lean))
        wall = time.perf_counter() - wall0
        ocr1 = ocr_seconds(client)
    n_ocr = ocr1[1] - ocr0[1]
    result["server_ocr_mean_ms"] = (ocr1[0] - ocr0[0]) / n_ocr * 1e3 if n_ocr else float("nan")
    server_cpu = process_cpu_s(capd_pid) - cpu0
    result["server_cpu_pct"] = server_cpu / wall * 100
    result["client_cpu_pct"] = (time.process_time() - own0) / wall * 100
    result["server_solve_p50_ms"] = median(server_solve_ms(db_path, result.pop("task_ids")))
    log(f"throughput: {result['solves_per_s']:.1f} solves/s ({result['solved']} in"
        f" {result['elapsed_s']:.1f} s)  e2e p50 {result['p50_ms']:.1f} ms"
        f"  p99 {result['p99_ms']:.1f} ms  correct {result['correct']}/{result['solved']}"
        f"  errors {result['errors'] or 'none'}")
    log(f"  capd createTask-to-finish p50 {result['server_solve_p50_ms']:.1f} ms (OCR mean"
        f" {result['server_ocr_mean_ms']:.1f} ms);"
        f" {result['polls_per_solve']:.1f} polls/solve; CPU (incl. warm-up):"
        f" capd {result['server_cpu_pct']:.0f}%, bench client {result['client_cpu_pct']:.0f}%"
        f" of one core")
    return result


# -- summary ------------------------------------------------------------------------------------
def _ok(flag: bool) -> str:
    return "MEETS target" if flag else "MISSES target"


def print_summary(report: dict[str, Any]) -> None:
    m = report["machine"]
    cfg = report["config"]
    polls = report["get_task_result"]
    lines = [
        "",
        "=" * 78,
        "capd core benchmark summary",
        "=" * 78,
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), python {m['python']},"
        f" {cfg['wrk_version']}",
        f"load average: start {m['loadavg_start']}, end {m['loadavg_end']}"
        f" (machine shared: expect noise)",
        f"capd settings changed from defaults: {cfg['capd_env']}"
        " (so the benchmark's polling is never refused and the polled result never expires)",
        "",
        f"getTaskResult, wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{cfg['duration_s']}s,"
        f" {cfg['rounds']} round(s), answer {polls['answer_bytes']} bytes:",
        f"  {'':5}  {'req/s':>9}  {'p50 ms':>7}  {'p99 ms':>7}  {'CPU us/req':>10}  (medians)",
    ]
    for target in ("floor", "capd", "baseline"):
        if target not in polls:
            continue
        s = polls[target]
        lines.append(f"  {target:5}  {s['rps_median']:9.0f}  {s['p50_ms_median']:7.2f}"
                     f"  {s['p99_ms_median']:7.2f}  {s['server_cpu_us_per_req_median']:10.0f}")
    lines += [
        f"  ratio capd/floor: per round {polls['ratio_per_round']}, median"
        f" {polls['ratio_median_of_rounds']:.3f} (ratio of medians"
        f" {polls['ratio_of_medians']:.3f})",
        f"  closed loop, so mean latency = connections / throughput: capd"
        f" {WRK_CONNECTIONS / polls['capd']['rps_median'] * 1e3:.1f} ms,"
        f" floor {WRK_CONNECTIONS / polls['floor']['rps_median'] * 1e3:.1f} ms",
        f"  target ratio >= {TARGET_RATIO} with capd p99 <= {TARGET_CAPD_P99_MS:.0f} ms:"
        f" {_ok(polls['meets_target'])}",
    ]
    if "baseline" in polls:
        lines.append(f"  baseline ({cfg['baseline']}) / floor: per round"
                     f" {polls['baseline_ratio_per_round']}, median"
                     f" {polls['baseline_ratio_median_of_rounds']:.3f}")
    if report.get("bare_ocr") is None:
        log("\n".join([*lines, "=" * 78]))
        return
    bare, light, tput = report["bare_ocr"], report["e2e_light"], report["e2e_throughput"]
    overhead = light["p50_ms"] - bare["p50_ms"]
    lb = light["breakdown"]
    lines += [
        "",
        f"ImageToText, {cfg['images']} distinct captchas"
        f" ({cfg.get('captchas', 'drawn, seed ' + str(cfg['seed']))}):",
        f"  bare recogniser ({cfg.get('ocr_engine', 'ddddocr')}, in-process, 1 thread):"
        f" p50 {bare['p50_ms']:.2f} ms,"
        f" p99 {bare['p99_ms']:.2f} ms, mean {bare['mean_ms']:.2f} ms,"
        f" correct {bare['correct']}/{bare['samples']}",
        f"  light load (1 client, poll every {light['poll_interval_ms']:.0f} ms):"
        f" e2e p50 {light['p50_ms']:.2f} ms, p99 {light['p99_ms']:.2f} ms,"
        f" correct {light['correct']}/{light['solved']}, errors {light['errors'] or 'none'}",
        f"    createTask round trip p50 {lb['create_rtt_p50_ms']:.2f} ms; capd createTask-to-"
        f"finish p50 {lb['server_solve_p50_ms']:.2f} ms (OCR mean"
        f" {lb['server_ocr_mean_ms']:.2f} ms); {lb['polls_per_task_p50']:.0f} polls/task,"
        f" poll round trip p50 {lb['poll_rtt_p50_ms']:.2f} ms",
        f"  e2e overhead p50(e2e) - p50(bare) = {overhead:.2f} ms"
        f" (target <= {TARGET_E2E_OVERHEAD_MS:.0f} ms): {_ok(overhead <= TARGET_E2E_OVERHEAD_MS)}",
        f"  throughput ({tput['clients']} {tput['client']} clients,"
        f" poll every {tput['poll_interval_ms']:.0f} ms,"
        f" {tput['elapsed_s']:.1f} s): {tput['solves_per_s']:.1f} solves/s,"
        f" e2e p50 {tput['p50_ms']:.1f} ms, p99 {tput['p99_ms']:.1f} ms,"
        f" correct {tput['correct']}/{tput['solved']}, errors {tput['errors'] or 'none'}",
        f"    capd createTask-to-finish p50 {tput['server_solve_p50_ms']:.1f} ms (OCR mean"
        f" {tput['server_ocr_mean_ms']:.1f} ms),"
        f" {tput['polls_per_solve']:.1f} polls/solve; CPU: capd {tput['server_cpu_pct']:.0f}%,"
        f" bench client {tput['client_cpu_pct']:.0f}% of one core",
        "=" * 78,
    ]
    log("\n".join(lines))


def save_report(report: dict[str, Any], name: str = "bench_core") -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


# -- main ------------------------------------------------------------------------------------
def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_core",
                                description="capd core benchmark (see the module docstring)")
    p.add_argument("--rounds", type=int, default=3, help="(floor, capd) wrk pairs (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--images", type=int, default=50, help="distinct captchas (default 50)")
    p.add_argument("--passes", type=int, default=2,
                   help="passes over the images for the bare and light-load runs (default 2)")
    p.add_argument("--clients", type=int, default=8, help="throughput clients (default 8)")
    p.add_argument("--tput-duration", type=float, default=10.0,
                   help="seconds of the throughput run (default 10)")
    p.add_argument("--poll-ms", type=float, default=5.0,
                   help="light-load poll interval in ms (default 5)")
    p.add_argument("--tput-poll-ms", type=float, default=20.0,
                   help="throughput poll interval in ms (default 20; 5 ms polls from every"
                        " client would compete with OCR for the server's CPU)")
    p.add_argument("--tput-client", choices=("lean", "httpx"), default="lean",
                   help="the throughput clients' HTTP: lean (a keep-alive connection per"
                        " client, a few lines of asyncio: little CPU taken from capd) or"
                        " httpx (default lean)")
    p.add_argument("--ocr-engine", default="auto",
                   help="the OCR engine capd serves and the bare run reads with (default: auto,"
                        " capd's default)")
    p.add_argument("--seed", type=int, default=1, help="captcha text seed (default 1)")
    p.add_argument("--real", type=int, default=0, metavar="N",
                   help="ImageToText on N held-out real captchas of each labelled scheme"
                        " instead of --images drawn ones")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    p.add_argument("--polls-only", action="store_true",
                   help="measure getTaskResult throughput only (skip the ImageToText phases)")
    p.add_argument("--baseline", metavar="DIR", default=None,
                   help="also poll a capd imported from the source tree DIR, same rounds")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.images < 1 or args.passes < 1 \
            or args.clients < 1 or args.tput_duration <= 0 or args.real < 0:
        p.error("counts and durations must be positive")
    return args


def run(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = machine_info()
    log(f"machine: {machine['nproc']} CPUs, {machine['cpu_model']},"
        f" load average {machine['loadavg_start']}")
    wrk = ensure_wrk()
    capd_env = {"CAPD_MAX_POLLS_PER_S": str(NO_LIMIT), "CAPD_MAX_POLLS_PER_TASK": str(NO_LIMIT),
                "CAPD_RESULT_TTL_S": str(RESULT_TTL_S), "CAPD_OCR_ENGINE": args.ocr_engine}
    log(f"capd runs with {capd_env} so that the benchmark's polling is not refused by the"
        " per-task poll limits (and the polled result does not expire); other settings are"
        " capd's defaults")

    db_path = workdir / "capd.db"
    db_url = f"sqlite:///{db_path}"  # an absolute path: sqlite:////tmp/...
    key = create_account(db_url, workdir)
    capd_port, floor_port = free_port(), free_port()
    capd_url, floor_url = f"http://{HOST}:{capd_port}", f"http://{HOST}:{floor_port}"
    capd_log = workdir / "capd.log"
    capd = procs.start("capd", capd_cmd(db_url, "serve", "--host", HOST, "--port",
                                        str(capd_port)),
                       env=clean_env(**capd_env), cwd=workdir, log_path=capd_log)
    wait_healthy("capd", capd_url, capd, capd_log)
    log(f"capd serving on {capd_url} (pid {capd.pid})")

    # one solved task for the poll benchmark
    captchas = real_captchas(args.real) if args.real else make_captchas(args.images, args.seed)
    with httpx.Client(base_url=capd_url, timeout=30, trust_env=False) as client:
        for captcha in captchas:
            first = solve_one(client, key, captcha, 0.01)
            if first.answer.get("status") == "ready":
                task_id = first.task_id
                break
        else:
            raise BenchError("capd solved none of the captchas")
        polled = client.post("/getTaskResult", json={"clientKey": key, "taskId": task_id})
    answer_bytes = len(polled.content)

    floor_log = workdir / "floor.log"
    floor = procs.start("floor", [sys.executable, "-m", "bench.floor_app", "--host", HOST,
                                  "--port", str(floor_port), "--task-id", str(task_id),
                                  "--answer", polled.text],
                        env=clean_env(), cwd=REPO_ROOT, log_path=floor_log)
    wait_healthy("floor", floor_url, floor, floor_log)
    pids = {"capd": capd.pid, "floor": floor.pid}
    baseline_url = None
    if args.baseline:
        base_port = free_port()
        baseline_url = f"http://{HOST}:{base_port}"
        base_log = workdir / "baseline.log"
        source = str(Path(args.baseline).resolve())
        base = procs.start("baseline", capd_cmd(db_url, "serve", "--host", HOST, "--port",
                                                str(base_port)),
                           env=clean_env(**capd_env, PYTHONPATH=source), cwd=workdir,
                           log_path=base_log)
        wait_healthy("baseline", baseline_url, base, base_log)
        pids["baseline"] = base.pid
        log(f"baseline capd from {source} serving on {baseline_url} (pid {base.pid})")
    with httpx.Client(timeout=10, trust_env=False) as client:
        floor_answer = client.post(f"{floor_url}/getTaskResult",
                                   json={"clientKey": key, "taskId": task_id})
    if floor_answer.content != polled.content:
        raise BenchError(f"the floor answers {floor_answer.text}, capd {polled.text}")
    log(f"floor serving on {floor_url} (pid {floor.pid}); both answer task {task_id} with"
        f" the same {answer_bytes} bytes")

    polls = bench_polls(wrk, capd_url, floor_url, pids, key, task_id, answer_bytes,
                        args.rounds, args.duration, baseline_url)
    floor.terminate()  # not needed from here on; frees its memory and CPU
    bare = light = tput = None
    if not args.polls_only:
        bare = bench_bare(captchas, args.passes, args.ocr_engine)
        light = bench_light(capd_url, db_path, key, captchas, args.passes, args.poll_ms / 1e3)
        try:
            tput = bench_throughput(capd_url, capd.pid, db_path, key, captchas, args.clients,
                                    args.tput_duration, args.tput_poll_ms / 1e3,
                                    args.tput_client == "lean")
        except (httpx.TransportError, OSError, asyncio.IncompleteReadError) as exc:
            # a dropped connection: say whether capd is still running, and what it logged
            state = "running" if capd.poll() is None else f"exited ({capd.returncode})"
            raise BenchError(f"ImageToText throughput: {type(exc).__name__} {exc} (capd"
                             f" {state}); capd's log ends:\n{_log_tail(capd_log, 60)}"
                             ) from None
    if capd.poll() is not None:
        raise BenchError(f"capd exited early:\n{_log_tail(capd_log)}")

    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "machine": machine,
        "config": {"ocr_engine": args.ocr_engine, "rounds": args.rounds,
                   "duration_s": args.duration, "images": len(captchas),
                   "captchas": (f"real held-out, {args.real} per scheme" if args.real
                                else f"drawn, seed {args.seed}"),
                   "passes": args.passes, "clients": args.clients,
                   "tput_duration_s": args.tput_duration, "seed": args.seed,
                   "wrk_version": wrk_version(wrk), "capd_env": capd_env,
                   "baseline": args.baseline},
        "get_task_result": {**polls.summary(), "answer_bytes": answer_bytes,
                            "rounds": [{t: asdict(r) for t, r in pair.items()}
                                       for pair in polls.rounds]},
        "bare_ocr": bare,
        "e2e_light": light,
        "e2e_throughput": tput,
    }


def bench_main(name: str, argv: list[str] | None,
               parse: Callable[[list[str] | None], argparse.Namespace],
               body: Callable[[argparse.Namespace, Processes, Path], dict[str, Any]],
               summarise: Callable[[dict[str, Any]], None]) -> int:
    """The shared command-line frame of the benchmarks: run in a temp folder, stop every
    process on any exit, print the summary, save the JSON."""
    args = parse(argv)
    procs = Processes()
    try:
        with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix=f"capd-{name}-") as tmp:
            try:
                report = body(args, procs, Path(tmp))
            finally:
                procs.stop_all()
        summarise(report)
        if not args.no_save:
            log(f"written to {save_report(report, name)}")
        return 0
    except BenchError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return bench_main("bench_core", argv, parse_args, run, print_summary)


if __name__ == "__main__":
    raise SystemExit(main())
