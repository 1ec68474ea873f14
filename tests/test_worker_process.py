"""The whole remote-OCR path with real processes: ``capd serve`` without its built-in OCR,
a token from ``capd worker-token create``, and ``capd worker`` processes leasing the image
tasks over HTTP (spec §7). A worker SIGKILLed with work in hand loses nothing: its lease
runs out, a second worker takes the task, and nothing is charged twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from capd.domain.money import UNITS_PER_USD
from capd.store.secrets import secret_digest
from tests.helpers import b64, captcha_png, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
IMAGE = "ImageToTextTask"
# texts ddddocr 1.6.1 reads exactly from captcha_png(text); the workers run that engine
# (CAPD_OCR_ENGINE below), not the default, whose model changes (test_durability.py)
FIRST_TEXTS = ("aB3k9", "48213", "pq82", "txwvdz", "y7kf", "pe5na3", "xxhfd", "fbte", "h2nwm",
               "dn4en")
SECOND_TEXTS = ("udzwz", "uuhpzp", "32wuuw", "k55kvz", "7svv6", "7bpp8", "uh4c", "rahv",
                "57xh8", "2683wm", "b553", "vkmzr")
PRICE_UNITS = 30_000  # ImageToTextTask: 0.3 USD per 1,000
OPENING_UNITS = 1 * UNITS_PER_USD
LEASE_S = 3  # CAPD_WORKER_LEASE_S: an orphaned lease returns to the queue this fast
DEADLINE_S = 25  # CAPD_IMAGE_DEADLINE_S: bounds the test if something hangs
START_S = 30  # bound on a process becoming ready
TOKEN_REFUSED = "capd: error: the server refused the worker token"


def capd_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPD_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(CAPD_BUILTIN_OCR="false", CAPD_OCR_ENGINE="ddddocr", CAPD_MAX_POLLS_PER_S="50",
               CAPD_WORKER_LEASE_S=str(LEASE_S), CAPD_IMAGE_DEADLINE_S=str(DEADLINE_S),
               CAPD_OCR_THREADS="1")
    return env


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    files: tuple[IO[bytes], IO[bytes]]

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def log_text(self) -> str:
        return (f"stdout:\n{self.out_path.read_text(errors='replace')[-2000:]}\n"
                f"stderr:\n{self.stderr()[-4000:]}")


@dataclass
class Stack:
    tmp: Path
    db: Path
    url: str
    server: Proc
    key: str
    token: str
    start: Callable[..., Proc]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.tmp, self.db, *args)

    def worker(self, token: str, name: str) -> Proc:
        return self.start(name, "worker", "--url", self.url, "--token", token, "--threads", "1")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


def run_cli(tmp: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capd", "--db", f"sqlite:///{db}", *args],
                          cwd=tmp, env=capd_env(), capture_output=True, text=True, timeout=60)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """capd serve (no built-in OCR) with an account and an ImageToText worker token; every
    process started through it is killed at the end."""
    procs: list[Proc] = []

    def start(name: str, *args: str) -> Proc:
        out_path, err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "capd", "--db", f"sqlite:///{db}", *args], cwd=tmp_path,
            env=capd_env(), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        procs.append(Proc(proc, out_path, err_path, (out, err)))
        return procs[-1]

    db = tmp_path / "capd.db"
    account = run_cli(tmp_path, db, "account", "create", "--balance", "1", "--name", "remote")
    assert account.returncode == 0, account.stderr
    made = run_cli(tmp_path, db, "worker-token", "create", "--types", IMAGE, "--name", "ocr")
    assert made.returncode == 0, made.stderr
    port = free_port()
    server = start("server", "serve", "--host", "127.0.0.1", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_S
    while True:
        assert server.proc.poll() is None, f"capd serve exited:\n{server.log_text()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"capd serve not healthy:\n{server.log_text()}"
        time.sleep(0.05)
    try:
        yield Stack(tmp_path, db, url, server, account.stdout.splitlines()[-1],
                    made.stdout.splitlines()[-1], start)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)  # a stopped process must be able to die
                p.proc.kill()
            p.proc.wait(timeout=30)
            for f in p.files:
                f.close()


def create(client: httpx.Client, key: str, text: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.post("/createTask", json={"clientKey": key, "task": {
        "type": IMAGE, "body": b64(captcha_png(text))}}).json()
    return answer


def create_when_served(client: httpx.Client, stack: Stack, worker: Proc, text: str) -> int:
    """createTask, retried while ImageToText is unserved (until the worker's first lease
    call: it loads its recogniser first)."""
    deadline = time.monotonic() + START_S
    while True:
        answer = create(client, stack.key, text)
        if answer.get("errorCode") != "ERROR_NO_SLOT_AVAILABLE":
            assert answer["errorId"] == 0, answer
            return int(answer["taskId"])
        assert worker.proc.poll() is None, f"capd worker exited:\n{worker.log_text()}"
        assert time.monotonic() < deadline, f"no worker ever leased:\n{worker.log_text()}"
        time.sleep(0.05)


def wait_final(client: httpx.Client, stack: Stack, ids: list[int],
               timeout_s: float) -> dict[int, dict[str, Any]]:
    final: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(final) < len(ids):
        assert time.monotonic() < deadline, (
            f"tasks never finished: {sorted(set(ids) - set(final))}\n{stack.server.log_text()}")
        for task_id in ids:
            if task_id not in final:
                answer = client.post("/getTaskResult", json={"clientKey": stack.key,
                                                             "taskId": task_id}).json()
                if answer.get("status") != "processing":
                    final[task_id] = answer
        time.sleep(0.1)
    return final


def charges(stack: Stack) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for task_id, amount in stack.query("SELECT task_id, amount_units FROM ledger"
                                       " WHERE kind = 'charge'"):
        out.setdefault(task_id, []).append(amount)
    return out


def books(stack: Stack) -> tuple[int, int, int]:
    (balance, reserved), = stack.query(
        "SELECT balance_units, reserved_units FROM accounts WHERE id ="
        " (SELECT account_id FROM api_keys WHERE key_hash = ?)",
        (secret_digest(stack.key),))
    (ledger_sum,), = stack.query("SELECT SUM(amount_units) FROM ledger")
    return balance, reserved, ledger_sum


def settled_leases(stack: Stack, ids: list[int]) -> set[int]:
    """Which of ``ids`` are leased, once requests already sent have landed: read until two
    reads a moment apart agree."""
    marks = ",".join("?" * len(ids))
    held: set[tuple[int, str]] | None = None
    for _ in range(25):
        time.sleep(0.1)
        now = set(stack.query(f"SELECT id, lease_owner FROM tasks WHERE id IN ({marks})"
                              " AND state = 'leased'", tuple(ids)))
        if now == held:
            break
        held = now
    return {task_id for task_id, _ in held or ()}


def stop_holding_a_lease(stack: Stack, worker: Proc, ids: list[int]) -> set[int]:
    """Freeze the worker (SIGSTOP) at a moment it holds a lease on one of ``ids``: the
    tasks leased then are orphaned. Returns them."""
    deadline = time.monotonic() + 20
    while True:
        os.kill(worker.proc.pid, signal.SIGSTOP)
        held = settled_leases(stack, ids)
        if held:
            return held
        os.kill(worker.proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the worker never held a lease"
        time.sleep(0.01)


def test_remote_worker_solves_and_a_killed_one_loses_nothing(stack: Stack) -> None:
    first_worker = stack.worker(stack.token, "worker-1")
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        # 1. the worker makes ImageToText served; it reads every task right, charged once
        expected = {create_when_served(client, stack, first_worker, FIRST_TEXTS[0]):
                    FIRST_TEXTS[0]}
        for text in FIRST_TEXTS[1:]:
            answer = create(client, stack.key, text)
            assert answer["errorId"] == 0, answer
            expected[answer["taskId"]] = text
        final = wait_final(client, stack, list(expected), DEADLINE_S)
        wrong = {text: final[i] for i, text in expected.items()
                 if final[i].get("solution") != {"text": text}}
        assert not wrong, wrong
        assert all(final[i]["cost"] == "0.00030" for i in expected)
        paid = charges(stack)
        assert paid == {i: [-PRICE_UNITS] for i in expected}
        spent = PRICE_UNITS * len(expected)
        assert books(stack) == (OPENING_UNITS - spent, 0, OPENING_UNITS - spent)
        balance = client.post("/getBalance", json={"clientKey": stack.key}).json()
        assert balance == {"errorId": 0, "balance": (OPENING_UNITS - spent) / UNITS_PER_USD}

        # 2. SIGKILL the worker holding a lease with more work queued behind it. Frozen
        # while idle, its pending long-poll call takes the first new task (the server
        # answers into the socket of a process that will never read it)
        os.kill(first_worker.proc.pid, signal.SIGSTOP)
        second: dict[int, str] = {}
        for text in SECOND_TEXTS:
            answer = create(client, stack.key, text)
            assert answer["errorId"] == 0, answer
            second[answer["taskId"]] = text
        orphaned = settled_leases(stack, list(second))
        if not orphaned:  # it was between two lease calls: catch it holding a lease
            os.kill(first_worker.proc.pid, signal.SIGCONT)
            orphaned = stop_holding_a_lease(stack, first_worker, list(second))
        first_worker.proc.kill()
        assert first_worker.proc.wait(timeout=10) == -signal.SIGKILL
        marks = ",".join("?" * len(second))
        open_at_kill = {row[0] for row in stack.query(
            f"SELECT id FROM tasks WHERE id IN ({marks}) AND state IN ('queued', 'leased')",
            tuple(second))}
        assert orphaned <= open_at_kill

        # 3. a second worker finishes everything: the queued tasks at once, the orphaned
        # one once its lease has run out
        stack.worker(stack.token, "worker-2")
        final = wait_final(client, stack, list(second), DEADLINE_S + 5)

    rows = {r[0]: r[1:] for r in stack.query(
        f"SELECT id, state, attempts, cost_units, reserved_units, ended_at, deadline_at"
        f" FROM tasks WHERE id IN ({marks})", tuple(second))}
    paid = charges(stack)
    for task_id, (state, _attempts, cost, reserved, ended_at, deadline_at) in rows.items():
        assert reserved == 0 and ended_at is not None
        assert (final[task_id].get("status") == "ready") == (state == "solved"), final[task_id]
        if state == "solved":
            assert final[task_id]["solution"] == {"text": second[task_id]}, final[task_id]
            assert paid[task_id] == [-PRICE_UNITS] and cost == PRICE_UNITS
        else:  # allowed: failed by its deadline, never charged
            assert state == "failed" and final[task_id]["errorCode"] == (
                "ERROR_CAPTCHA_UNSOLVABLE"), final[task_id]
            assert ended_at >= deadline_at and task_id not in paid and cost == 0
    solved = {i for i, r in rows.items() if r[0] == "solved"}
    for task_id in orphaned:  # taken over after its lease ran out, not lost or doubled
        assert rows[task_id][0] == "solved" and rows[task_id][1] >= 2, rows[task_id]
    # nothing charged twice, nothing charged without a solved task
    assert all(len(v) == 1 for v in paid.values())
    assert set(paid) == set(expected) | solved
    spent = PRICE_UNITS * (len(expected) + len(solved))
    assert books(stack) == (OPENING_UNITS - spent, 0, OPENING_UNITS - spent)


def test_worker_with_a_bad_token_stops_with_one_line(stack: Stack) -> None:
    revoked = stack.cli("worker-token", "revoke", stack.token)
    assert revoked.returncode == 0, revoked.stderr
    workers = {"revoked": stack.worker(stack.token, "revoked"),
               "unknown": stack.worker("0" * 48, "unknown")}
    for name, worker in workers.items():
        assert worker.proc.wait(timeout=START_S) == 1, worker.log_text()
        lines = worker.stderr().splitlines()
        assert "Traceback" not in worker.stderr(), lines
        assert lines == [TOKEN_REFUSED], (name, lines)  # one clean line, no request log


def execute(stack: Stack, sql: str, args: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(stack.db, timeout=10)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


def test_worker_fails_a_bad_lease_uncharged_and_goes_on(stack: Stack) -> None:
    # tasks a client could never create (createTask checks them), as a damaged row or a
    # different server version could still hand out: each is one log line and a failure
    # that costs the client nothing, and the worker solves the good task queued behind them
    bad = {
        "bad base64": ("payload", '{"type": "ImageToTextTask", "body": "%%not base64%%"}'),
        "not an image": ("payload", '{"type": "ImageToTextTask", "body": "'
                         + b64(b"this is not an image at all " * 8) + '"}'),
        "task not an object": ("payload", '"ImageToTextTask"'),
        "unknown option": ("options", '{"image": {"module": "universal", "speed": 9}}'),
        "option of a wrong type": ("options", '{"image": {"threshold": "high"}}'),
    }
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        served = client.post("/worker/v1/lease", json={
            "workerToken": stack.token, "types": [IMAGE], "waitSeconds": 0}).json()
        assert served == {"errorId": 0, "leases": []}, served  # ImageToText is served now
        damaged: dict[int, str] = {}
        for name, (column, value) in bad.items():
            answer = create(client, stack.key, FIRST_TEXTS[0])
            assert answer["errorId"] == 0, answer
            execute(stack, f"UPDATE tasks SET {column} = ? WHERE id = ?",
                    (value, answer["taskId"]))
            damaged[answer["taskId"]] = name
        good = create(client, stack.key, FIRST_TEXTS[1])
        assert good["errorId"] == 0, good
        # time for the worker to load its recogniser on a busy machine
        execute(stack, "UPDATE tasks SET deadline_at = deadline_at + ?", (START_S,))

        worker = stack.worker(stack.token, "worker")
        try:
            final = wait_final(client, stack, [*damaged, good["taskId"]], START_S + DEADLINE_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker:\n{worker.log_text()}") from None

    assert worker.proc.poll() is None, worker.log_text()  # still serving
    for task_id, name in damaged.items():
        assert final[task_id]["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE", (name, final[task_id])
    assert final[good["taskId"]]["solution"] == {"text": FIRST_TEXTS[1]}, final[good["taskId"]]
    assert charges(stack) == {good["taskId"]: [-PRICE_UNITS]}
    assert books(stack) == (OPENING_UNITS - PRICE_UNITS, 0, OPENING_UNITS - PRICE_UNITS)
    log = worker.stderr()
    assert "Traceback" not in log, worker.log_text()
    for task_id in damaged:
        lines = [line for line in log.splitlines() if f"task {task_id}:" in line]
        assert len(lines) == 1 and "failed as ERROR_CAPTCHA_UNSOLVABLE" in lines[0], (
            task_id, worker.log_text())
